// Reads scenario and profile YAML into the validated model. Works on Yams' Node tree (not
// Codable) because nodes keep their line and column: every error names the file, line, column,
// key path and what was expected, so a person fixing a profile never has to guess.

import Foundation
import Yams

/// A profile or scenario the simulator can't use, located to the character.
public struct ProfileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int
    public var column: Int
    /// Key path inside the file, e.g. `registers[3].type` (empty at the top level).
    public var path: String
    public var message: String
    /// Where the file was included from, when it was.
    public var includedFrom: String?

    public var description: String {
        let location = path.isEmpty ? "" : "\(path): "
        let via = includedFrom.map { " (included from \($0))" } ?? ""
        return "\(file):\(line):\(column): \(location)\(message)\(via)"
    }
}

/// A node with where it came from.
struct Located {
    let node: Node
    let path: String
    let file: String
    let via: String?

    var line: Int { node.mark?.line ?? 1 }
    var column: Int { node.mark?.column ?? 1 }
    var position: String { "\(file):\(line):\(column)" }

    func error(_ message: String, columnOffset: Int = 0) -> ProfileError {
        ProfileError(file: file, line: line, column: column + columnOffset, path: path, message: message, includedFrom: via)
    }

    func child(_ key: String, _ node: Node) -> Located {
        Located(node: node, path: path.isEmpty ? key : "\(path).\(key)", file: file, via: via)
    }

    func element(_ index: Int, _ node: Node) -> Located {
        Located(node: node, path: "\(path)[\(index)]", file: file, via: via)
    }

    /// A mapping's entries, refusing keys not in `allowed` and duplicates.
    func fields(allowed: [String], what: String) throws(ProfileError) -> Fields {
        guard let mapping = node.mapping else {
            throw error("expected a mapping (\(what)) with keys \(allowed.joined(separator: ", ")), found \(kindName)")
        }
        var fields = Fields(owner: self)
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.scalar?.string else {
                throw Located(node: keyNode, path: path, file: file, via: via).error("keys must be plain names")
            }
            let keyLocated = Located(node: keyNode, path: path.isEmpty ? key : "\(path).\(key)", file: file, via: via)
            guard allowed.contains(key) else {
                throw keyLocated.error("unknown key '\(key)'; expected one of \(allowed.joined(separator: ", "))")
            }
            guard fields.entries[key] == nil else { throw keyLocated.error("duplicate key '\(key)'") }
            fields.entries[key] = child(key, valueNode)
            fields.order.append(key)
        }
        return fields
    }

    /// Entries of a mapping whose keys are names chosen by the author (states, buses, bits).
    func namedEntries(what: String) throws(ProfileError) -> [(key: String, keyNode: Located, value: Located)] {
        guard let mapping = node.mapping else { throw error("expected a mapping of \(what), found \(kindName)") }
        var seen: Set<String> = []
        var out: [(key: String, keyNode: Located, value: Located)] = []
        for (keyNode, valueNode) in mapping {
            let keyLocated = Located(node: keyNode, path: path, file: file, via: via)
            guard let key = keyNode.scalar?.string else { throw keyLocated.error("keys must be plain names") }
            guard seen.insert(key).inserted else { throw keyLocated.error("duplicate key '\(key)'") }
            out.append((key, Located(node: keyNode, path: "\(path).\(key)", file: file, via: via), child(key, valueNode)))
        }
        return out
    }

    func sequence(what: String) throws(ProfileError) -> [Located] {
        guard let sequence = node.sequence else { throw error("expected a list of \(what), found \(kindName)") }
        return sequence.enumerated().map { element($0.offset, $0.element) }
    }

    var kindName: String {
        switch node {
        case .scalar(let scalar): scalar.string.isEmpty ? "nothing" : "'\(scalar.string)'"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    var isNull: Bool { node.scalar != nil && node.null != nil }

    func string() throws(ProfileError) -> String {
        guard let scalar = node.scalar, !isNull else { throw error("expected text, found \(kindName)") }
        return scalar.string
    }

    func name() throws(ProfileError) -> String {
        let text = try string()
        guard let first = text.unicodeScalars.first, first == "_" || first.properties.isAlphabetic,
              text.unicodeScalars.allSatisfy({ $0 == "_" || $0 == "-" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0) })
        else {
            throw error("'\(text)' is not a valid name; expected letters, digits, '_' or '-', starting with a letter")
        }
        return text
    }

    func identifier() throws(ProfileError) -> String {
        let text = try string()
        guard let first = text.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic),
              text.unicodeScalars.allSatisfy({ $0 == "_" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0) })
        else {
            throw error("'\(text)' is not a valid name; expected letters, digits and '_', starting with a letter (formulas use it)")
        }
        return text
    }

    func number() throws(ProfileError) -> Double {
        guard let scalar = node.scalar, !isNull else { throw error("expected a number, found \(kindName)") }
        let text = scalar.string.replacingAll("_", with: "")
        if let value = Double(text), value.isFinite { return value }
        if text.hasPrefix("0x"), let value = UInt64(text.dropFirst(2), radix: 16) { return Double(value) }
        throw error("expected a number, found '\(scalar.string)'")
    }

    func number(in range: ClosedRange<Double>) throws(ProfileError) -> Double {
        let value = try number()
        guard range.contains(value) else { throw error("\(Self.format(value)) is out of range; expected \(Self.format(range.lowerBound))...\(Self.format(range.upperBound))") }
        return value
    }

    func integer(in range: ClosedRange<Int>) throws(ProfileError) -> Int {
        let value = try number()
        guard value == value.rounded(), let integer = Int(exactly: value) else {
            throw error("expected a whole number, found '\(node.scalar?.string ?? "")'")
        }
        guard range.contains(integer) else {
            throw error("\(integer) is out of range; expected \(range.lowerBound)...\(range.upperBound)")
        }
        return integer
    }

    func bool() throws(ProfileError) -> Bool {
        guard let text = node.scalar?.string.lowercased() else { throw error("expected true or false, found \(kindName)") }
        switch text {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, found '\(text)'")
        }
    }

    /// A duration with a unit: 250ms, 2s, 1.5m, 1h (a bare number is refused: seconds or ms?).
    func duration() throws(ProfileError) -> Double {
        let text = try string().trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            if let value = Double(number), value.isFinite, value >= 0 { return value * factor }
        }
        throw error("expected a duration with a unit (ms, s, m, h, d), e.g. 500ms or 2.5s, found '\(text)'")
    }

    func probability() throws(ProfileError) -> Double { try number(in: 0...1) }

    /// A formula text (a number is a constant formula).
    func formula(_ symbols: Symbols) throws(ProfileError) -> Formula {
        let text = try string()
        let quoted = node.scalar.map { $0.style == .singleQuoted || $0.style == .doubleQuoted } ?? false
        let singleLine = !text.contains("\n")
        func place(_ problem: FormulaError) -> ProfileError {
            error(problem.message, columnOffset: singleLine ? problem.offset + (quoted ? 1 : 0) : 0)
        }
        do {
            return try Formula(text).resolved { symbols.slot(of: $0) }
        } catch {
            throw place(error)
        }
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}

