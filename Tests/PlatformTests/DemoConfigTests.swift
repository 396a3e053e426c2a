import Foundation
import Testing
import TestSupport
import UplinkConfig
import UplinkCore

/// Configs/demo-thingsboard.yaml and Configs/demo-sparkplug.yaml poll exactly what Configs/demo.yaml
/// polls (which SimulatorTests checks against Simulators/demo.yaml), with their profile.
@Suite("Demo configs for the platform profiles")
struct DemoConfigTests {
    static func load(_ name: String) throws -> UplinkConfiguration {
        try ConfigLoader.load(path: TestSupport.repoRoot.appendingPathComponent("Configs/\(name)").path, environment: [:])
    }

    /// What is read from a machine, without the platform keys.
    static func polled(_ config: UplinkConfiguration) -> [String] {
        config.devices.flatMap { device in
            device.signals.map { s in
                "\(device.name) \(device.transport) unit \(device.unit) every \(device.poll.intervalMs) \(s.name) \(s.area) \(s.address) \(s.type) \(s.order) \(s.scale) \(s.offset) \(s.unit ?? "-")"
            }
        }
    }

    @Test(arguments: [("demo-thingsboard.yaml", PayloadKind.thingsboard), ("demo-sparkplug.yaml", .sparkplug)])
    func pollsTheDemoFactoryWithItsProfile(_ file: String, _ kind: PayloadKind) throws {
        let demo = try Self.load("demo.yaml")
        let config = try Self.load(file)
        #expect(Self.polled(config) == Self.polled(demo))
        #expect(config.agent == demo.agent)
        #expect(config.mqtt?.payload == kind.rawValue)
        #expect(config.devices.allSatisfy { $0.type != nil })
        // Commands: the set points the simulator accepts, and nothing it would refuse.
        let writable = config.devices.flatMap { d in d.signals.filter { $0.writable != nil }.map { "\(d.name).\($0.name)" } }
        #expect(writable.contains("tc-01.setpoint") && writable.contains("imm-02.nozzle_setpoint") && writable.contains("compressor-01.load_pressure"))
        #expect(!writable.contains { $0.hasSuffix("_temp") || $0.contains("meter") })
        // Report by exception is on for every signal.
        #expect(config.devices.allSatisfy { $0.signals.allSatisfy { !$0.report.reportsEveryPoll } })
        if kind == .sparkplug {
            #expect(config.mqtt?.sparkplug == SparkplugSettings(groupID: "plant-1", edgeNodeID: "demo-gateway"))
            #expect(config.mqtt?.qos == 0)
        }
    }
}
