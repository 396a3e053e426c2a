import Testing
import UplinkConfig
import UplinkCore

/// Issue 7's keys: payload profiles, Sparkplug identity, the token as username, device types,
/// writable signals, report by exception; every problem with file:line:column and key path.
@Suite("Platform keys (profiles, commands, report by exception)")
struct PlatformConfigTests {
    func load(_ yaml: String) throws(ConfigError) -> UplinkConfiguration {
        try ConfigLoader.parse(yaml, file: "p.yaml")
    }

    func issues(_ yaml: String) -> [String] {
        do {
            _ = try load(yaml)
            return []
        } catch {
            return error.issues.map(\.description)
        }
    }

    let devices = """
    agent: { name: gw-7, site: plant-3 }
    defaults: { heartbeat: 1m, deadband_percent: 0.5 }
    devices:
      - name: tc-01
        type: temperature-controller
        tcp: { host: 127.0.0.1 }
        deadband: 0.2
        signals:
          - { name: pv, area: holding, address: 0, type: int16, scale: 0.1 }
          - { name: sp, area: holding, address: 1, type: int16, scale: 0.1, writable: { min: 0, max: 400 }, heartbeat: 10s }
          - { name: run, area: coil, address: 0, type: bool, writable: true }
          - { name: model, area: holding, address: 20, type: string, registers: 6, attribute: true }
          - { name: count, area: holding, address: 30, type: uint32, deadband: 0, writable: false }
      - name: m-02
        tcp: { host: 127.0.0.1 }
        signals:
          - { name: v, area: input, address: 0, type: float32 }

    """

    @Test func signalsDevicesAndInheritance() throws {
        let config = try load(devices)
        let tc = try #require(config.devices.first)
        #expect(tc.type == "temperature-controller")
        #expect(tc.platformType == "temperature-controller")
        #expect(config.devices[1].platformType == "m")
        let s = Dictionary(uniqueKeysWithValues: tc.signals.map { ($0.name, $0) })
        // The device's absolute deadband replaces the defaults' percentage; the heartbeat is inherited.
        #expect(s["pv"]?.report == ReportPolicy(deadband: .absolute(0.2), heartbeatMs: 60_000))
        #expect(s["sp"]?.report == ReportPolicy(deadband: .absolute(0.2), heartbeatMs: 10_000))
        #expect(s["sp"]?.writable == WriteAccess(min: 0, max: 400))
        #expect(s["run"]?.writable == .unbounded)
        // A bool under a device deadband is reported on any change.
        #expect(s["run"]?.report == ReportPolicy(deadband: .absolute(0), heartbeatMs: 60_000))
        #expect(s["model"]?.attribute == true && s["pv"]?.attribute == false)
        #expect(s["count"]?.writable == nil)
        #expect(s["count"]?.report.deadband == .absolute(0))
        #expect(config.devices[1].signals[0].report == ReportPolicy(deadband: .percent(0.5), heartbeatMs: 60_000))
    }

    @Test func withoutReportKeysEveryPollIsReported() throws {
        let config = try load("""
        devices:
          - { name: d, tcp: { host: h }, signals: [{ name: s, area: holding, address: 0, type: uint16 }] }
        """)
        #expect(config.devices[0].signals[0].report == .everyPoll)
        #expect(config.devices[0].signals[0].writable == nil)
        #expect(config.devices[0].type == nil)
    }

    @Test func sparkplugProfile() throws {
        let config = try load(devices + """
        mqtt: { broker: "mqtt://127.0.0.1", payload: sparkplug, sparkplug: { group_id: Plant 3, edge_node_id: gw-7 } }
        """)
        let mqtt = try #require(config.mqtt)
        #expect(mqtt.payload == "sparkplug")
        #expect(mqtt.qos == 0)
        #expect(mqtt.sparkplug == SparkplugSettings(groupID: "Plant 3", edgeNodeID: "gw-7"))
        // Without the section the node is named after the agent.
        let defaulted = try load(devices + "mqtt: { payload: sparkplug }\n")
        #expect(defaulted.mqtt?.sparkplug == SparkplugSettings(groupID: "plant-3", edgeNodeID: "gw-7"))
    }

