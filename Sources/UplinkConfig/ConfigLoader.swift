import Foundation
import UplinkCore
import Yams

/// Loads and validates Uplink configs. See docs/configuration.md for every key.
public enum ConfigLoader {
    /// Reads and validates the config at `path`.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) -> UplinkConfiguration {
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            let reason = String(cString: strerror(errno))
            throw ConfigError(issues: [ConfigIssue(file: path, line: 0, column: 0, path: "",
                                                   message: "cannot read the file (\(reason)); expected a readable YAML config at this path")])
        }
        let data = FileHandle(fileDescriptor: fd, closeOnDealloc: true).readDataToEndOfFile()
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(issues: [ConfigIssue(file: path, line: 0, column: 0, path: "", message: "the file is not UTF-8 text; expected a YAML config")])
        }
        return try parse(text, file: path, environment: environment)
    }

    /// Validates config text; `file` names it in errors.
    public static func parse(_ text: String, file: String, environment: [String: String] = [:]) throws(ConfigError) -> UplinkConfiguration {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigError(issues: [ConfigIssue(file: file, line: 0, column: 0, path: "", message: "the file is empty; expected a mapping with a 'devices' list")])
            }
            root = node
        } catch let error as ConfigError {
            throw error
        } catch let error as YamlError {
            throw ConfigError(issues: [syntaxIssue(error, file: file, text: text)])
        } catch {
            throw ConfigError(issues: [ConfigIssue(file: file, line: 0, column: 0, path: "", message: "not valid YAML: \(error)")])
        }
        let reader = YAMLReader(file: file, environment: environment)
        let config = ConfigBuilder(reader: reader).build(Cursor(node: root, path: ""))
        guard reader.issues.isEmpty, let config else {
            throw ConfigError(issues: reader.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
        }
        return config
    }

    static func syntaxIssue(_ error: YamlError, file: String, text: String) -> ConfigIssue {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            // `{ port: ${PORT} }` breaks YAML's flow syntax; say how to write it.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            let nearby = lines.dropFirst(max(0, mark.line - 2)).prefix(2)
            let hint = nearby.contains { $0.contains("${") && $0.contains("{ ") } ? "; expected ${VAR} references inside { } to be quoted: \"${VAR}\"" : ""
            return ConfigIssue(file: file, line: mark.line, column: mark.column, path: "", message: "YAML syntax error: \(problem)\(hint)")
        default:
            return ConfigIssue(file: file, line: 0, column: 0, path: "", message: "YAML syntax error: \(error)")
        }
    }

}

/// Builds the model section by section, reporting into the reader.
struct ConfigBuilder {
    let reader: YAMLReader

    static let topKeys = ["agent", "defaults", "serial_buses", "devices", "mqtt", "buffer"]
    static let agentKeys = ["name", "site"]
    static let pollKeys = ["interval", "timeout", "retries", "request_delay", "max_registers_per_request",
                           "max_bits_per_request", "max_gap", "single_reads"]
    /// Report by exception: in `defaults`, a device or a signal (the nearest wins).
    static let reportKeys = ["deadband", "deadband_percent", "heartbeat"]
    static let deviceKeys = ["name", "tcp", "rtu", "unit"] + pollKeys + ["signals", "type"] + reportKeys
    static let tcpKeys = ["host", "port"]
    static let rtuKeys = ["bus"]
    static let busKeys = ["port", "baud", "parity", "data_bits", "stop_bits"]
    static let signalKeys = ["name", "area", "address", "type", "bit", "registers", "order", "scale", "offset", "unit", "interval",
                             "writable", "attribute"] + reportKeys

