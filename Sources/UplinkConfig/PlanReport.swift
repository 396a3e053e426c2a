import UplinkCore

/// The human-readable plan `uplink check` prints.
public enum PlanReport {
    public static func render(_ config: UplinkConfiguration, file: String) -> String {
        var out: [String] = []
        var totalRequests = 0, totalSignals = 0
        for device in config.devices {
            guard case .success(let plan) = Planner.plan(device) else { continue }
            totalRequests += plan.requestsPerCycle
            totalSignals += device.signals.count
            out.append("")
            out.append("device \(device.name): \(describe(device.transport)) unit \(device.unit), every \(duration(device.poll.intervalMs)), timeout \(duration(device.poll.timeoutMs)), retries \(device.poll.retries)")
            var rows = [["signal", "area", "address", "modicon", "type", "order", "scale", "offset", "unit", "interval"]]
            for s in device.signals {
                rows.append([s.name, s.area.rawValue, String(s.address), modicon(s), typeText(s.type),
                             s.type.isMultiByte ? s.order.rawValue : "-", number(s.scale), number(s.offset),
                             s.unit ?? "-", duration(s.intervalMs)])
            }
            out += table(rows).map { "  " + $0 }
            out.append("  requests per cycle: \(plan.requestsPerCycle)")
            for group in plan.groups {
                for r in group.requests {
                    let names = r.signalIndices.map { device.signals[$0].name }
                    let fc = functionCode(r.area)
                    let unitWord = r.area.isBitArea ? (r.count == 1 ? "bit" : "bits") : (r.count == 1 ? "register" : "registers")
                    out.append("    every \(duration(group.intervalMs)): FC\(fc) \(r.area.rawValue) \(r.address)..\(r.end - 1) (\(r.count) \(unitWord)): \(names.joined(separator: ", "))")
                }
            }
        }
        let header = "\(file): OK: \(config.devices.count) device\(config.devices.count == 1 ? "" : "s"), \(totalSignals) signals, \(totalRequests) requests per cycle"
        return ([header] + out).joined(separator: "\n")
    }

    static func describe(_ transport: Transport) -> String {
        switch transport {
        case .tcp(let host, let port): "tcp \(host):\(port)"
        case .rtu(let bus, let s): "rtu bus \(bus) (\(s.port) \(s.baud) \(s.dataBits)\(s.parity.rawValue)\(s.stopBits))"
        }
    }

    static func functionCode(_ area: Area) -> String {
        switch area {
        case .coil: "01"
        case .discreteInput: "02"
        case .holdingRegister: "03"
        case .inputRegister: "04"
        }
    }

    static func modicon(_ s: Signal) -> String {
        let number = s.address + 1
        return "\(s.area.modiconPrefix)\(String(repeating: "0", count: max(0, 5 - String(number).count)))\(number)"
    }

    static func typeText(_ type: DataType) -> String {
        switch type {
        case .bit(let b): "bit \(b)"
        case .string(let n): "string[\(n)]"
        default: type.name
        }
    }

    static func number(_ d: Double) -> String {
        var s = ""
        JSONText.appendDouble(d, to: &s)
        return s
    }

    public static func duration(_ ms: Int) -> String {
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// Left-aligned columns.
    public static func table(_ rows: [[String]]) -> [String] {
        guard let first = rows.first else { return [] }
        let widths = first.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingTrailingSpaces
        }
    }
}

extension String {
    public var trimmingTrailingSpaces: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