    @Test func thingsBoardProfile() throws {
        let config = try load(devices + """
        mqtt: { payload: thingsboard, username_env: TB_TOKEN }
        """)
        let mqtt = try #require(config.mqtt)
        #expect(mqtt.maxMessageBytes == 64 * 1024)
        #expect(mqtt.qos == 1)
        #expect(mqtt.usernameSource == .environment("TB_TOKEN"))
        #expect(mqtt.username == nil)
        let file = try load(devices + "mqtt: { payload: thingsboard, username_file: /etc/uplink/tb-token, max_message_size: 32KB }\n")
        #expect(file.mqtt?.usernameSource == .file("/etc/uplink/tb-token"))
        #expect(file.mqtt?.maxMessageBytes == 32 * 1024)
    }

    @Test func problemsNameFileLineAndKey() {
        let found = issues("""
        devices:
          - name: d
            type: ""
            tcp: { host: h }
            signals:
              - { name: a, area: input, address: 0, type: uint16, writable: true }
              - { name: b, area: holding, address: 1, type: uint16, writable: { min: 5, max: 1 } }
              - { name: c, area: coil, address: 0, type: bool, deadband: 1 }
              - { name: e, area: holding, address: 2, type: uint16, deadband: 1, deadband_percent: 2 }
              - { name: f, area: holding, address: 3, type: uint16, deadband: -1, heartbeat: 5 }
              - { name: g, area: holding, address: 4, type: string, registers: 2, writable: { max: 3 } }
              - { name: h, area: holding, address: 6, type: uint16, writable: maybe }
        mqtt: { payload: sparkplug, qos: 1, data_topic: "x/{device}", sparkplug: { group_id: "a/b", node: x } }
        """)
        let expected = [
            "p.yaml:3:11: devices[0].type: '' is not a device type",
            "p.yaml:6:69: devices[0].signals[0].writable: an input register cannot be written by Modbus",
            "p.yaml:7:86: devices[0].signals[1].writable.max: max 1 is below min 5;",
            "p.yaml:8:66: devices[0].signals[2].deadband: a deadband applies to numbers",
            "p.yaml:9:92: devices[0].signals[3].deadband_percent: give either deadband",
            "p.yaml:10:71: devices[0].signals[4].deadband: a deadband cannot be negative",
            "p.yaml:10:86: devices[0].signals[4].heartbeat: expected a duration with a unit",
            "p.yaml:11:85: devices[0].signals[5].writable: bounds apply to numbers",
            "p.yaml:12:71: devices[0].signals[6].writable: expected true or false, found 'maybe'",
            "p.yaml:13:34: mqtt.qos: Sparkplug B requires QoS 0",
            "p.yaml:13:49: mqtt.data_topic: data_topic applies to payload json",
            "p.yaml:13:86: mqtt.sparkplug.group_id: 'a/b' cannot be a Sparkplug id",
            "p.yaml:13:99: mqtt.sparkplug.node: unknown key 'node'",
        ]
        for prefix in expected {
            #expect(found.contains { $0.hasPrefix(prefix) }, "\(prefix)\nin:\n\(found.joined(separator: "\n"))")
        }
        #expect(found.count == expected.count, "\(found.joined(separator: "\n"))")
    }

    @Test func profileKeysOutsideTheirProfile() {
        let found = issues(devices + """
        mqtt: { payload: json, sparkplug: { group_id: g }, username: u, username_env: U }
        """)
        #expect(found.contains { $0.contains("mqtt.sparkplug: the sparkplug settings apply to payload: sparkplug") }, "\(found)")
        #expect(found.contains { $0.contains("mqtt.username_env: give one of username, username_file or username_env") }, "\(found)")
        #expect(issues(devices + "mqtt: { payload: mqtt-json }\n").first?.contains("expected one of json, thingsboard, sparkplug") == true)
    }
}
