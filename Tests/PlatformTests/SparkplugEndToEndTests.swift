// Issue 7 end to end with Sparkplug B 3.0: uplink-sim's plant, `uplink run` with `payload:
// sparkplug`, and an MQTT recorder playing the host application. It decodes every message with the
// protobuf schema and checks the session rules: births before data, NBIRTH seq 0 and bdSeq equal to
// the will's, seq continuity 0-255 over the whole session, DDEATH/DBIRTH when a machine goes and
// returns, NDEATH by the broker on an abrupt loss, a new bdSeq per connection (also across a
// restart), NCMD rebirth, DCMD writes read back, refusals logged.
import Foundation
import MQTT
import Publisher
import Testing
import TestSupport

@Suite("Sparkplug B edge node end to end (uplink-sim -> uplink run -> mosquitto)", .serialized,
       .enabled(if: Mosquitto.isAvailable, "needs mosquitto (PITFALLS G19)"))
struct SparkplugEndToEndTests {
    typealias Payload = Org_Eclipse_Tahu_Protobuf_Payload

    struct Decoded {
        var topic: String
        var type: String
        var device: String?
        var payload: Payload
    }

    static let prefix = "spBv1.0/Plant A"

    func decode(_ messages: [Recorder.Message]) -> [Decoded] {
        messages.compactMap { message in
            let levels = message.topic.split(separator: "/").map(String.init)
            guard levels.count >= 4, let payload = try? Payload(serializedBytes: message.payload) else { return nil }
            return Decoded(topic: message.topic, type: levels[2], device: levels.count > 4 ? levels[4] : nil, payload: payload)
        }
    }

    /// Every message from the last NBIRTH before `index` on: seq 0, 1, ... 255, 0, ...
    func seqBreaks(_ session: ArraySlice<Decoded>) -> [String] {
        var expected: UInt64 = 0
        var breaks: [String] = []
        // The host's own commands are on the same tree; NDEATH has no seq.
        for message in session where !["NDEATH", "NCMD", "DCMD"].contains(message.type) {
            if message.type == "NBIRTH" { expected = 0 }
            if message.payload.seq != expected { breaks.append("\(message.type) \(message.device ?? "") seq \(message.payload.seq), expected \(expected)") }
            expected = (message.payload.seq + 1) % 256
        }
        return breaks
    }

    func bdSeq(_ message: Decoded) -> UInt64? { message.payload.metrics.first { $0.name == "bdSeq" }?.longValue }

