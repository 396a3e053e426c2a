import Testing
@testable import UplinkConfig
import UplinkCore

@Suite("Config loader")
struct ConfigLoaderTests {
    func load(_ yaml: String, env: [String: String] = [:]) throws -> UplinkConfiguration {
        try ConfigLoader.parse(yaml, file: "t.yaml", environment: env)
    }

    func signalYAML(_ fields: String) -> String {
        """
        devices:
          - name: d
            tcp: { host: 127.0.0.1 }
            signals:
              - { name: s, \(fields) }
        """
    }

    func onlySignal(_ fields: String) throws -> Signal {
        let config = try load(signalYAML(fields))
        return try #require(config.devices.first?.signals.first)
    }

    @Test(arguments: [
        ("area: holding, address: 0", Area.holdingRegister, 0),
        ("area: holding, address: 40001", .holdingRegister, 40001),          // plain number: PDU address, never Modicon
        ("area: holding, address: \"40001\"", .holdingRegister, 0),           // quoted: Modicon 5-digit
        ("address: 400001", .holdingRegister, 0),                             // 6-digit over 65535: Modicon, sets the area
        ("address: 465536", .holdingRegister, 65535),
        ("address: 4x0010", .holdingRegister, 9),
        ("address: 3x00100", .inputRegister, 99),
        ("address: \"000005\"", .coil, 4),
        ("address: 100001", .discreteInput, 0),
        ("area: input, address: \"30001\"", .inputRegister, 0),
    ])
    func addresses(_ fields: String, _ area: Area, _ address: Int) throws {
        let type = area.isBitArea ? "bool" : "uint16"
        let signal = try onlySignal("\(fields), type: \(type)")
        #expect(signal.area == area)
        #expect(signal.address == address)
    }

    @Test func environmentSubstitution() throws {
        let yaml = """
        devices:
          - name: d
            tcp: { host: "${HOST}", port: "${PORT:-1502}" }
            signals: [{ name: s, area: holding, address: "${ADDR:-7}", type: uint16, unit: "${UNIT}x" }]
        """
        let config = try load(yaml, env: ["HOST": "10.0.0.5", "UNIT": "k"])
        let device = try #require(config.devices.first)
        #expect(device.transport == .tcp(host: "10.0.0.5", port: 1502))
        #expect(device.signals.first?.unit == "kx")
        let overridden = try load(yaml, env: ["HOST": "h", "PORT": "2000", "UNIT": ""])
        #expect(overridden.devices.first?.transport == .tcp(host: "h", port: 2000))
    }

    @Test func substitutionCannotInjectStructure() throws {
        // A value that looks like YAML stays a plain string.
        let yaml = signalYAML("area: holding, address: 0, type: uint16, unit: \"${U}\"")
        let config = try load(yaml, env: ["U": "{ evil: true }"])
        #expect(config.devices.first?.signals.first?.unit == "{ evil: true }")
    }

    @Test func defaultsApplyAndDevicesOverride() throws {
        let config = try load("""
        defaults: { interval: 250ms, timeout: 2s, retries: 3, max_gap: 0 }
        devices:
          - name: a
            tcp: { host: h }
            signals: [{ name: s, area: holding, address: 0, type: uint16 }]
          - name: b
            tcp: { host: h }
            interval: 5s
            signals: [{ name: s, area: holding, address: 0, type: uint16, interval: 1m }]
        """)
        let a = config.devices[0], b = config.devices[1]
        #expect(a.poll.intervalMs == 250 && a.poll.timeoutMs == 2000 && a.poll.retries == 3 && a.poll.maxGap == 0)
        #expect(a.signals[0].intervalMs == 250)
        #expect(b.poll.intervalMs == 5000 && b.poll.timeoutMs == 2000)
        #expect(b.signals[0].intervalMs == 60_000)
    }

    @Test func mergeKeysAndAnchorsWork() throws {
        let config = try load("""
        devices:
          - &press
            name: a
            tcp: { host: 127.0.0.1, port: 5020 }
            interval: 2s
            signals: [{ name: s, area: holding, address: 0, type: uint16 }]
          - <<: *press
            name: b
            tcp: { host: 127.0.0.2, port: 5020 }
        """)
        #expect(config.devices.map(\.name) == ["a", "b"])
        #expect(config.devices[1].poll.intervalMs == 2000, "merged from a")
        #expect(config.devices[1].transport == .tcp(host: "127.0.0.2", port: 5020), "explicit key wins over the merge")
        #expect(config.devices[1].signals == config.devices[0].signals)
    }

    @Test func serialDevicesShareTheirBus() throws {
        let config = try load("""
        serial_buses: { line1: { port: /dev/ttyS1, baud: 115200, parity: e, stop_bits: 2 } }
        devices:
          - { name: m1, rtu: { bus: line1 }, unit: 1, signals: [{ name: v, area: input, address: 0, type: uint16 }] }
          - { name: m2, rtu: { bus: line1 }, unit: 2, signals: [{ name: v, area: input, address: 0, type: uint16 }] }
        """)
        let expected = Transport.rtu(bus: "line1", settings: SerialSettings(port: "/dev/ttyS1", baud: 115200, parity: .even, dataBits: 8, stopBits: 2))
        #expect(config.devices.map(\.transport) == [expected, expected])
    }

    @Test func rtuUnitZeroIsRefused() {
        #expect(throws: ConfigError.self) {
            try load("""
            serial_buses: { line1: { port: /dev/ttyS1 } }
            devices:
              - { name: m1, rtu: { bus: line1 }, unit: 0, signals: [{ name: v, area: input, address: 0, type: uint16 }] }
            """)
        }
    }

    @Test(arguments: [("250ms", 250), ("1s", 1000), ("1.5s", 1500), ("2m", 120_000), ("1h", 3_600_000), ("7d", 604_800_000)])
    func durations(_ text: String, _ ms: Int) {
        #expect(YAMLReader.parseDuration(text) == ms)
    }

    @Test(arguments: ["5", "1 s", "s", "-1s", "1w", "ms", "1e400s"])
    func badDurations(_ text: String) {
        #expect(YAMLReader.parseDuration(text) == nil)
    }

    @Test func everyProblemIsReportedNotOnlyTheFirst() throws {
        let error = try #require(throws: ConfigError.self) {
            try load("""
            devices:
              - name: a
                tcp: { host: h, port: 0 }
                signals: [{ name: s, area: holding, address: 0, type: nope }]
              - name: b
                tcp: { host: h }
                colour: red
                signals: [{ name: s, area: holding, address: 0, type: uint16 }]
            """)
        }
        #expect(error.issues.map(\.path) == ["devices[0].tcp.port", "devices[0].signals[0].type", "devices[1].colour"])
    }

    @Test func cliAddressRules() throws {
        #expect(try AddressText.resolve("17", area: .holdingRegister).get() == (.holdingRegister, 17))
        #expect(try AddressText.resolve("400010", area: nil).get() == (.holdingRegister, 9))
        #expect(try AddressText.resolve("3x0002", area: .inputRegister).get() == (.inputRegister, 1))
        #expect(throws: AddressText.Failure.self) { try AddressText.resolve("17", area: nil).get() }
        #expect(throws: AddressText.Failure.self) { try AddressText.resolve("300001", area: .holdingRegister).get() }
        #expect(throws: AddressText.Failure.self) { try AddressText.resolve("abc", area: .coil).get() }
    }
}