/// A mapping's entries by key, remembering the mapping for "missing key" errors.
struct Fields {
    let owner: Located
    var entries: [String: Located] = [:]
    var order: [String] = []

    subscript(key: String) -> Located? { entries[key] }

    func require(_ key: String, _ expectation: String = "") throws(ProfileError) -> Located {
        guard let value = entries[key] else {
            throw owner.error("missing key '\(key)'\(expectation.isEmpty ? "" : "; \(expectation)")")
        }
        return value
    }

    /// Exactly one of `keys` must be present.
    func one(of keys: [String], what: String) throws(ProfileError) -> (key: String, value: Located) {
        let present = keys.filter { entries[$0] != nil }
        guard let first = present.first else {
            throw owner.error("missing \(what); expected one of \(keys.joined(separator: ", "))")
        }
        guard present.count == 1, let value = entries[first] else {
            throw owner.error("\(what) given twice (\(present.joined(separator: " and "))); keep one")
        }
        return (first, value)
    }
}

/// Names formulas may read, and their slots in a machine's value table.
struct Symbols {
    /// Variables first, then the built-ins, then one slot per state.
    var slots: [String: Int] = [:]

    static let builtins = ["t", "time_in_state", "state"]

    func slot(of name: String) -> Int? { slots[name] }
}

public enum ProfileLoader {
    static let scenarioKeys = ["description", "seed", "speed", "tick", "control", "serial_buses", "machines"]
    static let machineKeys = ["name", "kind", "description", "tcp", "rtu", "areas", "max_connections", "state_machine",
                              "registers", "faults"]
    static let entryKeys = ["include", "count", "vary"] + machineKeys
    static let generatorKeys = ["value", "counter", "sine", "ramp", "random_walk", "random", "track", "integrate",
                                "formula", "pick", "bits", "by_state"]
    static let registerKeys = ["name", "area", "address", "type", "order", "scale", "offset", "bit", "registers", "unit",
                               "description", "noise", "clamp", "writable"] + generatorKeys
    static let busKeys = ["device", "link", "baud", "parity", "data_bits", "stop_bits", "timing"]