    func build(_ root: Cursor) -> UplinkConfiguration? {
        guard let top = reader.fields(root, what: "the config", allowed: Self.topKeys) else { return nil }
        let agent = top["agent"].map(agentIdentity) ?? AgentIdentity()
        let defaultsFields = top["defaults"].flatMap { reader.fields($0, what: "poll defaults", allowed: Self.pollKeys + Self.reportKeys) }
        let defaults = defaultsFields.map { applyPoll($0, to: PollSettings()) } ?? PollSettings()
        let defaultReport = defaultsFields.map { applyReport($0, to: .everyPoll) } ?? .everyPoll
        let buses = top["serial_buses"].map(serialBuses) ?? [:]
        guard let devicesCursor = top["devices"] else {
            reader.fail(root, "missing key 'devices'; expected a list of devices to poll")
            return nil
        }
        guard let list = reader.sequence(devicesCursor, what: "a list of devices") else { return nil }
        if list.isEmpty { reader.fail(devicesCursor, "the list is empty; expected at least one device") }
        var devices: [Device] = []
        var names: [String: Int] = [:]
        for cursor in list {
            guard let device = device(cursor, defaults: defaults, report: defaultReport, buses: buses) else { continue }
            if let line = names[device.name] {
                reader.fail(cursor.child("name", cursor.node), "device name '\(device.name)' is already used on line \(line); expected unique device names")
                continue
            }
            names[device.name] = cursor.line
            devices.append(device)
        }
        var mqtt = top["mqtt"].flatMap(mqttSettings)
        if var sparkplug = mqtt?.sparkplug {
            // The edge node is named after the agent unless the config says otherwise.
            if sparkplug.groupID.isEmpty { sparkplug.groupID = (agent ?? AgentIdentity()).site }
            if sparkplug.edgeNodeID.isEmpty { sparkplug.edgeNodeID = (agent ?? AgentIdentity()).name }
            mqtt?.sparkplug = sparkplug
        }
        let buffer = top["buffer"].flatMap(bufferSettings) ?? BufferSettings()
        return UplinkConfiguration(agent: agent ?? AgentIdentity(), devices: devices, mqtt: mqtt, buffer: buffer)
    }

    func agentIdentity(_ at: Cursor) -> AgentIdentity? {
        guard let fields = reader.fields(at, what: "the agent settings", allowed: Self.agentKeys) else { return nil }
        var agent = AgentIdentity()
        if let c = fields["name"], let v = name(c) { agent.name = v }
        if let c = fields["site"], let v = name(c) { agent.site = v }
        return agent
    }

    /// A name used in topics and payloads: letters, digits, '_', '-', '.'.
    func name(_ at: Cursor) -> String? {
        guard let text = reader.string(at, what: "a name") else { return nil }
        guard !text.isEmpty, text.count <= 64,
              text.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-.".unicodeScalars.contains($0)) })
        else {
            reader.fail(at, "'\(text)' is not a valid name; expected 1 to 64 letters, digits, '_', '-' or '.' (names appear in MQTT topics)")
            return nil
        }
        return text
    }

    func pollSettings(_ at: Cursor, base: PollSettings) -> PollSettings {
        guard let fields = reader.fields(at, what: "poll defaults", allowed: Self.pollKeys) else { return base }
        return applyPoll(fields, to: base)
    }

    func applyPoll(_ fields: Fields, to base: PollSettings) -> PollSettings {
        var poll = base
        if let c = fields["interval"], let v = reader.duration(c, in: 10...86_400_000) { poll.intervalMs = v }
        if let c = fields["timeout"], let v = reader.duration(c, in: 1...60_000) { poll.timeoutMs = v }
        if let c = fields["retries"], let v = reader.int(c, in: 0...10) { poll.retries = v }
        if let c = fields["request_delay"], let v = reader.duration(c, in: 0...10_000) { poll.delayMs = v }
        if let c = fields["max_registers_per_request"], let v = reader.int(c, in: 1...125) { poll.maxRegistersPerRequest = v }
        if let c = fields["max_bits_per_request"], let v = reader.int(c, in: 1...2000) { poll.maxBitsPerRequest = v }
        if let c = fields["max_gap"], let v = reader.int(c, in: 0...2000) { poll.maxGap = v }
        if let c = fields["single_reads"], let v = reader.bool(c) { poll.singleReads = v }
        return poll
    }

    func serialBuses(_ at: Cursor) -> [String: SerialSettings] {
        guard let pairs = reader.mapping(at, what: "serial buses by name") else { return [:] }
        var buses: [String: SerialSettings] = [:]
        for (busName, cursor) in pairs {
            guard let fields = reader.fields(cursor, what: "a serial bus", allowed: Self.busKeys) else { continue }
            guard let portCursor = fields["port"] else {
                reader.fail(cursor, "missing key 'port'; expected the serial device path, e.g. /dev/ttyUSB0")
                continue
            }
            guard let port = reader.string(portCursor, what: "a serial device path") else { continue }
            var settings = SerialSettings(port: port)
            if let c = fields["baud"], let v = reader.int(c, in: 300...921_600, what: "a baud rate") { settings.baud = v }
            if let c = fields["parity"], let text = reader.string(c) {
                if let parity = SerialSettings.Parity(rawValue: text.uppercased()) { settings.parity = parity } else {
                    reader.fail(c, "unknown parity '\(text)'; expected N, E or O")
                }
            }
            if let c = fields["data_bits"], let v = reader.int(c, in: 5...8) { settings.dataBits = v }
            if let c = fields["stop_bits"], let v = reader.int(c, in: 1...2) { settings.stopBits = v }
            buses[busName] = settings
        }
        return buses
    }

