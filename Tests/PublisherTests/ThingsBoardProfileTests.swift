import Buffer
import Foundation
import Testing
@testable import Publisher
import UplinkCore

@Suite("ThingsBoard gateway profile")
struct ThingsBoardProfileTests {
    func profile(limit: Int = 64 * 1024, cache: LastValueCache = LastValueCache()) -> ThingsBoardProfile {
        ThingsBoardProfile(devices: [Fixture.tc, Fixture.meter], maxMessageBytes: limit, lastValues: cache)
    }

    @Test func manyDevicesAndPollsInOneTelemetryMessage() throws {
        var tb = profile()
        _ = tb.sessionStarted(now: 0)
        let batches = [
            Fixture.batch(Fixture.tc, ts: 1000, seq: 1, values: ["pv": .double(180.2), "setpoint": .double(180), "run": .bool(true)]),
            Fixture.batch(Fixture.meter, ts: 1000, seq: 4, values: ["count": .uint(7), "energy": .double(12.5)]),
            Fixture.batch(Fixture.tc, ts: 2000, seq: 6, values: ["pv": .double(180.4)]),
        ]
        let output = tb.messages(for: batches, now: 2500)
        // One telemetry message, then the machines' state (first seen) in one attributes message.
        #expect(output.messages.map(\.topic) == ["v1/gateway/telemetry", "v1/gateway/attributes"])
        #expect((Fixture.json(output.messages[1])["meter-01"] as? [String: Any])?["online"] as? Bool == true)
        let message = try #require(output.messages.first)
        #expect(message.topic == "v1/gateway/telemetry")
        #expect(message.ranges == [1...6])
        let object = Fixture.json(message)
        let tc = try #require(object["tc-01"] as? [[String: Any]])
        #expect(tc.count == 2)
        #expect(tc[0]["ts"] as? Int == 1000)
        let values = try #require(tc[0]["values"] as? [String: Any])
        #expect(values["pv"] as? Double == 180.2)
        #expect(values["run"] as? Bool == true)
        #expect((tc[1]["values"] as? [String: Any])?["pv"] as? Double == 180.4)
        let meter = try #require(object["meter-01"] as? [[String: Any]])
        #expect((meter[0]["values"] as? [String: Any])?["count"] as? Int == 7)
    }

    @Test func messagesStayWithinTheLimitAndCarryEverySeqOnce() throws {
        var tb = profile(limit: 1024)
        _ = tb.sessionStarted(now: 0)
        var batches: [BufferedBatch] = []
        var seq: UInt64 = 1
        for i in 0..<200 {
            let device = i % 2 == 0 ? Fixture.tc : Fixture.meter
            let values: [String: Value?] = device.name == "tc-01"
                ? ["pv": .double(Double(i)), "setpoint": .double(180), "run": i % 7 == 0 ? nil : .bool(true)]
                : ["count": .uint(UInt64(i)), "offset": .int(-3), "energy": .double(1.5), "big": .int(-1)]
            let batch = Fixture.batch(device, ts: Int64(i) * 100, seq: seq, values: values)
            seq = batch.seqs.upperBound + 1
            batches.append(batch)
        }
        let output = tb.messages(for: batches, now: 100_000)
        #expect(output.messages.count > 10)
        for message in output.messages {
            #expect(message.payload.count <= 1024, "\(message.payload.count) bytes")
            #expect(JSONSerialization.isValidJSONObject(Fixture.json(message)) && !Fixture.json(message).isEmpty)
        }
        #expect(Fixture.seqs(output) == Array(1..<seq))
        // Timestamps of one device stay in order across messages.
        let tcTimes = output.messages.flatMap { (Fixture.json($0)["tc-01"] as? [[String: Any]] ?? []).compactMap { $0["ts"] as? Int } }
        #expect(tcTimes == tcTimes.sorted() && tcTimes.count == 100)
    }

    @Test func aHugePollIsSplitIntoEntriesThatFit() throws {
        let signals = (0..<300).map { Signal(name: "signal_with_a_long_name_\($0)", area: .holdingRegister, address: $0, type: .uint16) }
        let wide = Device(name: "wide", transport: .tcp(host: "h", port: 1), signals: signals)
        var tb = ThingsBoardProfile(devices: [wide], maxMessageBytes: 2048)
        var values: [String: Value?] = [:]
        for signal in signals { values[signal.name] = .uint(65535) }
        let output = tb.messages(for: [Fixture.batch(wide, ts: 5, seq: 1, values: values)], now: 10)
        #expect(output.messages.count > 3)
        #expect(output.messages.allSatisfy { $0.payload.count <= 2048 })
        let keys = output.messages.flatMap { message in
            (Fixture.json(message)["wide"] as? [[String: Any]] ?? []).flatMap { ($0["values"] as? [String: Any] ?? [:]).keys }
        }
        #expect(Set(keys).count == 300)
        #expect(Fixture.seqs(output) == Array(1...300))
    }

