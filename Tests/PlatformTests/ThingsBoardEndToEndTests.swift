// Issue 7 end to end with ThingsBoard's gateway API: uplink-sim serves three temperature
// controllers (two on an RS-485 line over a pty), `uplink run` publishes with `payload:
// thingsboard`, and an MQTT recorder plays ThingsBoard: it checks the JSON shapes of
// v1/gateway/connect, /attributes, /telemetry, /disconnect, and sends RPCs on v1/gateway/rpc.
import Foundation
import MQTT
import Testing
import TestSupport

@Suite("ThingsBoard gateway end to end (uplink-sim -> uplink run -> mosquitto)", .serialized,
       .enabled(if: Mosquitto.isAvailable, "needs mosquitto (PITFALLS G19)"))
struct ThingsBoardEndToEndTests {
    @Test("gateway API shapes, aggregated telemetry within the limit, attributes, device state, RPC writes read back, refusals")
    func thingsBoardGateway() async throws {
        let directory = TestSupport.temporaryDirectory("uplink-tb")
        defer { try? FileManager.default.removeItem(at: directory) }
        let plant = try Plant(directory: directory)
        defer { plant.stop() }
        let broker = try Mosquitto(directory: directory.appendingPathComponent("broker"))
        defer { broker.stop() }
        let recorder = try await Recorder(port: broker.port, filters: ["v1/gateway/#"])
        let token = "tb-\(UUID().uuidString.prefix(12))"
        let config = try TestSupport.write("""
        agent: { name: gw, site: s1 }
        \(plant.devicesYAML())
        mqtt: { broker: "\(broker.url)", payload: thingsboard, username_env: TB_TOKEN, max_message_size: 2KB, reconnect_min: 1s, reconnect_max: 1s }

        """, to: "tb.yaml", in: directory)
        let agent = try AgentProcess(config: config, stateDirectory: directory.appendingPathComponent("state"), environment: ["TB_TOKEN": token])
        defer { agent.stop() }
        #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")

        // Every machine is announced with its type, then its data flows.
        #expect(await recorder.wait { messages in
            Set(messages.filter { $0.topic == "v1/gateway/connect" }.compactMap { $0.json["device"] as? String }) == ["tc-01", "tc-02", "oven"]
        }, "\(recorder.messages.map(\.topic))")
        for connect in recorder.messages(on: "v1/gateway/connect") {
            #expect(connect.json.keys.sorted() == ["device", "type"] && connect.json["type"] as? String == "temperature-controller", "\(connect.text)")
        }
        #expect(await recorder.wait { messages in
            Set(messages.filter { $0.topic == "v1/gateway/telemetry" }.flatMap { $0.json.keys }) == ["tc-01", "tc-02", "oven"]
        })
        // Attributes: the model register (attribute: true), the state.
        #expect(await recorder.wait { messages in
            messages.contains { $0.topic == "v1/gateway/attributes" && ($0.json["tc-02"] as? [String: Any])?["model"] as? String == "TC-4896" }
        }, "\(recorder.messages(on: "v1/gateway/attributes").map(\.text))")
        #expect(recorder.messages(on: "v1/gateway/attributes").contains { ($0.json["oven"] as? [String: Any])?["online"] as? Bool == true })
        // The access token is the MQTT username, and never in the log.
        #expect(broker.outputText.contains("u'\(token)'"), "\(broker.outputText.suffix(800))")
        #expect(!agent.output.contains(token))

        // RPC: a set point written to a machine on the serial bus, answered, and read back by the next poll.
        try recorder.publish("v1/gateway/rpc", Array(#"{"device":"tc-01","data":{"id":1,"method":"set","params":{"signal":"setpoint","value":65}}}"#.utf8))
        #expect(await recorder.wait { messages in
            messages.contains { $0.topic == "v1/gateway/rpc" && $0.json["id"] as? Int == 1 && ($0.json["data"] as? [String: Any])?["success"] as? Bool == true }
        }, "\(recorder.messages(on: "v1/gateway/rpc").map(\.text)) \(agent.output.suffix(1500))")
        #expect(await recorder.wait { messages in
            messages.contains { message in
                message.topic == "v1/gateway/telemetry" && (message.json["tc-01"] as? [[String: Any]] ?? []).contains {
                    ($0["values"] as? [String: Any])?["setpoint"] as? Double == 65
                }
            }
        }, "the new set point was not read back")
        #expect(try plant.values("tc-01")["setpoint"] as? Double == 65)
        #expect(agent.logLines(containing: "msg=command").contains { $0.contains("origin=\"thingsboard rpc 1\"") && $0.contains("result=written") },
                "\(agent.logLines(containing: "msg=command"))")

        // Forbidden writes are refused with a reason, logged, and change nothing.
        try recorder.publish("v1/gateway/rpc", Array(#"{"device":"tc-02","data":{"id":2,"method":"set","params":{"signal":"process_value","value":20}}}"#.utf8))
        try recorder.publish("v1/gateway/rpc", Array(#"{"device":"tc-02","data":{"id":3,"method":"set_setpoint","params":350}}"#.utf8))
        #expect(await recorder.wait { messages in
            let replies = messages.filter { $0.topic == "v1/gateway/rpc" && $0.json["data"] != nil && $0.json["id"] != nil }
            return [2, 3].allSatisfy { id in replies.contains { $0.json["id"] as? Int == id } }
        })
        let replies = Dictionary(recorder.messages(on: "v1/gateway/rpc").compactMap { m -> (Int, [String: Any])? in
            guard let id = m.json["id"] as? Int, let data = m.json["data"] as? [String: Any] else { return nil }
            return (id, data)
        }, uniquingKeysWith: { a, _ in a })
        #expect(replies[2]?["success"] as? Bool == false)
        #expect((replies[2]?["error"] as? String)?.contains("signal 'process_value' is not writable") == true, "\(replies[2] ?? [:])")
        #expect((replies[3]?["error"] as? String)?.contains("350 is outside the allowed range of 'setpoint' (0 to 300)") == true, "\(replies[3] ?? [:])")
        #expect(try plant.values("tc-02")["setpoint"] as? Double == 180)
        #expect(agent.logLines(containing: "msg=command").filter { $0.contains("result=\"refused:") }.count == 2)

        // A machine that goes offline is disconnected, and connected again when it returns.
        try plant.faults("oven", #"{"offline": "60s"}"#)
        #expect(await recorder.wait { messages in
            messages.contains { $0.topic == "v1/gateway/disconnect" && $0.json["device"] as? String == "oven" }
        }, "\(agent.output.suffix(1500))")
        #expect(recorder.messages(on: "v1/gateway/attributes").contains {
            ($0.json["oven"] as? [String: Any])?["online"] as? Bool == false && ($0.json["oven"] as? [String: Any])?["quality"] as? String == "offline"
        })
        let connectsBefore = recorder.messages(on: "v1/gateway/connect").filter { $0.json["device"] as? String == "oven" }.count
        try plant.faults("oven", nil)
        #expect(await recorder.wait(timeout: 40) { messages in
            messages.filter { $0.topic == "v1/gateway/connect" && $0.json["device"] as? String == "oven" }.count > connectsBefore
        }, "\(agent.output.suffix(1500))")

        // A lost connection (another client takes the gateway's client id): the polls of the gap are
        // sent after the reconnect, several per message.
        // (The intruder does not come back when the agent takes its id back.)
        let intruder = try MQTTClient(MQTTOptions(host: "127.0.0.1", port: broker.port, clientID: "uplink-gw",
                                                  reconnect: MQTTReconnectPolicy(initialDelay: .seconds(120), maxDelay: .seconds(120))))
        try intruder.start()
        try await intruder.waitUntilConnected(timeout: .seconds(10))
        #expect(await agent.waitForLog("lost the broker", timeout: 10), "\(agent.output.suffix(1500))")
        #expect(await agent.waitForLog("connected to the broker", count: 2, timeout: 30), "\(agent.output.suffix(1500))")
        await intruder.disconnect()
        #expect(await recorder.wait { messages in
            messages.contains { $0.topic == "v1/gateway/telemetry" && $0.json.values.reduce(0) { $0 + (($1 as? [Any])?.count ?? 0) } >= 3 }
        }, "no aggregated telemetry")

        #expect(agent.terminate(timeout: 10) == 0, "\(agent.output.suffix(1500))")
        await recorder.stop()

        // The shapes ThingsBoard's gateway API expects, in every message.
        let telemetry = recorder.messages(on: "v1/gateway/telemetry")
        #expect(telemetry.count > 10)
        for message in telemetry {
            #expect(message.payload.count <= 2048, "\(message.payload.count) bytes")
            for (device, entries) in message.json {
                let list = entries as? [[String: Any]] ?? []
                #expect(!list.isEmpty, "\(device): \(message.text)")
                for entry in list {
                    #expect(entry["ts"] is Int && Set(entry.keys) == ["ts", "values"], "\(message.text)")
                    let values = entry["values"] as? [String: Any] ?? [:]
                    #expect(!values.isEmpty && values["model"] == nil && !values.values.contains { $0 is NSNull }, "\(message.text)")
                }
            }
        }
        for message in recorder.messages(on: "v1/gateway/attributes") {
            #expect(message.json.values.allSatisfy { $0 is [String: Any] }, "\(message.text)")
        }
        // Each device's telemetry timestamps never go back.
        for device in ["tc-01", "tc-02", "oven"] {
            let times = telemetry.flatMap { ($0.json[device] as? [[String: Any]] ?? []).compactMap { $0["ts"] as? Int } }
            #expect(times == times.sorted(), "\(device)")
        }
        // A clean stop says goodbye for every connected machine.
        #expect(Set(recorder.messages(on: "v1/gateway/disconnect").suffix(3).compactMap { $0.json["device"] as? String }) == ["tc-01", "tc-02", "oven"])
    }
}
