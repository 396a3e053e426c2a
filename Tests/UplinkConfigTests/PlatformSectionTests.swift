import Testing
import UplinkConfig
import UplinkCore

@Suite("mqtt and buffer sections")
struct PlatformSectionTests {
    let device = """
    devices:
      - { name: d, tcp: { host: h }, signals: [{ name: s, area: holding, address: 0, type: uint16 }] }
    """

    @Test func defaultsWhenAbsent() throws {
        let config = try ConfigLoader.parse(device, file: "t.yaml")
        #expect(config.mqtt == nil)
        #expect(config.buffer == BufferSettings())
    }

    @Test func everyKey() throws {
        let config = try ConfigLoader.parse(device + """

        mqtt:
          broker: mqtts://broker.example.com
          client_id: gw-7
          protocol: "5"
          qos: 2
          username: gw
          password_env: MQTT_PW
          keepalive: 45s
          tls: { ca_file: /etc/uplink/ca.pem, cert_file: /etc/uplink/c.pem, key_file: /etc/uplink/k.pem }
          topic_prefix: factory
          data_topic: "{prefix}/{site}/{agent}/{device}"
          status_topic: "{prefix}/{agent}/state"
          max_inflight: 10
          max_message_size: 64KB
          reconnect_min: 500ms
          reconnect_max: 2m
          payload: json
        buffer: { max_size: 1GB, max_age: 2d, when_full: drop_newest, late_after: 30s }
        """, file: "t.yaml")
        let mqtt = try #require(config.mqtt)
        #expect(mqtt.host == "broker.example.com" && mqtt.port == 8883)
        #expect(mqtt.tls == MQTTSettings.TLS(caFile: "/etc/uplink/ca.pem", certFile: "/etc/uplink/c.pem", keyFile: "/etc/uplink/k.pem"))
        #expect(mqtt.clientID == "gw-7" && mqtt.protocolVersion == .v5 && mqtt.qos == 2)
        #expect(mqtt.username == "gw" && mqtt.password == .environment("MQTT_PW"))
        #expect(mqtt.keepaliveSeconds == 45 && mqtt.maxInflight == 10 && mqtt.maxMessageBytes == 65536)
        #expect(mqtt.dataTopic == "{prefix}/{site}/{agent}/{device}" && mqtt.statusTopic == "{prefix}/{agent}/state" && mqtt.topicPrefix == "factory")
        #expect(mqtt.reconnectMinMs == 500 && mqtt.reconnectMaxMs == 120_000)
        #expect(config.buffer == BufferSettings(maxBytes: 1 << 30, maxAgeMs: 2 * 86_400_000, whenFull: .dropNewest, lateAfterMs: 30_000))
    }

    @Test(arguments: [
        ("mqtt: { broker: http://x }", "mqtt.broker: 'http://x' has no mqtt:// or mqtts:// scheme"),
        ("mqtt: { broker: \"mqtt://h:99999\" }", "bad port"),
        ("mqtt: { qos: 3 }", "mqtt.qos: 3 is out of range; expected a QoS level from 0 to 2"),
        ("mqtt: { data_topic: \"a/+/b\" }", "expected a topic without + or # wildcards"),
        ("mqtt: { data_topic: \"a/{site}\" }", "the data topic must contain {device}"),
        ("mqtt: { data_topic: \"a/{devcie}\" }", "unknown placeholder {devcie}"),
        ("mqtt: { password_file: /a, password_env: B }", "give either password_file or password_env, not both"),
        ("mqtt: { tls: { cert_file: /c.pem } }", "needs both cert_file and key_file"),
        ("mqtt: { payload: xml }", "unknown payload profile 'xml'; expected one of json"),
        ("mqtt: { reconnect_min: 10s, reconnect_max: 1s }", "reconnect_max is below reconnect_min"),
        ("mqtt: { passwd: x }", "unknown key 'passwd'"),
        ("buffer: { max_size: 10 apples }", "expected a size like 512KB, 64MB or 2GB, found '10 apples'"),
        ("buffer: { max_size: 1KB }", "1KB is out of range; expected a size from 1MB to 1TB"),
        ("buffer: { when_full: block }", "unknown policy 'block'; expected drop_oldest or drop_newest"),
    ])
    func errors(_ section: String, _ message: String) throws {
        let error = try #require(throws: ConfigError.self) { try ConfigLoader.parse(device + "\n" + section, file: "t.yaml") }
        #expect(error.description.contains(message), "\(error)")
        #expect(error.issues.allSatisfy { $0.line >= 3 })
    }

    @Test(arguments: [
        ("mqtt://127.0.0.1", "127.0.0.1", 1883, false), ("mqtt://h:1884", "h", 1884, false),
        ("mqtts://h", "h", 8883, true), ("mqtts://[::1]:9000", "::1", 9000, true), ("tcp://h:1/", "h", 1, false),
    ])
    func brokerURLs(_ text: String, _ host: String, _ port: Int, _ tls: Bool) throws {
        #expect(try BrokerURL.parse(text).get() == BrokerURL(host: host, port: port, tls: tls))
    }
}
