// Configs/*.yaml (what the agent polls) must match Simulators/*.yaml (what the simulator serves):
// same names, areas, addresses, types, byte orders and scales, same endpoints for the demo.

import Foundation
import Testing
import Yams
@testable import Simulator

/// The signals of one device in an agent config, as plain strings.
struct ConfigDevice {
    var name: String
    var tcpPort: Int?
    var bus: String?
    var unit: Int
    var signals: [String: [String: String]]
}

func configDevices(_ path: String) throws -> (devices: [ConfigDevice], buses: [String: [String: String]]) {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    guard let root = try Yams.compose(yaml: text), let devices = root["devices"]?.sequence else {
        throw TestError.failed("\(path): no devices")
    }
    func strings(_ node: Node?) -> [String: String] {
        var out: [String: String] = [:]
        for (key, value) in node?.mapping ?? [:] { if let key = key.string, let value = value.string { out[key] = value } }
        return out
    }
    var buses: [String: [String: String]] = [:]
    for (key, value) in root["serial_buses"]?.mapping ?? [:] { if let key = key.string { buses[key] = strings(value) } }
    let parsed = devices.map { device -> ConfigDevice in
        var signals: [String: [String: String]] = [:]
        for signal in device["signals"]?.sequence ?? [] {
            let fields = strings(signal)
            signals[fields["name"] ?? ""] = fields
        }
        return ConfigDevice(name: device["name"]?.string ?? "", tcpPort: device["tcp"]?["port"]?.int,
                            bus: device["rtu"]?["bus"]?.string, unit: device["unit"]?.int ?? 1, signals: signals)
    }
    return (parsed, buses)
}

/// Differences between a config device's signals and a machine's served registers.
func mismatches(_ device: ConfigDevice, _ machine: MachineDefinition) -> [String] {
    var problems: [String] = []
    let served = machine.variables.filter { $0.placement != nil }
    if Set(device.signals.keys) != Set(served.map(\.name)) {
        problems.append("\(device.name): signals \(Set(device.signals.keys).symmetricDifference(served.map(\.name)))")
    }
    for variable in served {
        guard let placement = variable.placement, let signal = device.signals[variable.name] else { continue }
        var expected: [String: String] = ["area": placement.area.rawValue, "address": String(placement.address), "type": placement.type.name]
        switch placement.type {
        case .bit(let bit): expected["bit"] = String(bit)
        case .string(let registers): expected["registers"] = String(registers)
        default: if placement.type.width > 1 { expected["order"] = placement.order.rawValue }
        }
        if placement.scale != 1 { expected["scale"] = JSON.number(placement.scale).text }
        if let unit = variable.unit { expected["unit"] = unit }
        for (key, value) in expected where signal[key] != value {
            problems.append("\(device.name).\(variable.name).\(key): config \(signal[key] ?? "-"), profile \(value)")
        }
    }
    return problems
}

@Suite("Agent configs match the simulator")
struct ConfigsTests {
    @Test("Configs/<profile>.yaml polls the profile's register map on its default port", arguments: Paths.profiles)
    func profileConfig(profile: String) throws {
        let machine = try loadProfile(profile)
        let (devices, _) = try configDevices(Paths.config("\(profile).yaml"))
        let device = try #require(devices.first)
        #expect(devices.count == 1)
        guard case .tcp(_, let port, let unit) = machine.endpoint else { Issue.record("profile serves no TCP"); return }
        #expect(device.tcpPort == port && device.unit == Int(unit))
        let problems = mismatches(device, machine)
        #expect(problems.isEmpty, "\(problems)")
    }

    @Test("Configs/demo.yaml polls exactly the demo's machines")
    func demoConfig() throws {
        let scenario = try ProfileLoader.load(path: Paths.simulator("demo.yaml"))
        let (devices, buses) = try configDevices(Paths.config("demo.yaml"))
        #expect(devices.map(\.name) == scenario.machines.map(\.name))
        for (device, machine) in zip(devices, scenario.machines) {
            switch machine.endpoint {
            case .tcp(_, let port, let unit):
                #expect(device.tcpPort == port && device.unit == Int(unit), "\(device.name)")
            case .rtu(let bus, let unit):
                let link = scenario.serialBuses.first { $0.name == bus }?.link
                #expect(device.bus.flatMap { buses[$0]?["port"] } == link && device.unit == Int(unit), "\(device.name)")
            }
            let problems = mismatches(device, machine)
            #expect(problems.isEmpty, "\(problems)")
        }
    }
}