    func device(_ at: Cursor, defaults: PollSettings, report defaultReport: ReportPolicy, buses: [String: SerialSettings]) -> Device? {
        guard let fields = reader.fields(at, what: "a device", allowed: Self.deviceKeys) else { return nil }
        let before = reader.issues.count
        var deviceName: String?
        if let c = fields["name"] { deviceName = name(c) } else {
            reader.fail(at, "missing key 'name'; expected a unique device name")
        }
        let transport = self.transport(fields, at: at, buses: buses)
        let poll = applyPoll(fields, to: defaults)
        let report = applyReport(fields, to: defaultReport)
        var deviceType: String?
        if let c = fields["type"] { deviceType = platformType(c) }
        var unit = 1
        if let c = fields["unit"] {
            let range = if case .rtu = transport { 1...247 } else { 0...255 }
            if let v = reader.int(c, in: range, what: "a unit id") { unit = v }
        }
        var signals: [Signal] = []
        if let c = fields["signals"], let list = reader.sequence(c, what: "a list of signals") {
            if list.isEmpty { reader.fail(c, "the list is empty; expected at least one signal") }
            var seen: [String: Int] = [:]
            for cursor in list {
                guard let signal = signal(cursor, poll: poll, report: report) else { continue }
                if let line = seen[signal.name] {
                    reader.fail(cursor, "signal name '\(signal.name)' is already used on line \(line) of this device; expected unique signal names")
                    continue
                }
                seen[signal.name] = cursor.line
                signals.append(signal)
            }
        } else if fields["signals"] == nil {
            reader.fail(at, "missing key 'signals'; expected a list of signals to read")
        }
        guard reader.issues.count == before, let deviceName, let transport else { return nil }
        let device = Device(name: deviceName, transport: transport, unit: unit, poll: poll, signals: signals, type: deviceType)
        if case .failure(let error) = Planner.plan(device) {
            reader.fail(fields["signals"] ?? at, error.description)
            return nil
        }
        return device
    }

    func transport(_ fields: Fields, at: Cursor, buses: [String: SerialSettings]) -> Transport? {
        switch (fields["tcp"], fields["rtu"]) {
        case (nil, nil):
            reader.fail(at, "missing key 'tcp' or 'rtu'; expected how to reach the device")
            return nil
        case (.some, .some(let rtu)):
            reader.fail(rtu, "a device has either 'tcp' or 'rtu', not both")
            return nil
        case (.some(let tcp), nil):
            guard let f = reader.fields(tcp, what: "TCP settings", allowed: Self.tcpKeys) else { return nil }
            guard let hostCursor = f["host"] else {
                reader.fail(tcp, "missing key 'host'; expected a host name or IP address")
                return nil
            }
            guard let host = reader.string(hostCursor, what: "a host name or IP address") else { return nil }
            if host.isEmpty { reader.fail(hostCursor, "the host is empty; expected a host name or IP address") }
            var port = 502
            if let c = f["port"] {
                guard let v = reader.int(c, in: 1...65535, what: "a TCP port") else { return nil }
                port = v
            }
            return .tcp(host: host, port: port)
        case (nil, .some(let rtu)):
            guard let f = reader.fields(rtu, what: "RTU settings", allowed: Self.rtuKeys) else { return nil }
            guard let busCursor = f["bus"] else {
                reader.fail(rtu, "missing key 'bus'; expected the name of an entry in serial_buses")
                return nil
            }
            guard let bus = reader.string(busCursor) else { return nil }
            guard let settings = buses[bus] else {
                let known = buses.keys.sorted()
                reader.fail(busCursor, "unknown serial bus '\(bus)'; expected one of the serial_buses: \(known.isEmpty ? "(none defined)" : known.joined(separator: ", "))")
                return nil
            }
            return .rtu(bus: bus, settings: settings)
        }
    }