    @Test func deviceStateFollowsThePollsInOrder() throws {
        var tb = profile()
        _ = tb.sessionStarted(now: 0)
        var output = tb.messages(for: [
            Fixture.batch(Fixture.tc, ts: 1000, seq: 1, values: ["pv": .double(20), "setpoint": .double(180)]),
            Fixture.batch(Fixture.tc, ts: 2000, seq: 3, values: ["pv": nil, "setpoint": nil], quality: .timeout),
            Fixture.batch(Fixture.tc, ts: 3000, seq: 5, values: ["pv": nil, "setpoint": nil], quality: .timeout),
            Fixture.batch(Fixture.tc, ts: 4000, seq: 7, values: ["pv": .double(21), "setpoint": .double(180)]),
        ], now: 5000)
        let topics = output.messages.map(\.topic)
        #expect(topics == ["v1/gateway/telemetry", "v1/gateway/attributes", "v1/gateway/attributes", "v1/gateway/disconnect",
                           "v1/gateway/connect", "v1/gateway/attributes", "v1/gateway/telemetry"], "\(topics)")
        // Attributes of the first poll (online) are flushed before the state changes.
        #expect((Fixture.json(output.messages[1])["tc-01"] as? [String: Any])?["online"] as? Bool == true)
        output.messages.remove(at: 1)
        let down = Fixture.json(output.messages[1])["tc-01"] as? [String: Any]
        #expect(down?["online"] as? Bool == false && down?["quality"] as? String == "timeout")
        #expect(Fixture.json(output.messages[2])["device"] as? String == "tc-01")
        #expect(Fixture.json(output.messages[3])["type"] as? String == "temperature-controller")
        #expect((Fixture.json(output.messages[4])["tc-01"] as? [String: Any])?["online"] as? Bool == true)
        // Bad readings carry no value; their seqs are still accounted for.
        #expect(Fixture.seqs(output) == Array(1...8))
        #expect(output.settled == [3...6])
    }

    @Test func attributeSignalsGoToAttributes() throws {
        var tb = profile()
        let output = tb.messages(for: [Fixture.batch(Fixture.tc, ts: 1, seq: 10, values: ["pv": .double(1), "model": .string("TC-4896")])], now: 2)
        let telemetry = try #require(output.messages.first { $0.topic == "v1/gateway/telemetry" })
        let attributes = try #require(output.messages.first { $0.topic == "v1/gateway/attributes" })
        #expect(((Fixture.json(telemetry)["tc-01"] as? [[String: Any]])?.first?["values"] as? [String: Any])?["model"] == nil)
        let tc = try #require(Fixture.json(attributes)["tc-01"] as? [String: Any])
        #expect(tc["model"] as? String == "TC-4896" && tc["online"] as? Bool == true)
        #expect(telemetry.ranges == [10...10] && attributes.ranges == [11...11])
    }

    @Test func sessionStartAnnouncesEveryDeviceWithTypeStateAndAttributes() throws {
        let cache = LastValueCache()
        cache.update(PollBatch(device: "tc-01", timestamp: 5, records: [
            Record(device: "tc-01", signal: "model", timestamp: 5, value: .string("TC-4896")),
            Record(device: "tc-01", signal: "pv", timestamp: 5, value: .double(20)),
        ]))
        cache.update(PollBatch(device: "meter-01", timestamp: 5, records: [
            Record(device: "meter-01", signal: "count", timestamp: 5, value: nil, quality: .offline),
        ]))
        var tb = profile(cache: cache)
        let messages = tb.sessionStarted(now: 10)
        #expect(messages.map(\.topic) == ["v1/gateway/connect", "v1/gateway/attributes"])
        #expect(Fixture.json(messages[0])["device"] as? String == "tc-01")
        let attributes = Fixture.json(messages[1])
        let tc = try #require(attributes["tc-01"] as? [String: Any])
        #expect(tc["device_type"] as? String == "temperature-controller")
        #expect(tc["online"] as? Bool == true && tc["model"] as? String == "TC-4896")
        let meter = try #require(attributes["meter-01"] as? [String: Any])
        #expect(meter["online"] as? Bool == false && meter["device_type"] as? String == "meter")
        #expect(messages.allSatisfy { $0.ranges.isEmpty })
    }

    func rpc(_ text: String) -> InboundMessage { InboundMessage(topic: "v1/gateway/rpc", payload: Array(text.utf8)) }

    @Test func rpcWritesAreCheckedAndAnswered() throws {
        var tb = profile()
        let set = tb.received(rpc(#"{"device":"tc-01","data":{"id":7,"method":"set","params":{"signal":"setpoint","value":65}}}"#), now: 0)
        let request = try #require(set.writes.first)
        #expect(set.messages.isEmpty)
        #expect(request.operation == .registers(address: 1, words: [650]))
        #expect(request.origin == "thingsboard rpc 7" && request.replyTo == "7")
        let reply = try #require(tb.writeFinished(request, outcome: .written, now: 1).first)
        #expect(reply.topic == "v1/gateway/rpc")
        let object = Fixture.json(reply)
        #expect(object["device"] as? String == "tc-01" && object["id"] as? Int == 7)
        #expect((object["data"] as? [String: Any])?["success"] as? Bool == true)
        let failed = Fixture.json(try #require(tb.writeFinished(request, outcome: .failed("exception 2"), now: 1).first))
        #expect((failed["data"] as? [String: Any])?["error"] as? String == "exception 2")

        // set_NAME with the bare value, and a widget's {"value": v}.
        #expect(tb.received(rpc(#"{"device":"tc-01","data":{"id":8,"method":"set_run","params":false}}"#), now: 0).writes.first?.operation
                == .coil(address: 0, value: false))
        #expect(tb.received(rpc(#"{"device":"tc-01","data":{"id":9,"method":"set_setpoint","params":{"value":"70.5"}}}"#), now: 0).writes.first?.operation
                == .registers(address: 1, words: [705]))
    }

    @Test(arguments: [
        (#"{"device":"tc-01","data":{"id":1,"method":"set","params":{"signal":"pv","value":5}}}"#, "signal 'pv' is not writable"),
        (#"{"device":"tc-01","data":{"id":1,"method":"set","params":{"signal":"setpoint","value":500}}}"#, "500 is outside the allowed range of 'setpoint' (0 to 400)"),
        (#"{"device":"tc-01","data":{"id":1,"method":"set","params":{"signal":"setpoint","value":true}}}"#, "takes a number"),
        (#"{"device":"tc-09","data":{"id":1,"method":"set","params":{"signal":"setpoint","value":1}}}"#, "unknown device 'tc-09'"),
        (#"{"device":"tc-01","data":{"id":1,"method":"set","params":{"signal":"nope","value":1}}}"#, "has no signal 'nope'"),
        (#"{"device":"tc-01","data":{"id":1,"method":"reboot","params":{}}}"#, "unknown method 'reboot'"),
        (#"{"device":"tc-01","data":{"id":1,"method":"set","params":{"signal":"setpoint"}}}"#, "no value to write"),
    ])
    func forbiddenWritesAreRefusedWithAReason(_ request: String, _ reason: String) throws {
        var tb = profile()
        let decision = tb.received(rpc(request), now: 0)
        #expect(decision.writes.isEmpty)
        let reply = Fixture.json(try #require(decision.messages.first))
        let data = try #require(reply["data"] as? [String: Any])
        #expect(data["success"] as? Bool == false)
        #expect((data["error"] as? String)?.contains(reason) == true, "\(data)")
        #expect(reply["id"] as? Int == 1)
        #expect(decision.log.first?.result.hasPrefix("refused: ") == true)
    }

    @Test func getReadsTheNewestValueAndRepliesAreIgnored() throws {
        let cache = LastValueCache()
        cache.update(PollBatch(device: "tc-01", timestamp: 42, records: [Record(device: "tc-01", signal: "setpoint", timestamp: 42, value: .double(65))]))
        var tb = profile(cache: cache)
        let decision = tb.received(rpc(#"{"device":"tc-01","data":{"id":"a","method":"get_setpoint"}}"#), now: 0)
        let message = try #require(decision.messages.first)
        let data = try #require(Fixture.json(message)["data"] as? [String: Any])
        #expect(data["value"] as? Double == 65 && data["ts"] as? Int == 42)
        // Our own reply, echoed by a plain broker, has no method: ignored.
        #expect(tb.received(rpc(#"{"device":"tc-01","id":7,"data":{"success":true}}"#), now: 0) == .ignore)
        #expect(tb.received(rpc("not json"), now: 0) == .ignore)
    }
}