    /// Loads a scenario (a file with `machines:`) or a single machine profile (served as a
    /// one-machine scenario, by default on 127.0.0.1:5020 unit 1).
    public static func load(path: String) throws(ProfileError) -> ScenarioDefinition {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ProfileError(file: path, line: 1, column: 1, path: "", message: "no such file; check the path")
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ProfileError(file: path, line: 1, column: 1, path: "",
                               message: "can't read the file (\(Self.reason(error))); check the path")
        }
        return try load(yaml: text, file: path)
    }

    /// Loads YAML text; `file` names it in errors and anchors `include:` paths.
    public static func load(yaml: String, file: String) throws(ProfileError) -> ScenarioDefinition {
        let root = try compose(yaml, file: file, via: nil)
        if root.node.mapping?["machines"] != nil {
            return try loadScenario(root)
        }
        var scenario = ScenarioDefinition(source: file)
        let fields = try root.fields(allowed: machineKeys, what: "a machine profile; a scenario has 'machines:'")
        let machine = try parseMachine(fields, defaultName: baseName(file),
                                       defaultEndpoint: .tcp(host: "127.0.0.1", port: 5020, unit: 1), buses: [])
        scenario.machines = [machine]
        return scenario
    }

    /// Parses a fault set (the `faults:` mapping; the control interface's request bodies).
    public static func parseFaults(yaml: String, source: String) throws(ProfileError) -> FaultSet {
        let root = try compose(yaml, file: source, via: nil)
        return try parseFaults(root)
    }

    // MARK: - Files

    static func compose(_ yaml: String, file: String, via: String?) throws(ProfileError) -> Located {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw yamlError(error, file: file, via: via)
        } catch {
            throw ProfileError(file: file, line: 1, column: 1, path: "", message: "not YAML: \(error)", includedFrom: via)
        }
        guard let node else {
            throw ProfileError(file: file, line: 1, column: 1, path: "", message: "the file is empty; expected a machine profile or a scenario", includedFrom: via)
        }
        return Located(node: node, path: "", file: file, via: via)
    }

    static func yamlError(_ error: YamlError, file: String, via: String?) -> ProfileError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let message = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ": ")
            return ProfileError(file: file, line: mark.line, column: mark.column, path: "",
                                message: "invalid YAML: \(message)", includedFrom: via)
        default:
            return ProfileError(file: file, line: 1, column: 1, path: "", message: "invalid YAML: \(error)", includedFrom: via)
        }
    }

    static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
           let code = POSIXErrorCode(rawValue: Int32(underlying.code)) {
            return String(cString: strerror(code.rawValue))
        }
        return nsError.localizedDescription
    }

    static func baseName(_ path: String) -> String {
        let last = path.split(separator: "/").last.map(String.init) ?? path
        return last.hasSuffix(".yaml") ? String(last.dropLast(5)) : (last.hasSuffix(".yml") ? String(last.dropLast(4)) : last)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[...slash])
    }

    // MARK: - Scenario

    static func loadScenario(_ root: Located) throws(ProfileError) -> ScenarioDefinition {
        let fields = try root.fields(allowed: scenarioKeys, what: "a scenario")
        var scenario = ScenarioDefinition(source: root.file)
        if let seed = fields["seed"] { scenario.seed = UInt64(try seed.integer(in: 0...Int.max)) }
        if let speed = fields["speed"] { scenario.speed = try speed.number(in: 0...10_000) }
        if let tick = fields["tick"] {
            scenario.tick = try tick.duration()
            guard (0.001...60).contains(scenario.tick) else { throw tick.error("tick must be between 1ms and 60s") }
        }
        if let control = fields["control"] { scenario.controlPort = try control.integer(in: 0...65535) }
        if let buses = fields["serial_buses"] {
            for (name, keyNode, value) in try buses.namedEntries(what: "serial buses") {
                _ = try keyNode.name()
                scenario.serialBuses.append(try parseBus(name: name, value))
            }
        }
        let entries = try fields.require("machines").sequence(what: "machines")
        guard !entries.isEmpty else { throw try fields.require("machines").error("no machines; list at least one") }
        var anchors: [Located] = []
        for entry in entries {
            let machines = try parseEntry(entry, scenarioFile: root.file, buses: scenario.serialBuses)
            scenario.machines += machines
            anchors += Array(repeating: entry, count: machines.count)
        }
        try checkEndpoints(scenario, anchors: anchors)
        return scenario
    }

    static func parseBus(name: String, _ located: Located) throws(ProfileError) -> SerialBusDefinition {
        let fields = try located.fields(allowed: busKeys, what: "a serial bus")
        var bus = SerialBusDefinition(name: name)
        bus.device = try fields["device"]?.string()
        bus.link = try fields["link"]?.string()
        if bus.device != nil, let link = fields["link"] {
            throw link.error("'link' names the pty the simulator creates; with 'device' there is no pty to link")
        }
        if let baud = fields["baud"] { bus.baud = try baud.integer(in: 300...4_000_000) }
        if let parity = fields["parity"] {
            let text = try parity.string().uppercased()
            switch text {
            case "N", "NONE": bus.parity = .none
            case "E", "EVEN": bus.parity = .even
            case "O", "ODD": bus.parity = .odd
            default: throw parity.error("unknown parity '\(text)'; expected N, E or O")
            }
        }
        if let bits = fields["data_bits"] { bus.dataBits = try bits.integer(in: 7...8) }
        if let bits = fields["stop_bits"] { bus.stopBits = try bits.integer(in: 1...2) }
        if let timing = fields["timing"] { bus.timing = try timing.bool() }
        return bus
    }

    /// One `machines:` entry: an inline machine or an included profile with overrides, possibly
    /// repeated `count` times on consecutive ports (or unit ids).
    static func parseEntry(_ entry: Located, scenarioFile: String, buses: [SerialBusDefinition]) throws(ProfileError) -> [MachineDefinition] {
        let entryFields = try entry.fields(allowed: entryKeys, what: "a machine")
        var merged = Fields(owner: entry)
        var defaultName: String?
        if let include = entryFields["include"] {
            let relative = try include.string()
            let path = relative.hasPrefix("/") ? relative : directory(of: scenarioFile) + relative
            guard FileManager.default.fileExists(atPath: path) else {
                throw include.error("no such file '\(path)'; the path is relative to \(scenarioFile)")
            }
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw include.error("can't read '\(path)' (\(reason(error))); the path is relative to \(scenarioFile)")
            }
            let included = try compose(text, file: path, via: include.position)
            merged = try included.fields(allowed: machineKeys, what: "a machine profile")
            defaultName = baseName(path)
        }
        if entryFields["tcp"] != nil || entryFields["rtu"] != nil {
            // The scenario decides where the machine listens: its endpoint replaces the profile's.
            merged.entries["tcp"] = nil
            merged.entries["rtu"] = nil
        }
        for key in entryFields.order where !["include", "count", "vary"].contains(key) {
            if let value = entryFields[key] {
                if merged.entries[key] == nil { merged.order.append(key) }
                merged.entries[key] = value
            }
        }
        let count = try entryFields["count"]?.integer(in: 1...10_000) ?? 1
        var varyUnit = false
        if let vary = entryFields["vary"] {
            switch try vary.string() {
            case "port": varyUnit = false
            case "unit": varyUnit = true
            default: throw vary.error("unknown value '\(try vary.string())'; expected port or unit")
            }
        }
        let template = try parseMachine(merged, defaultName: defaultName, defaultEndpoint: nil, buses: buses, owner: entry)
        guard count > 1 else { return [template] }
        let width = max(2, String(count).count)
        var machines: [MachineDefinition] = []
        for index in 1...count {
            var machine = template
            let number = String(repeating: "0", count: max(0, width - String(index).count)) + String(index)
            machine.name = template.name.contains("{n}") ? template.name.replacingAll("{n}", with: number)
                                                         : "\(template.name)-\(number)"
            switch template.endpoint {
            case .tcp(let host, let port, let unit):
                if varyUnit {
                    guard Int(unit) + index - 1 <= 255 else { throw entry.error("count \(count) runs unit ids past 255") }
                    machine.endpoint = .tcp(host: host, port: port, unit: UInt8(Int(unit) + index - 1))
                } else {
                    guard port == 0 || port + index - 1 <= 65535 else { throw entry.error("count \(count) runs ports past 65535") }
                    machine.endpoint = .tcp(host: host, port: port == 0 ? 0 : port + index - 1, unit: unit)
                }
            case .rtu(let bus, let unit):
                guard Int(unit) + index - 1 <= 247 else { throw entry.error("count \(count) runs RTU unit ids past 247") }
                machine.endpoint = .rtu(bus: bus, unit: UInt8(Int(unit) + index - 1))
            }
            machines.append(machine)
        }
        return machines
    }

    /// Names, ports and unit ids must not collide; a port's machines must share its host.
    static func checkEndpoints(_ scenario: ScenarioDefinition, anchors: [Located]) throws(ProfileError) {
        var names: Set<String> = []
        var tcp: [Int: (host: String, units: Set<UInt8>)] = [:]
        var rtu: [String: Set<UInt8>] = [:]
        for (machine, anchor) in zip(scenario.machines, anchors) {
            guard names.insert(machine.name).inserted else {
                throw anchor.error("two machines are named '\(machine.name)'; names must be unique (with count, use {n} in the name)")
            }
            switch machine.endpoint {
            case .tcp(let host, let port, let unit):
                guard port != 0 else { continue }
                var entry = tcp[port] ?? (host, [])
                guard entry.host == host else {
                    throw anchor.error("port \(port) is used on two hosts (\(entry.host) and \(host)) by '\(machine.name)'")
                }
                guard entry.units.insert(unit).inserted else {
                    throw anchor.error("'\(machine.name)' uses port \(port) unit \(unit), already taken by another machine")
                }
                tcp[port] = entry
            case .rtu(let bus, let unit):
                guard rtu[bus, default: []].insert(unit).inserted else {
                    throw anchor.error("'\(machine.name)' uses bus \(bus) unit \(unit), already taken by another machine")
                }
            }
        }
    }

    // MARK: - Machine

    static func parseMachine(_ fields: Fields, defaultName: String?, defaultEndpoint: Endpoint?,
                             buses: [SerialBusDefinition], owner: Located? = nil) throws(ProfileError) -> MachineDefinition {
        let anchor = owner ?? fields.owner
        let name: String
        if let nameNode = fields["name"] {
            name = try nameNode.string()
            _ = try Located(node: .scalar(.init(name.replacingAll("{n}", with: "1"))), path: nameNode.path,
                            file: nameNode.file, via: nameNode.via).name()
        } else if let defaultName {
            name = defaultName
        } else {
            throw anchor.error("missing key 'name' (or 'include' of a profile)")
        }
        let endpoint = try parseEndpoint(fields, defaultEndpoint: defaultEndpoint, buses: buses, anchor: anchor)

        // Pass 1: the names formulas may use.
        var symbols = Symbols()
        let registerNodes = try fields.require("registers", "list the machine's registers").sequence(what: "registers")
        var names: [String] = []
        for registerNode in registerNodes {
            let registerFields = try registerNode.fields(allowed: registerKeys, what: "a register")
            let nameNode = try registerFields.require("name")
            let variable = try nameNode.identifier()
            guard !Symbols.builtins.contains(variable) else {
                throw nameNode.error("'\(variable)' is a built-in name (\(Symbols.builtins.joined(separator: ", "))); pick another")
            }
            guard symbols.slots[variable] == nil else { throw nameNode.error("duplicate register name '\(variable)'") }
            symbols.slots[variable] = names.count
            names.append(variable)
        }
        for (offset, builtin) in Symbols.builtins.enumerated() { symbols.slots[builtin] = names.count + offset }

        var stateMachine: StateMachineDefinition?
        var stateNodes: [(key: String, keyNode: Located, value: Located)] = []
        var stateFields: Fields?
        if let machineNode = fields["state_machine"] {
            let smFields = try machineNode.fields(allowed: ["initial", "states"], what: "a state machine")
            stateFields = smFields
            stateNodes = try smFields.require("states").namedEntries(what: "states")
            guard !stateNodes.isEmpty else { throw try smFields.require("states").error("no states; list at least one") }
            for (index, state) in stateNodes.enumerated() {
                let stateName = try state.keyNode.identifier()
                guard symbols.slots[stateName] == nil else {
                    throw state.keyNode.error("state '\(stateName)' has the name of a register or built-in; formulas read states by name, so rename one")
                }
                symbols.slots[stateName] = names.count + Symbols.builtins.count + index
            }
        }
        if let smFields = stateFields {
            stateMachine = try parseStateMachine(smFields, states: stateNodes, symbols: symbols)
        }

        // Pass 2: the registers themselves.
        var variables: [VariableDefinition] = []
        for registerNode in registerNodes {
            variables.append(try parseRegister(registerNode, symbols: symbols, stateMachine: stateMachine, earlier: variables))
        }

        var areaSizes: [DataArea: Int] = [:]
        if let areas = fields["areas"] {
            for (key, keyNode, value) in try areas.namedEntries(what: "area sizes") {
                guard let area = DataArea.named(key) else {
                    throw keyNode.error("unknown area '\(key)'; expected one of \(DataArea.acceptedNames)")
                }
                areaSizes[area] = try value.integer(in: 0...65536)
            }
        }
        try checkLayout(variables, registerNodes: registerNodes, areaSizes: &areaSizes, anchor: fields["areas"] ?? anchor)

        var machine = MachineDefinition(name: name, endpoint: endpoint, areaSizes: areaSizes, variables: variables)
        machine.stateMachine = stateMachine
        machine.kind = try fields["kind"]?.string() ?? ""
        machine.description = try fields["description"]?.string() ?? ""
        machine.maxConnections = try fields["max_connections"]?.integer(in: 1...10_000)
        if let faults = fields["faults"] { machine.faults = try parseFaults(faults) }
        return machine
    }

    static func parseEndpoint(_ fields: Fields, defaultEndpoint: Endpoint?, buses: [SerialBusDefinition],
                              anchor: Located) throws(ProfileError) -> Endpoint {
        if fields["tcp"] == nil, fields["rtu"] == nil {
            guard let defaultEndpoint else { throw anchor.error("missing key 'tcp' or 'rtu'; say where the machine listens") }
            return defaultEndpoint
        }
        let (key, value) = try fields.one(of: ["tcp", "rtu"], what: "endpoint")
        if key == "tcp" {
            let tcp = try value.fields(allowed: ["host", "port", "unit"], what: "a TCP endpoint")
            let host = try tcp["host"]?.string() ?? "127.0.0.1"
            let port = try tcp.require("port").integer(in: 0...65535)
            let unit = try tcp["unit"]?.integer(in: 0...255) ?? 1
            return .tcp(host: host, port: port, unit: UInt8(unit))
        }
        let rtu = try value.fields(allowed: ["bus", "unit"], what: "an RTU endpoint")
        let busNode = try rtu.require("bus")
        let bus = try busNode.string()
        guard buses.contains(where: { $0.name == bus }) else {
            let known = buses.map(\.name)
            throw busNode.error("unknown serial bus '\(bus)'; " + (known.isEmpty ? "define it under serial_buses in the scenario"
                                                                              : "expected one of \(known.joined(separator: ", "))"))
        }
        let unit = try rtu["unit"]?.integer(in: 1...247) ?? 1
        return .rtu(bus: bus, unit: UInt8(unit))
    }

    static func parseStateMachine(_ fields: Fields, states: [(key: String, keyNode: Located, value: Located)],
                                  symbols: Symbols) throws(ProfileError) -> StateMachineDefinition {
        let stateNames = states.map(\.key)
        func index(_ located: Located) throws(ProfileError) -> Int {
            let name = try located.string()
            guard let index = stateNames.firstIndex(of: name) else {
                throw located.error("unknown state '\(name)'; expected one of \(stateNames.joined(separator: ", "))")
            }
            return index
        }
        var definitions: [StateMachineDefinition.State] = []
        for (position, entry) in states.enumerated() {
            let stateFields = try entry.value.fields(allowed: ["code", "dwell", "next", "transitions"], what: "a state")
            var state = StateMachineDefinition.State(name: entry.key, code: Double(position + 1))
            if let code = stateFields["code"] { state.code = try code.number() }
            if let dwell = stateFields["dwell"] {
                if let range = dwell.node.sequence {
                    guard range.count == 2 else { throw dwell.error("expected a duration or [min, max], e.g. [5m, 20m]") }
                    let low = try dwell.element(0, range[0]).duration(), high = try dwell.element(1, range[1]).duration()
                    guard low <= high else { throw dwell.error("min is longer than max") }
                    state.dwell = low...high
                } else {
                    let value = try dwell.duration()
                    state.dwell = value...value
                }
            }
            if let next = stateFields["next"] {
                if next.node.scalar != nil {
                    state.next = [(try index(next), 1)]
                } else {
                    for (_, keyNode, weight) in try next.namedEntries(what: "next states with weights") {
                        state.next.append((try index(keyNode), try weight.number(in: 0...1e9)))
                    }
                }
                guard state.next.contains(where: { $0.weight > 0 }) else { throw next.error("all weights are 0") }
            }
            if state.dwell != nil, state.next.isEmpty {
                throw entry.value.error("state '\(entry.key)' has a dwell time but no 'next' state to go to")
            }
            if !state.next.isEmpty, state.dwell == nil, let next = stateFields["next"] {
                throw next.error("'next' needs a 'dwell' time saying when to move on")
            }
            if let transitions = stateFields["transitions"] {
                for item in try transitions.sequence(what: "transitions") {
                    let itemFields = try item.fields(allowed: ["to", "when"], what: "a transition")
                    state.transitions.append((try index(try itemFields.require("to")),
                                              try itemFields.require("when").formula(symbols)))
                }
            }
            definitions.append(state)
        }
        var initial = 0
        if let initialNode = fields["initial"] { initial = try index(initialNode) }
        return StateMachineDefinition(initial: initial, states: definitions)
    }

    // MARK: - Registers

    static func parseRegister(_ located: Located, symbols: Symbols, stateMachine: StateMachineDefinition?,
                              earlier: [VariableDefinition]) throws(ProfileError) -> VariableDefinition {
        let fields = try located.fields(allowed: registerKeys, what: "a register")
        let name = try fields.require("name").identifier()

        var placement: Placement?
        if let areaNode = fields["area"] {
            let areaText = try areaNode.string()
            guard let area = DataArea.named(areaText) else {
                throw areaNode.error("unknown area '\(areaText)'; expected one of \(DataArea.acceptedNames)")
            }
            let address = try fields.require("address", "the 0-based PDU address").integer(in: 0...65535)
            let typeNode = fields["type"]
            let typeName = try typeNode?.string() ?? (area.holdsBits ? "bool" : "uint16")
            var type: ValueType
            if let fixed = ValueType.fixed(typeName) {
                type = fixed
            } else if typeName == "bit" {
                type = .bit(try fields.require("bit", "which bit (0-15) of the register").integer(in: 0...15))
            } else if typeName == "string" {
                type = .string(registers: try fields.require("registers", "how many registers the text spans").integer(in: 1...123))
            } else {
                throw (typeNode ?? located).error("unknown type '\(typeName)'; expected one of \(ValueType.names.joined(separator: ", "))")
            }
            if let bit = fields["bit"], typeName != "bit" { throw bit.error("'bit' applies only to type bit") }
            if let registers = fields["registers"], typeName != "string" { throw registers.error("'registers' applies only to type string") }
            if area.holdsBits, type != .bool {
                throw (typeNode ?? located).error("type '\(typeName)' can't live in the \(area.rawValue) area; coils and discrete inputs hold type bool")
            }
            if !area.holdsBits, type == .bool {
                throw (typeNode ?? located).error("type 'bool' lives in coils or discrete inputs; in a register use type bit")
            }
            if address + type.width > 65536 {
                throw located.error("\(type.width) registers from address \(address) run past 65535")
            }
            var order = ByteOrder.abcd
            if let orderNode = fields["order"] {
                let text = try orderNode.string().uppercased()
                guard let parsed = ByteOrder(rawValue: text) else {
                    throw orderNode.error("unknown order '\(text)'; expected one of ABCD, BADC, CDAB, DCBA")
                }
                guard type.isNumericRegister || type.width > 1 || { if case .string = type { true } else { false } }() else {
                    throw orderNode.error("'order' has no meaning for type \(type.name)")
                }
                order = parsed
            }
            let scale = try fields["scale"]?.number() ?? 1
            if scale == 0, let scaleNode = fields["scale"] { throw scaleNode.error("scale can't be 0") }
            let offset = try fields["offset"]?.number() ?? 0
            placement = Placement(area: area, address: address, type: type, order: order, scale: scale, offset: offset)
        } else {
            for key in ["address", "type", "order", "scale", "offset", "bit", "registers", "writable"] {
                if let node = fields[key] {
                    throw node.error("'\(key)' needs 'area' (a register without an area is internal, read by formulas only)")
                }
            }
        }

        let (generatorKey, generatorNode) = try fields.one(of: generatorKeys, what: "how the value evolves")
        let generator = try parseGenerator(generatorKey, generatorNode, symbols: symbols, stateMachine: stateMachine,
                                           earlier: earlier, type: placement?.type)
        if case .text = generator {
            guard case .string? = placement?.type else {
                throw generatorNode.error("text needs type string (and 'registers'); found \(placement.map { "type \($0.type.name)" } ?? "an internal value")")
            }
        } else if case .string? = placement?.type {
            throw generatorNode.error("type string takes a text 'value', e.g. value: \"IMM-150\"")
        }

        var variable = VariableDefinition(name: name, placement: placement, generator: generator)
        variable.unit = try fields["unit"]?.string()
        variable.description = try fields["description"]?.string()
        if let noise = fields["noise"] { variable.noise = try noise.number(in: 0...1e12) }
        if let clamp = fields["clamp"] { variable.clamp = try range(clamp) }
        if let writable = fields["writable"] {
            if writable.node.mapping != nil {
                let limits = try writable.fields(allowed: ["min", "max"], what: "write limits")
                variable.writable = (try limits["min"]?.number() ?? -Double.greatestFiniteMagnitude)...(try limits["max"]?.number() ?? Double.greatestFiniteMagnitude)
            } else if try writable.bool() {
                variable.writable = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude
            }
            if variable.writable != nil {
                guard let area = placement?.area, area == .holding || area == .coil else {
                    throw writable.error("only holding registers and coils can be written by a master")
                }
                guard generatorKey == "value", case .constant = generator else {
                    throw writable.error("a writable register holds what the master wrote; give its initial value with 'value'")
                }
            }
        }
        return variable
    }

    static func range(_ located: Located) throws(ProfileError) -> ClosedRange<Double> {
        guard let items = located.node.sequence, items.count == 2 else { throw located.error("expected [min, max]") }
        let low = try located.element(0, items[0]).number(), high = try located.element(1, items[1]).number()
        guard low <= high else { throw located.error("min \(low) is above max \(high)") }
        return low...high
    }

    static func parseGenerator(_ key: String, _ located: Located, symbols: Symbols, stateMachine: StateMachineDefinition?,
                               earlier: [VariableDefinition], type: ValueType?) throws(ProfileError) -> Generator {
        func needStates() throws(ProfileError) -> StateMachineDefinition {
            guard let stateMachine else { throw located.error("'\(key)' needs a state_machine in the machine") }
            return stateMachine
        }
        switch key {
        case "value":
            guard let scalar = located.node.scalar, !located.isNull else { throw located.error("expected a number, true/false or text") }
            if scalar.style == .plain {
                if let number = try? located.number() { return .constant(number) }
                if let flag = try? located.bool() { return .constant(flag ? 1 : 0) }
            }
            return .text(scalar.string)

        case "counter":
            let fields = try located.fields(allowed: ["every", "rate", "on", "start", "step", "probability", "wrap", "while"], what: "a counter")
            let (sourceKey, sourceNode) = try fields.one(of: ["every", "rate", "on"], what: "what makes the counter count")
            let source: Generator.Counter.Source
            switch sourceKey {
            case "every":
                if let seconds = try? sourceNode.duration() {
                    guard seconds > 0 else { throw sourceNode.error("'every' must be longer than 0") }
                    source = .every(Formula(constant: seconds))
                } else {
                    source = .every(try sourceNode.formula(symbols))
                }
            case "rate":
                source = .rate(try sourceNode.formula(symbols))
            default:
                let other = try sourceNode.identifier()
                guard let index = earlier.firstIndex(where: { $0.name == other }), case .counter = earlier[index].generator else {
                    throw sourceNode.error("'on' names a counter defined above this one; '\(other)' isn't")
                }
                source = .on(index)
            }
            var counter = Generator.Counter(source: source)
            counter.start = try fields["start"]?.number() ?? 0
            counter.step = try fields["step"]?.number() ?? 1
            counter.probability = try fields["probability"]?.probability() ?? 1
            if let wrap = fields["wrap"] {
                counter.wrap = try wrap.number(in: 1...ValueCodec.twoTo64)
            } else if let range = type?.integerRange, range.lowerBound == 0 {
                counter.wrap = range.upperBound + 1
            }
            counter.condition = try fields["while"]?.formula(symbols)
            return .counter(counter)

        case "sine", "ramp":
            let isSine = key == "sine"
            let names = isSine ? ["min", "max", "period", "phase"] : ["from", "to", "period", "phase"]
            let fields = try located.fields(allowed: names, what: "a \(key)")
            let low = try fields.require(names[0]).number(), high = try fields.require(names[1]).number()
            let periodNode = try fields.require("period")
            let period = try periodNode.duration()
            guard period > 0 else { throw periodNode.error("period must be longer than 0") }
            let phase = try fields["phase"]?.duration() ?? 0
            return isSine ? .sine(min: low, max: high, period: period, phase: phase)
                          : .ramp(from: low, to: high, period: period, phase: phase)

        case "random_walk":
            let fields = try located.fields(allowed: ["start", "min", "max", "step"], what: "a random walk")
            let low = try fields.require("min").number(), high = try fields.require("max").number()
            guard low <= high else { throw located.error("min \(low) is above max \(high)") }
            let start = try fields["start"]?.number() ?? (low + high) / 2
            guard (low...high).contains(start) else {
                throw (fields["start"] ?? located).error("start \(start) is outside [\(low), \(high)]")
            }
            return .randomWalk(start: start, min: low, max: high, step: try fields.require("step").number(in: 0...1e12))

        case "random":
            let fields = try located.fields(allowed: ["min", "max"], what: "a uniform random value")
            let low = try fields.require("min").number(), high = try fields.require("max").number()
            guard low <= high else { throw located.error("min \(low) is above max \(high)") }
            return .random(min: low, max: high)

        case "track":
            let fields = try located.fields(allowed: ["target", "time_constant", "start"], what: "a first-order lag")
            let tauNode = try fields.require("time_constant")
            let tau: Formula
            if let seconds = try? tauNode.duration() {
                guard seconds > 0 else { throw tauNode.error("time_constant must be longer than 0") }
                tau = Formula(constant: seconds)
            } else {
                tau = try tauNode.formula(symbols)
            }
            return .track(target: try fields.require("target").formula(symbols), timeConstant: tau,
                          start: try fields["start"]?.formula(symbols))

        case "integrate":
            let fields = try located.fields(allowed: ["of", "per", "start", "while"], what: "an integral")
            let perNode = fields["per"]
            let per = try perNode?.duration() ?? 1
            guard per > 0 else { throw (perNode ?? located).error("per must be longer than 0") }
            return .integrate(of: try fields.require("of").formula(symbols), per: per,
                              start: try fields["start"]?.number() ?? 0, condition: try fields["while"]?.formula(symbols))

        case "formula":
            return .formula(try located.formula(symbols))

        case "pick":
            let machine = try needStates()
            let fields = try located.fields(allowed: ["when", "values", "otherwise", "start"], what: "a pick")
            let whenNode = try fields.require("when", "the states whose entry draws a new value")
            var states: [Int] = []
            let whenItems = whenNode.node.sequence.map { items in items.enumerated().map { whenNode.element($0.offset, $0.element) } } ?? [whenNode]
            for item in whenItems {
                let stateName = try item.string()
                guard let index = machine.index(of: stateName) else {
                    throw item.error("unknown state '\(stateName)'; expected one of \(machine.states.map(\.name).joined(separator: ", "))")
                }
                states.append(index)
            }
            let valuesNode = try fields.require("values", "the values to draw, as a list or value: weight")
            var values: [Double] = [], weights: [Double] = []
            if valuesNode.node.sequence != nil {
                for item in try valuesNode.sequence(what: "values") { values.append(try item.number()); weights.append(1) }
            } else {
                for (_, keyNode, weight) in try valuesNode.namedEntries(what: "value: weight") {
                    values.append(try keyNode.number())
                    weights.append(try weight.number(in: 0...1e9))
                }
            }
            guard !values.isEmpty else { throw valuesNode.error("no values to pick from") }
            var otherwise: Double? = 0
            if let otherwiseNode = fields["otherwise"] {
                otherwise = (try? otherwiseNode.string()) == "hold" ? nil : try otherwiseNode.number()
            }
            let start = try fields["start"]?.number() ?? otherwise ?? values[0]
            return .pick(states: states, values: values, weights: weights, otherwise: otherwise, start: start)

        case "bits":
            let limit = (type?.width ?? 4) * 16
            var bits: [(bit: Int, formula: Formula)] = []
            for (_, keyNode, formulaNode) in try located.namedEntries(what: "bit: formula") {
                let bit = try keyNode.integer(in: 0...(limit - 1))
                bits.append((bit, try formulaNode.formula(symbols)))
            }
            return .bits(bits)

        case "by_state":
            let machine = try needStates()
            var branches: [Int: Generator] = [:]
            var fallback: Generator?
            for (stateName, keyNode, value) in try located.namedEntries(what: "state: generator") {
                let fields = try value.fields(allowed: generatorKeys, what: "a generator")
                let (innerKey, innerNode) = try fields.one(of: generatorKeys, what: "how the value evolves in this state")
                let inner = try parseGenerator(innerKey, innerNode, symbols: symbols, stateMachine: stateMachine,
                                               earlier: earlier, type: type)
                if stateName == "default" {
                    fallback = inner
                } else {
                    guard let index = machine.index(of: stateName) else {
                        throw keyNode.error("unknown state '\(stateName)'; expected one of \(machine.states.map(\.name).joined(separator: ", ")) or default")
                    }
                    branches[index] = inner
                }
            }
            if fallback == nil, let missing = machine.states.indices.first(where: { branches[$0] == nil }) {
                throw located.error("no generator for state '\(machine.states[missing].name)'; add it or a 'default'")
            }
            return .byState(branches, fallback: fallback)

        default:
            throw located.error("unknown generator '\(key)'")
        }
    }

    /// Registers must not overlap (bits may share a register with other bits), and must fit the
    /// area sizes; missing sizes become the end of the last register.
    static func checkLayout(_ variables: [VariableDefinition], registerNodes: [Located], areaSizes: inout [DataArea: Int],
                            anchor: Located) throws(ProfileError) {
        var owners: [DataArea: [Int: (index: Int, isBit: Bool)]] = [:]
        for (index, variable) in variables.enumerated() {
            guard let placement = variable.placement else { continue }
            let isBit: Bool = { if case .bit = placement.type { true } else { false } }()
            for address in placement.address..<placement.end {
                if let owner = owners[placement.area]?[address] {
                    let other = variables[owner.index]
                    let bothBits = isBit && owner.isBit
                    if !bothBits {
                        throw registerNodes[index].error("\(placement.area.rawValue) \(address) is also used by '\(other.name)'")
                    }
                    if case .bit(let mine) = placement.type, case .bit(let theirs)? = other.placement?.type, mine == theirs {
                        throw registerNodes[index].error("bit \(mine) of \(placement.area.rawValue) \(address) is also used by '\(other.name)'")
                    }
                }
                owners[placement.area, default: [:]][address] = (index, isBit)
            }
        }
        for area in DataArea.allCases {
            let end = (owners[area]?.keys.max()).map { $0 + 1 } ?? 0
            if let size = areaSizes[area] {
                guard size >= end else {
                    throw anchor.error("the \(area.rawValue) area has registers up to \(end - 1) but its size is \(size)")
                }
            } else {
                areaSizes[area] = end
            }
        }
    }

    // MARK: - Faults

    static func parseFaults(_ located: Located) throws(ProfileError) -> FaultSet {
        if located.isNull { return FaultSet() }
        let fields = try located.fields(allowed: FaultSet.keys, what: "faults")
        var faults = FaultSet()

        /// `true`, a probability, or a mapping with `probability` (and `extra` keys); nil for false.
        func flag(_ key: String, extra: [String] = []) throws(ProfileError) -> (probability: Double, fields: Fields?)? {
            guard let value = fields[key] else { return nil }
            if value.node.mapping != nil {
                let inner = try value.fields(allowed: ["probability"] + extra, what: key)
                return (try inner["probability"]?.probability() ?? 1, inner)
            }
            if let on = try? value.bool() { return on ? (1, nil) : nil }
            guard let probability = try? value.number() else {
                throw value.error("expected true, false, a probability 0...1 or a mapping with 'probability'")
            }
            guard (0...1).contains(probability) else { throw value.error("probability \(probability) is outside 0...1") }
            return (probability, nil)
        }

        if let slow = fields["slow"] {
            if slow.node.mapping != nil {
                let inner = try slow.fields(allowed: ["delay", "jitter", "probability"], what: "a slow-response fault")
                faults.slow = FaultSet.Slow(delay: try inner.require("delay").duration(), jitter: try inner["jitter"]?.duration() ?? 0,
                                            probability: try inner["probability"]?.probability() ?? 1)
            } else if (try? slow.bool()) != false {
                faults.slow = FaultSet.Slow(delay: try slow.duration())
            }
        }
        faults.noResponse = try flag("no_response")?.probability
        if let exception = fields["exception"] {
            func code(_ node: Located) throws(ProfileError) -> ExceptionCode {
                let text = try node.string()
                guard let code = ExceptionCode.named(text) else {
                    throw node.error("unknown exception '\(text)'; expected a code 1-4, 6, 10, 11 or one of "
                                     + ExceptionCode.allCases.map(\.name).joined(separator: ", "))
                }
                return code
            }
            if exception.node.mapping != nil {
                let inner = try exception.fields(allowed: ["code", "probability"], what: "an exception fault")
                faults.exception = FaultSet.Exception(code: try code(try inner.require("code")),
                                                      probability: try inner["probability"]?.probability() ?? 1)
            } else if (try? exception.bool()) != false {
                faults.exception = FaultSet.Exception(code: try code(exception))
            }
        }
        faults.dropConnection = try flag("drop_connection")?.probability
        faults.garbled = try flag("garbled")?.probability
        faults.short = try flag("short")?.probability
        faults.truncated = try flag("truncated")?.probability
        if let wrong = try flag("wrong_unit", extra: ["unit"]) {
            var unit: UInt8?
            if let unitNode = wrong.fields?["unit"] { unit = UInt8(try unitNode.integer(in: 0...255)) }
            faults.wrongUnit = FaultSet.WrongUnit(unit: unit, probability: wrong.probability)
        }
        if let offline = fields["offline"] {
            if offline.node.mapping != nil {
                let inner = try offline.fields(allowed: ["after", "for", "every"], what: "an offline period")
                let schedule = FaultSet.Offline(after: try inner["after"]?.duration() ?? 0,
                                                duration: try inner.require("for", "how long the machine stays away").duration(),
                                                every: try inner["every"]?.duration())
                if let every = schedule.every, every <= schedule.duration, let node = inner["every"] {
                    throw node.error("'every' must be longer than 'for', or the machine never comes back")
                }
                faults.offline = schedule
            } else if (try? offline.bool()) != false {
                faults.offline = FaultSet.Offline(duration: try offline.duration())
            }
        }
        return faults
    }
}