    @Test("session rules, deaths and births of machines, DCMD writes, NCMD rebirth, bdSeq per connection and across restarts, NDEATH via the will")
    func sparkplugEdgeNode() async throws {
        let directory = TestSupport.temporaryDirectory("uplink-sp")
        defer { try? FileManager.default.removeItem(at: directory) }
        let plant = try Plant(directory: directory)
        defer { plant.stop() }
        // Sparkplug is QoS 0: the broker keeps QoS 0 messages for the host's session while it is
        // away, so a broker restart loses nothing the test looks at.
        let broker = try Mosquitto(directory: directory.appendingPathComponent("broker"), start: false)
        defer { broker.stop() }
        let brokerConfig = try String(contentsOf: broker.configFile, encoding: .utf8)
        try ("queue_qos0_messages true\n" + brokerConfig).write(to: broker.configFile, atomically: true, encoding: .utf8)
        try broker.start()
        let host = try await Recorder(port: broker.port, filters: ["spBv1.0/#"], persistent: true)
        let state = directory.appendingPathComponent("state")
        let config = try TestSupport.write("""
        agent: { name: gw, site: s1 }
        \(plant.devicesYAML(interval: "100ms"))
        mqtt: { broker: "\(broker.url)", payload: sparkplug, sparkplug: { group_id: Plant A, edge_node_id: gw }, reconnect_min: 1s, reconnect_max: 1s }

        """, to: "sp.yaml", in: directory)
        let agent = try AgentProcess(config: config, stateDirectory: state)
        defer { agent.stop() }

        // Births: NBIRTH first (seq 0, bdSeq 0 on a fresh state directory), then a DBIRTH per machine.
        #expect(await host.wait { messages in Set(decode(messages).filter { $0.type == "DBIRTH" }.compactMap(\.device)) == ["tc-01", "tc-02", "oven"] },
                "\(agent.output.suffix(1500))")
        var all = decode(host.messages)
        let nbirth = try #require(all.first)
        #expect(nbirth.type == "NBIRTH" && nbirth.topic == "\(Self.prefix)/NBIRTH/gw")
        #expect(nbirth.payload.seq == 0 && bdSeq(nbirth) == 0)
        #expect(nbirth.payload.metrics.contains { $0.name == "Node Control/Rebirth" && $0.datatype == 11 && !$0.booleanValue })
        for device in ["tc-01", "tc-02", "oven"] {
            let first = all.first { $0.device == device }
            #expect(first?.type == "DBIRTH", "\(device): first message \(first?.type ?? "none")")
        }
        let dbirth = try #require(all.first { $0.type == "DBIRTH" && $0.device == "tc-02" })
        #expect(Set(dbirth.payload.metrics.map(\.name)) == ["run", "process_value", "setpoint", "output", "status", "model"])
        #expect(dbirth.payload.metrics.allSatisfy { $0.hasAlias && $0.hasDatatype && $0.hasTimestamp })
        let aliases = Dictionary(uniqueKeysWithValues: dbirth.payload.metrics.map { ($0.name, $0.alias) })
        #expect(dbirth.payload.metrics.first { $0.name == "setpoint" }?.datatype == 10)
        #expect(dbirth.payload.metrics.first { $0.name == "model" }?.stringValue == "TC-4896")