    func signal(_ at: Cursor, poll: PollSettings, report inherited: ReportPolicy) -> Signal? {
        guard let f = reader.fields(at, what: "a signal", allowed: Self.signalKeys) else { return nil }
        let before = reader.issues.count
        var signalName: String?
        if let c = f["name"] { signalName = name(c) } else { reader.fail(at, "missing key 'name'; expected a signal name unique in its device") }

        var area: Area?
        if let c = f["area"], let text = reader.string(c) {
            area = Area.named(text)
            if area == nil { reader.fail(c, "unknown area '\(text)'; expected one of coil, discrete, holding, input") }
        }

        var address: Int?
        if let c = f["address"] {
            if let resolved = self.address(c, area: &area, areaGiven: f["area"] != nil) { address = resolved }
        } else {
            reader.fail(at, "missing key 'address'; expected a 0-based PDU address (0 to 65535) or a Modicon reference like \"400001\" or 4x0001")
        }
        if area == nil && f["area"] == nil && f["address"] != nil && reader.issues.count == before {
            reader.fail(at, "missing key 'area'; expected one of coil, discrete, holding, input (or a Modicon address that implies it)")
        }

        let type = dataType(f, at: at, area: area)
        var order = ByteOrder.abcd
        if let c = f["order"], let text = reader.string(c) {
            if let o = ByteOrder(rawValue: text.uppercased()) { order = o } else {
                reader.fail(c, "unknown byte order '\(text)'; expected one of ABCD, BADC, CDAB, DCBA")
            }
        }
        var scale = 1.0, offset = 0.0
        if let c = f["scale"], let v = reader.double(c) {
            if v == 0 { reader.fail(c, "scale 0 would erase every value; expected a non-zero number") } else { scale = v }
        }
        if let c = f["offset"], let v = reader.double(c) { offset = v }
        if let c = f["scale"] ?? f["offset"], let type, !type.isNumeric {
            reader.fail(c, "scale and offset apply to numbers; a \(type.name) signal cannot have them")
        }
        var unit: String?
        if let c = f["unit"] { unit = reader.string(c, what: "a unit such as degC or kWh") }
        var interval = poll.intervalMs
        if let c = f["interval"], let v = reader.duration(c, in: 10...86_400_000) { interval = v }
        let (report, writable, attribute) = platformKeys(f, type: type, area: area, inherited: inherited)

        guard reader.issues.count == before, let signalName, let area, let address, let type else { return nil }
        if address + type.width > 65536 {
            reader.fail(f["address"] ?? at, "a \(type.name) at address \(address) runs past the last address 65535; expected an address up to \(65536 - type.width)")
            return nil
        }
        return Signal(name: signalName, area: area, address: address, type: type, order: order,
                      scale: scale, offset: offset, unit: unit, intervalMs: interval,
                      writable: writable, report: report, attribute: attribute)
    }

    func dataType(_ f: Fields, at: Cursor, area: Area?) -> DataType? {
        guard let c = f["type"] else {
            reader.fail(at, "missing key 'type'; expected one of \(DataType.names.joined(separator: ", "))")
            return nil
        }
        guard let text = reader.string(c) else { return nil }
        var type: DataType?
        switch text.lowercased() {
        case "bit":
            if let b = f["bit"] {
                if let index = reader.int(b, in: 0...15, what: "a bit index (0 = least significant)") { type = .bit(index) }
            } else {
                reader.fail(c, "a bit signal needs key 'bit'; expected the bit index 0 to 15 (0 = least significant)")
            }
        case "string":
            if let r = f["registers"] {
                if let count = reader.int(r, in: 1...125, what: "a register count") { type = .string(registers: count) }
            } else {
                reader.fail(c, "a string signal needs key 'registers'; expected how many registers (2 characters each) it spans")
            }
        default:
            type = DataType.fixed(text.lowercased())
            if type == nil {
                reader.fail(c, "unknown type '\(text)'; expected one of \(DataType.names.joined(separator: ", "))")
                return nil
            }
        }
        if let b = f["bit"], text.lowercased() != "bit" { reader.fail(b, "key 'bit' applies only to type bit") }
        if let r = f["registers"], text.lowercased() != "string" { reader.fail(r, "key 'registers' applies only to type string") }
        if let type, let area, !type.fits(area) {
            let expected = area.isBitArea ? "bool (a \(area.rawValue) holds one bit)" : "a register type (bit, int16, ..., float64, string); bool is for coils and discrete inputs"
            reader.fail(c, "type \(type.name) does not fit area \(area.rawValue); expected \(expected)")
            return nil
        }
        return type
    }

