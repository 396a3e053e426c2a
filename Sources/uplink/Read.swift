import ArgumentParser
import Collector
import Foundation
import Modbus
import UplinkConfig
import UplinkCore

struct Read: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Poll once and print decoded values: ad hoc (like mbpoll) or every signal of a config.",
        discussion: """
        Ad hoc:   uplink read --tcp 127.0.0.1:502 --unit 1 --area holding --address 0 --type float32 --order CDAB --count 4
                  uplink read --rtu /dev/ttyUSB0 --baud 9600 --parity E --unit 3 --area input --address 30001 --type int16
        Config:   uplink read Configs/demo.yaml [--device NAME] [--json]
        Exits 69 when a device cannot be reached (no request answered), with the reason on stderr.
        """
    )

    @Argument(help: "A config file: read every configured signal once.")
    var config: String?

    @Option(help: "Only this device of the config.")
    var device: String?

    @Option(help: "Modbus TCP server, HOST:PORT.")
    var tcp: String?

    @Option(help: "Modbus RTU serial device, e.g. /dev/ttyUSB0.")
    var rtu: String?

    @Option(help: "Serial baud rate.")
    var baud: Int = 9600

    @Option(help: "Serial parity: N, E or O.")
    var parity: String = "N"

    @Option(name: .customLong("data-bits"), help: "Serial data bits.")
    var dataBits: Int = 8

    @Option(name: .customLong("stop-bits"), help: "Serial stop bits.")
    var stopBits: Int = 1

    @Option(help: "Unit (slave) id.")
    var unit: Int = 1

    @Option(help: "holding, input, coil or discrete (implied by a Modicon address).")
    var area: String?

    @Option(help: "0-based PDU address, or a Modicon reference such as 400001 or 4x0001.")
    var address: String?

    @Option(help: "bool, bit:N, int16, uint16, int32, uint32, int64, uint64, float32, float64, string:REGISTERS.")
    var type: String = "uint16"

    @Option(help: "Byte order: ABCD, BADC, CDAB or DCBA.")
    var order: String = "ABCD"

    @Option(help: "How many consecutive values of the type to read.")
    var count: Int = 1

    @Option(help: "Multiply each value by this.")
    var scale: Double = 1

    @Option(help: "Add this to each scaled value.")
    var offset: Double = 0

    @Option(help: "Response timeout, e.g. 500ms or 2s.")
    var timeout: String = "1s"

    @Flag(help: "One JSON object per value per line.")
    var json = false

    func validate() throws {
        let sources = [config != nil, tcp != nil, rtu != nil].filter { $0 }.count
        guard sources == 1 else { throw ValidationError("give exactly one of: a config file, --tcp HOST:PORT, --rtu DEVICE") }
        if config == nil && address == nil { throw ValidationError("--address is required with --tcp or --rtu") }
        if config != nil && address != nil { throw ValidationError("--address is for ad-hoc reads; with a config, use --device") }
        guard (1...2000).contains(count) else { throw ValidationError("--count must be 1...2000") }
    }

    func run() throws {
        let devices = try config.map(devicesFromConfig) ?? [adHocDevice()]
        var unreachable = 0
        for device in devices {
            guard case .success(let plan) = Planner.plan(device) else {
                throw ValidationError("the values do not fit in one request per 125 registers; lower --count")
            }
            let outcome: DevicePoller.Outcome
            do {
                let client = try ModbusClient.make(for: device.transport, timeoutMs: device.poll.timeoutMs)
                try client.connect()
                outcome = DevicePoller(device: device).poll(plan.groups.flatMap(\.requests), with: client, timestamp: Self.nowMs())
                client.close()
            } catch {
                printError("\(device.name): cannot reach \(Self.endpoint(device)): \(error)")
                unreachable += 1
                continue
            }
            print(render(outcome.batch, device: device))
            if outcome.answered == 0, let failure = outcome.failure {
                printError("\(device.name): no answer from \(Self.endpoint(device)) unit \(device.unit): \(failure)")
                unreachable += 1
            }
        }
        if unreachable > 0 { throw ExitCode(ExitStatus.unavailable) }
    }

    private func devicesFromConfig(_ path: String) throws -> [Device] {
        let configuration: UplinkConfiguration
        do {
            configuration = try ConfigLoader.load(path: path)
        } catch {
            printError(error.description)
            throw ExitCode(ExitStatus.config)
        }
        guard let name = device else { return configuration.devices }
        guard let match = configuration.devices.first(where: { $0.name == name }) else {
            printError("\(path): no device named '\(name)'; devices: \(configuration.devices.map(\.name).joined(separator: ", "))")
            throw ExitCode(ExitStatus.usage)
        }
        return [match]
    }

    private func adHocDevice() throws -> Device {
        guard let timeoutMs = Self.parseDuration(timeout) else { throw ValidationError("--timeout '\(timeout)': expected a duration like 500ms or 2s") }
        let givenArea: Area? = try area.map {
            guard let a = Area.named($0) else { throw ValidationError("--area '\($0)': expected holding, input, coil or discrete") }
            return a
        }
        let resolved: (area: Area, address: Int)
        switch AddressText.resolve(address ?? "", area: givenArea) {
        case .success(let r): resolved = r
        case .failure(let f): throw ValidationError(f.description)
        }
        let dataType = try parseType(type, area: resolved.area)
        guard let byteOrder = ByteOrder(rawValue: order.uppercased()) else { throw ValidationError("--order '\(order)': expected ABCD, BADC, CDAB or DCBA") }
        let width = dataType.width
        var signals: [Signal] = []
        for i in 0..<count {
            let start = resolved.address + i * (dataType == .bool ? 1 : width)
            guard start + width <= 65536 else { throw ValidationError("--count \(count) runs past address 65535") }
            signals.append(Signal(name: "\(resolved.area.rawValue)[\(start)]", area: resolved.area, address: start, type: dataType,
                                  order: byteOrder, scale: scale, offset: offset, unit: nil, intervalMs: 1000))
        }
        let transport: Transport
        if let tcp {
            guard let colon = tcp.lastIndex(of: ":"), let port = Int(tcp[tcp.index(after: colon)...]), (1...65535).contains(port) else {
                throw ValidationError("--tcp '\(tcp)': expected HOST:PORT, e.g. 127.0.0.1:502")
            }
            transport = .tcp(host: String(tcp[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port)
        } else {
            guard let p = SerialSettings.Parity(rawValue: parity.uppercased()) else { throw ValidationError("--parity '\(parity)': expected N, E or O") }
            transport = .rtu(bus: "cli", settings: SerialSettings(port: rtu ?? "", baud: baud, parity: p, dataBits: dataBits, stopBits: stopBits))
        }
        let poll = PollSettings(intervalMs: 1000, timeoutMs: timeoutMs, retries: 0)
        return Device(name: "read", transport: transport, unit: unit, poll: poll, signals: signals)
    }

    private func parseType(_ text: String, area: Area) throws -> DataType {
        let parts = text.lowercased().split(separator: ":", maxSplits: 1).map(String.init)
        let type: DataType?
        switch parts.first {
        case "bit": type = parts.count == 2 ? Int(parts[1]).flatMap { (0...15).contains($0) ? DataType.bit($0) : nil } : nil
        case "string": type = parts.count == 2 ? Int(parts[1]).flatMap { (1...125).contains($0) ? DataType.string(registers: $0) : nil } : nil
        default: type = parts.count == 1 ? DataType.fixed(parts[0]) : nil
        }
        var resolved = type
        if resolved == nil, area.isBitArea, text == "uint16" { resolved = .bool }
        guard let resolved else {
            throw ValidationError("--type '\(text)': expected bool, bit:N (0-15), int16, uint16, int32, uint32, int64, uint64, float32, float64 or string:REGISTERS")
        }
        guard resolved.fits(area) else {
            throw ValidationError("--type \(resolved.name) does not fit area \(area.rawValue); coils and discrete inputs are bool, registers take the other types")
        }
        return resolved
    }

    private func render(_ batch: PollBatch, device: Device) -> String {
        if json {
            return batch.records.enumerated().map { index, record in
                var line = "{\"device\":"
                JSONText.appendString(record.device, to: &line)
                line += ",\"signal\":"
                JSONText.appendString(record.signal, to: &line)
                if let signal = device.signals.first(where: { $0.name == record.signal }) {
                    line += ",\"area\":\"\(signal.area.rawValue)\",\"address\":\(signal.address)"
                }
                line += ",\"ts\":\(record.timestamp),\"value\":"
                JSONText.appendValue(record.value, to: &line)
                if let unit = record.unit {
                    line += ",\"unit\":"
                    JSONText.appendString(unit, to: &line)
                }
                line += ",\"quality\":\"\(record.quality.code)\"}"
                return line
            }.joined(separator: "\n")
        }
        var rows = [["signal", "value", "unit", "quality"]]
        for record in batch.records {
            rows.append([record.signal, record.value?.description ?? "-", record.unit ?? "", record.quality.code])
        }
        let title = "\(device.name) (\(Self.endpoint(device)) unit \(device.unit))"
        return ([title] + PlanReport.table(rows).map { "  " + $0 }).joined(separator: "\n")
    }

    static func endpoint(_ device: Device) -> String {
        switch device.transport {
        case .tcp(let host, let port): "\(host):\(port)"
        case .rtu(_, let s): s.port
        }
    }

    static func nowMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    static func parseDuration(_ text: String) -> Int? {
        if text.hasSuffix("ms"), let v = Int(text.dropLast(2)) { return v }
        if text.hasSuffix("s"), let v = Double(text.dropLast()) { return Int(v * 1000) }
        return nil
    }
}