        // A DCMD write to a machine on the serial line; the next DDATA shows the new set point.
        var setpoint = Payload.Metric()
        setpoint.name = "setpoint"
        setpoint.datatype = 10
        setpoint.doubleValue = 70
        var forbidden = Payload.Metric()
        forbidden.alias = try #require(aliases["process_value"])
        forbidden.doubleValue = 20
        var command = Payload()
        command.timestamp = UInt64(TestSupport.nowMs)
        command.metrics = [setpoint, forbidden]
        try host.publish("\(Self.prefix)/DCMD/gw/tc-02", try command.serializedBytes(), qos: .atMostOnce)
        let setpointAlias = try #require(aliases["setpoint"])
        #expect(await host.wait { messages in
            decode(messages).contains { $0.type == "DDATA" && $0.device == "tc-02" && $0.payload.metrics.contains { $0.alias == setpointAlias && $0.doubleValue == 70 } }
        }, "\(agent.logLines(containing: "msg=command"))")
        #expect(try plant.values("tc-02")["setpoint"] as? Double == 70)
        let commands = agent.logLines(containing: "msg=command")
        #expect(commands.contains { $0.contains("origin=\"sparkplug DCMD\"") && $0.contains("signal=setpoint") && $0.contains("result=written") }, "\(commands)")
        #expect(commands.contains { $0.contains("signal=process_value") && $0.contains("is not writable") }, "\(commands)")

        // A machine that goes offline dies, and is born again when it returns.
        try plant.faults("oven", #"{"offline": "60s"}"#)
        #expect(await host.wait { messages in decode(messages).contains { $0.type == "DDEATH" && $0.device == "oven" } })
        try plant.faults("oven", nil)
        #expect(await host.wait(timeout: 40) { messages in
            let oven = decode(messages).filter { $0.device == "oven" }
            return oven.lastIndex { $0.type == "DBIRTH" } ?? -1 > oven.lastIndex { $0.type == "DDEATH" } ?? .max
        }, "\(agent.output.suffix(1500))")

        // NCMD rebirth: a new NBIRTH (seq 0, same bdSeq) and every DBIRTH again.
        var rebirth = Payload.Metric()
        rebirth.name = "Node Control/Rebirth"
        rebirth.datatype = 11
        rebirth.booleanValue = true
        var ncmd = Payload()
        ncmd.timestamp = UInt64(TestSupport.nowMs)
        ncmd.metrics = [rebirth]
        try host.publish("\(Self.prefix)/NCMD/gw", try ncmd.serializedBytes(), qos: .atMostOnce)
        #expect(await host.wait { messages in decode(messages).filter { $0.type == "NBIRTH" }.count == 2 })

        // Enough messages for seq to wrap past 255.
        #expect(await host.wait(timeout: 60) { messages in decode(messages).count > 600 }, "\(decode(host.messages).count) messages")

        // A broker outage: the next connection has the next bdSeq, and what was polled meanwhile follows its births.
        broker.stop()
        #expect(await agent.waitForLog("lost the broker", timeout: 10), "\(agent.output.suffix(1500))")
        try await Task.sleep(for: .seconds(2))
        try broker.start()
        #expect(await host.wait(timeout: 30) { messages in decode(messages).filter { $0.type == "NBIRTH" }.count == 3 }, "\(agent.output.suffix(1500))")
        all = decode(host.messages)
        let third = try #require(all.last { $0.type == "NBIRTH" })
        #expect(bdSeq(third) == 1)
        // Readings polled while disconnected follow the births, marked historical.
        let historical = await host.wait { messages in
            let after = decode(messages).drop { $0.type != "NBIRTH" || bdSeq($0) != 1 }
            return after.contains { $0.type == "DDATA" && $0.payload.metrics.contains(where: \.isHistorical) }
        }
        let afterThird = decode(host.messages).drop { $0.type != "NBIRTH" || bdSeq($0) != 1 }.prefix(12).map {
            "\($0.type) \($0.device ?? "") ts \($0.payload.timestamp) m \($0.payload.metrics.map { "\($0.timestamp)\($0.isHistorical ? "h" : "")" })"
        }
        #expect(historical, "\(afterThird.joined(separator: "\n"))")

        // kill -9: the broker publishes the will, an NDEATH with the bdSeq of the last NBIRTH.
        let beforeKill = host.messages.count
        agent.kill9()
        #expect(await host.wait { messages in decode(Array(messages.dropFirst(beforeKill))).contains { $0.type == "NDEATH" } })
        all = decode(host.messages)
        let will = try #require(all.last { $0.type == "NDEATH" })
        #expect(bdSeq(will) == 1 && !will.payload.hasSeq && will.payload.metrics.count == 1)

        // The whole first run: one seq sequence per session, no break, wrapping at 255.
        let breaks = seqBreaks(all[...])
        #expect(breaks.isEmpty, "\(breaks.prefix(5))")
        #expect(all.filter { $0.type != "NDEATH" }.contains { $0.payload.seq == 255 })
        #expect(all.allSatisfy { $0.payload.hasTimestamp })
        // Data messages use aliases only.
        #expect(all.filter { $0.type == "DDATA" }.allSatisfy { $0.payload.metrics.allSatisfy { !$0.hasName && $0.hasAlias } })

        // A restart on the same state directory continues the bdSeq; a clean stop sends the NDEATH itself.
        let restarted = try AgentProcess(config: config, stateDirectory: state)
        defer { restarted.stop() }
        #expect(await host.wait { messages in decode(messages).filter { $0.type == "NBIRTH" }.count == 4 }, "\(restarted.output.suffix(1500))")
        #expect(bdSeq(try #require(decode(host.messages).last { $0.type == "NBIRTH" })) == 2)
        let beforeStop = host.messages.count
        #expect(restarted.terminate(timeout: 10) == 0, "\(restarted.output.suffix(1500))")
        #expect(await host.wait { messages in decode(Array(messages.dropFirst(beforeStop))).contains { $0.type == "NDEATH" } })
        #expect(bdSeq(try #require(decode(host.messages).last { $0.type == "NDEATH" })) == 2)
        await host.stop()
    }
}