    /// A plain integer is the 0-based PDU address. Quoted numbers and `4x0001` forms are 1-based
    /// Modicon references; so are unquoted six-digit references (100001-465536), which cannot be PDU
    /// addresses. A Modicon reference sets the area, or must agree with the one given.
    func address(_ at: Cursor, area: inout Area?, areaGiven: Bool) -> Int? {
        guard let text = reader.text(at, what: "an address") else { return nil }
        let plain = reader.isPlain(at)
        if plain, let value = Int(text) {
            if (0...65535).contains(value) { return value }
            if let modicon = ModiconReference(sixDigit: value) { return resolve(modicon, at: at, text: text, area: &area) }
            reader.fail(at, "address \(value) is out of range; expected a 0-based PDU address from 0 to 65535 or a Modicon reference like 400001")
            return nil
        }
        guard let modicon = ModiconReference(text) else {
            reader.fail(at, "'\(text)' is not an address; expected a 0-based PDU address from 0 to 65535, or a 1-based Modicon reference: \"40001\", \"400001\" or 4x0001 (quote the all-digit forms under 65536)")
            return nil
        }
        return resolve(modicon, at: at, text: text, area: &area)
    }

    private func resolve(_ modicon: ModiconReference, at: Cursor, text: String, area: inout Area?) -> Int? {
        guard let pdu = modicon.pduAddress else {
            reader.fail(at, "Modicon reference '\(text)' is out of range; expected a register number from 1 to 65536")
            return nil
        }
        if let given = area, given != modicon.area {
            reader.fail(at, "Modicon reference '\(text)' is \(modicon.area.withArticle) but area is \(given.rawValue); expected a \(given.modiconPrefix)xxxxx reference or a plain PDU address")
            return nil
        }
        area = modicon.area
        return pdu
    }
}

/// A 1-based Modicon reference such as 400001, "40001" or 4x0001.
struct ModiconReference {
    var area: Area
    /// The 1-based register or bit number.
    var number: Int
    var pduAddress: Int? { (1...65536).contains(number) ? number - 1 : nil }

    init?(sixDigit value: Int) {
        let prefix = value / 100_000
        guard let area = Self.area(prefix), value % 100_000 >= 1, value <= prefix * 100_000 + 65536 else { return nil }
        self.area = area
        self.number = value - prefix * 100_000
    }

    init?(_ text: String) {
        let chars = Array(text.lowercased())
        guard chars.count >= 2, let prefix = chars.first?.wholeNumberValue, let area = Self.area(prefix) else { return nil }
        let digits: ArraySlice<Character>
        if chars[1] == "x" {
            digits = chars[2...]
            guard (1...5).contains(digits.count) else { return nil }
        } else {
            // 5-digit (40001: four digits of register) or 6-digit (400001: five digits) forms.
            digits = chars[1...]
            guard digits.count == 4 || digits.count == 5 else { return nil }
        }
        guard digits.allSatisfy(\.isASCII), let number = Int(String(digits)), digits.allSatisfy(\.isNumber) else { return nil }
        self.area = area
        self.number = number
    }

    static func area(_ prefix: Int) -> Area? {
        switch prefix {
        case 0: .coil
        case 1: .discreteInput
        case 3: .inputRegister
        case 4: .holdingRegister
        default: nil
        }
    }
}

extension Area {
    /// "a holding register", "an input register", for messages.
    var withArticle: String {
        switch self {
        case .coil: "a coil"
        case .discreteInput: "a discrete input"
        case .holdingRegister: "a holding register"
        case .inputRegister: "an input register"
        }
    }
}

extension DataType {
    var isNumeric: Bool {
        switch self {
        case .bool, .bit, .string: false
        default: true
        }
    }
}

/// Address parsing for the command line, with the same rules as the config file: digits alone are
/// a 0-based PDU address; `4x0001` forms and six-digit references over 65535 are Modicon.
public enum AddressText {
    public enum Failure: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self { case .invalid(let why): why }
        }
    }

    /// Resolves `text` to an area and PDU address; `area` (if given) must agree with a Modicon form.
    public static func resolve(_ text: String, area: Area?) -> Result<(area: Area, address: Int), Failure> {
        if let value = Int(text), (0...65535).contains(value) {
            guard let area else { return .failure(.invalid("address \(text) needs an area (--area holding|input|coil|discrete)")) }
            return .success((area, value))
        }
        let modicon = Int(text).flatMap(ModiconReference.init(sixDigit:)) ?? (Int(text) == nil ? ModiconReference(text) : nil)
        guard let modicon, let pdu = modicon.pduAddress else {
            return .failure(.invalid("'\(text)' is not an address; expected a PDU address 0 to 65535 or a Modicon reference like 400001 or 4x0001"))
        }
        if let area, area != modicon.area {
            return .failure(.invalid("Modicon reference '\(text)' is \(modicon.area.withArticle) but the area is \(area.rawValue)"))
        }
        return .success((modicon.area, pdu))
    }
}
