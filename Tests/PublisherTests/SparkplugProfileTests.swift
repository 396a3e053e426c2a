import Buffer
import Foundation
import Testing
@testable import Publisher
import UplinkCore

@Suite("Sparkplug B edge node profile")
struct SparkplugProfileTests {
    typealias Payload = Org_Eclipse_Tahu_Protobuf_Payload
    let settings = SparkplugSettings(groupID: "Plant 1", edgeNodeID: "gw-1")

    func profile(cache: LastValueCache = LastValueCache(), bdSeq: BirthDeathSequence = BirthDeathSequence(stateDirectory: nil),
                 lateAfterMs: Int64 = 10_000) -> SparkplugProfile {
        if bdSeq.current == nil { bdSeq.advance() }
        return SparkplugProfile(settings: settings, devices: [Fixture.tc, Fixture.meter], bdSeq: bdSeq, lastValues: cache, lateAfterMs: lateAfterMs)
    }

    func cacheWithBothDevices() -> LastValueCache {
        let cache = LastValueCache()
        cache.update(PollBatch(device: "tc-01", timestamp: 900, records: [
            Record(device: "tc-01", signal: "pv", timestamp: 900, value: .double(180.2), unit: "degC"),
            Record(device: "tc-01", signal: "setpoint", timestamp: 900, value: .double(180), unit: "degC"),
            Record(device: "tc-01", signal: "run", timestamp: 900, value: .bool(true)),
        ]))
        cache.update(PollBatch(device: "meter-01", timestamp: 900, records: [
            Record(device: "meter-01", signal: "count", timestamp: 900, value: .uint(4_000_000_000)),
            Record(device: "meter-01", signal: "offset", timestamp: 900, value: .int(-2)),
            Record(device: "meter-01", signal: "energy", timestamp: 900, value: .double(12.5)),
            Record(device: "meter-01", signal: "big", timestamp: 900, value: .int(-5)),
        ]))
        return cache
    }

    @Test func birthsCarryBdSeqRebirthEveryMetricAndStartAtSeqZero() throws {
        let bdSeq = BirthDeathSequence(stateDirectory: nil)
        bdSeq.advance()
        bdSeq.advance()
        var sp = profile(cache: cacheWithBothDevices(), bdSeq: bdSeq)
        let births = sp.sessionStarted(now: 1000)
        #expect(births.map(\.topic) == ["spBv1.0/Plant 1/NBIRTH/gw-1", "spBv1.0/Plant 1/DBIRTH/gw-1/tc-01", "spBv1.0/Plant 1/DBIRTH/gw-1/meter-01"])
        #expect(births.allSatisfy { $0.qos == 0 && !$0.retain })
        let nbirth = try Fixture.sparkplug(births[0])
        #expect(nbirth.seq == 0 && nbirth.timestamp == 1000)
        let bd = try #require(nbirth.metrics.first { $0.name == "bdSeq" })
        #expect(bd.longValue == 1 && bd.datatype == 8)
        let rebirth = try #require(nbirth.metrics.first { $0.name == "Node Control/Rebirth" })
        #expect(rebirth.datatype == 11 && rebirth.booleanValue == false)

        let tc = try Fixture.sparkplug(births[1])
        #expect(tc.seq == 1)
        #expect(tc.metrics.map(\.name) == ["pv", "setpoint", "run", "model"])
        #expect(tc.metrics.allSatisfy { $0.hasAlias && $0.hasDatatype && $0.hasTimestamp })
        #expect(Set(tc.metrics.map(\.alias)).count == 4)
        #expect(tc.metrics[0].datatype == 10 && tc.metrics[0].doubleValue == 180.2)
        #expect(tc.metrics[0].properties.keys == ["engUnit"] && tc.metrics[0].properties.values.first?.stringValue == "degC")
        #expect(tc.metrics[2].booleanValue == true)
        // Never read yet: null with the Stale quality.
        #expect(tc.metrics[3].isNull && tc.metrics[3].datatype == 12)
        #expect(tc.metrics[3].properties.keys == ["Quality"] && tc.metrics[3].properties.values.first?.intValue == 500)

        let meter = try Fixture.sparkplug(births[2])
        #expect(meter.seq == 2)
        // UInt32 in long_value (TCK), signed values in two's complement, float32 as Float.
        #expect(meter.metrics[0].datatype == 7 && meter.metrics[0].longValue == 4_000_000_000)
        #expect(meter.metrics[1].datatype == 2 && meter.metrics[1].intValue == UInt32(bitPattern: -2))
        #expect(meter.metrics[2].datatype == 9 && meter.metrics[2].floatValue == 12.5)
        #expect(meter.metrics[3].datatype == 4 && meter.metrics[3].longValue == UInt64(bitPattern: -5))
        // Aliases are unique across the node.
        let all = nbirth.metrics.map(\.alias) + tc.metrics.map(\.alias) + meter.metrics.map(\.alias)
        #expect(Set(all).count == all.count)
    }

    @Test func dataUsesAliasesSeqContinuesAndWraps() throws {
        var sp = profile(cache: cacheWithBothDevices())
        let births = sp.sessionStarted(now: 1000)
        let aliases = Dictionary(uniqueKeysWithValues: try Fixture.sparkplug(births[1]).metrics.map { ($0.alias, $0.name) })
        var seqs: [UInt64] = try births.map { try Fixture.sparkplug($0).seq }
        var seq: UInt64 = 1
        for i in 0..<300 {
            let batch = Fixture.batch(Fixture.tc, ts: 2000 + Int64(i) * 1000, seq: seq, values: ["pv": .double(Double(i)), "run": .bool(i % 2 == 0)])
            seq = batch.seqs.upperBound + 1
            let output = sp.messages(for: [batch], now: 2000 + Int64(i) * 1000 + 5)
            #expect(output.messages.count == 1)
            let message = try #require(output.messages.first)
            #expect(message.topic == "spBv1.0/Plant 1/DDATA/gw-1/tc-01" && message.qos == 0)
            #expect(message.ranges == [batch.seqs])
            let payload = try Fixture.sparkplug(message)
            seqs.append(payload.seq)
            #expect(payload.metrics.allSatisfy { !$0.hasName && $0.hasAlias && $0.hasTimestamp && !$0.isHistorical })
            #expect(payload.metrics.map { aliases[$0.alias] } == ["pv", "run"])
        }
        // 0, 1, 2 for the births, then on without a gap, 255 followed by 0.
        for (index, value) in seqs.enumerated() { #expect(value == UInt64(index % 256), "message \(index)") }
    }

    @Test func deathAndRebirthOfAMachineFollowThePolls() throws {
        var sp = profile(cache: cacheWithBothDevices())
        _ = sp.sessionStarted(now: 1000)
        let output = sp.messages(for: [
            Fixture.batch(Fixture.tc, ts: 2000, seq: 1, values: ["pv": .double(1)]),
            Fixture.batch(Fixture.tc, ts: 3000, seq: 2, values: ["pv": nil, "setpoint": nil], quality: .timeout),
            Fixture.batch(Fixture.tc, ts: 4000, seq: 4, values: ["pv": nil, "setpoint": nil], quality: .timeout),
            Fixture.batch(Fixture.tc, ts: 5000, seq: 6, values: ["pv": .double(2), "setpoint": .double(180)]),
            Fixture.batch(Fixture.tc, ts: 6000, seq: 8, values: ["pv": .double(3)]),
        ], now: 6100)
        #expect(output.messages.map { $0.topic.split(separator: "/")[2] } == ["DDATA", "DDEATH", "DBIRTH", "DDATA"])
        let seqs = try output.messages.map { try Fixture.sparkplug($0).seq }
        #expect(seqs == [3, 4, 5, 6])
        let death = try Fixture.sparkplug(output.messages[1])
        #expect(death.metrics.isEmpty && death.hasSeq && death.hasTimestamp)
        // The birth carries the values of the poll that brought the machine back.
        let birth = try Fixture.sparkplug(output.messages[2])
        #expect(birth.metrics.first { $0.name == "pv" }?.doubleValue == 2)
        #expect(Fixture.seqs(output) == Array(1...8))
    }

    @Test func aMachineIsBornWithItsFirstPollWhenUnknownAtConnect() throws {
        var sp = profile()
        let births = sp.sessionStarted(now: 10)
        #expect(births.count == 1)
        let output = sp.messages(for: [Fixture.batch(Fixture.meter, ts: 20, seq: 1, values: ["count": .uint(1), "offset": .int(0)])], now: 30)
        #expect(output.messages.map { $0.topic.split(separator: "/")[2] } == ["DBIRTH"])
        // A machine that never answered is not born: its bad readings need no message.
        let dead = sp.messages(for: [Fixture.batch(Fixture.tc, ts: 20, seq: 3, values: ["pv": nil], quality: .offline)], now: 30)
        #expect(dead.messages.isEmpty && dead.settled == [3...3])
    }

    @Test func replayedAndLateDataIsHistorical() throws {
        var sp = profile(cache: cacheWithBothDevices(), lateAfterMs: 5000)
        _ = sp.sessionStarted(now: 100_000)
        let output = sp.messages(for: [
            Fixture.batch(Fixture.tc, ts: 50_000, seq: 1, values: ["pv": .double(1)], replayed: true),
            Fixture.batch(Fixture.meter, ts: 60_000, seq: 2, values: ["count": .uint(1)], committedAt: 60_000),
            Fixture.batch(Fixture.meter, ts: 99_000, seq: 3, values: ["count": .uint(2)], committedAt: 99_000),
        ], now: 100_000)
        let payloads = try output.messages.map(Fixture.sparkplug)
        #expect(payloads.count == 2)
        #expect(payloads[0].metrics.allSatisfy { $0.isHistorical })
        #expect(payloads[1].metrics.map(\.isHistorical) == [true, false])
    }

    @Test func badReadingsAreNullWithBadQuality() throws {
        var sp = profile(cache: cacheWithBothDevices())
        _ = sp.sessionStarted(now: 1000)
        let output = sp.messages(for: [Fixture.batch(Fixture.tc, ts: 2000, seq: 1, values: ["pv": .double(1), "setpoint": nil], quality: .exception(2))], now: 2001)
        let metrics = try Fixture.sparkplug(try #require(output.messages.first)).metrics
        #expect(metrics[1].isNull && metrics[1].properties.keys == ["Quality"])
        #expect(metrics[1].properties.values.first?.intValue == 0 && metrics[1].properties.values.first?.type == 3)
    }

    @Test func ndeathCarriesOnlyBdSeqAndNoSeq() throws {
        let payload = try Payload(serializedBytes: SparkplugProfile.deathPayload(bdSeq: 42, now: 7))
        #expect(!payload.hasSeq && payload.metrics.count == 1)
        #expect(payload.metrics[0].name == "bdSeq" && payload.metrics[0].longValue == 42 && payload.metrics[0].datatype == 8)
        var sp = profile()
        _ = sp.sessionStarted(now: 1)
        let end = try #require(sp.sessionEnding(now: 2).first)
        #expect(end.topic == "spBv1.0/Plant 1/NDEATH/gw-1" && end.qos == 1)
    }

    func command(_ topic: String, _ metrics: [Org_Eclipse_Tahu_Protobuf_Payload.Metric]) throws -> InboundMessage {
        var payload = Payload()
        payload.timestamp = 1
        payload.metrics = metrics
        return InboundMessage(topic: topic, payload: try payload.serializedBytes())
    }

    @Test func ncmdRebirthStartsTheSequenceAgain() throws {
        var sp = profile(cache: cacheWithBothDevices())
        _ = sp.sessionStarted(now: 1)
        _ = sp.messages(for: [Fixture.batch(Fixture.tc, ts: 2000, seq: 1, values: ["pv": .double(1)])], now: 2001)
        var rebirth = Payload.Metric()
        rebirth.name = "Node Control/Rebirth"
        rebirth.datatype = 11
        rebirth.booleanValue = true
        let decision = sp.received(try command("spBv1.0/Plant 1/NCMD/gw-1", [rebirth]), now: 3000)
        #expect(decision.messages.map { $0.topic.split(separator: "/")[2] } == ["NBIRTH", "DBIRTH", "DBIRTH"])
        #expect(try Fixture.sparkplug(decision.messages[0]).seq == 0)
        #expect(decision.log.first?.result == "rebirth")
        // Another node's command is not ours.
        #expect(sp.received(try command("spBv1.0/Plant 1/NCMD/gw-2", [rebirth]), now: 3000) == .ignore)
    }

    @Test func dcmdWritesByNameOrAliasAndRefusesWithAReason() throws {
        var sp = profile(cache: cacheWithBothDevices())
        let births = sp.sessionStarted(now: 1)
        let alias = try #require(try Fixture.sparkplug(births[1]).metrics.first { $0.name == "setpoint" }?.alias)
        var byName = Payload.Metric()
        byName.name = "setpoint"
        byName.datatype = 10
        byName.doubleValue = 65
        var byAlias = Payload.Metric()
        byAlias.alias = alias
        byAlias.doubleValue = 70
        var forbidden = Payload.Metric()
        forbidden.name = "pv"
        forbidden.doubleValue = 1
        var tooHot = Payload.Metric()
        tooHot.name = "setpoint"
        tooHot.doubleValue = 900
        let decision = sp.received(try command("spBv1.0/Plant 1/DCMD/gw-1/tc-01", [byName, byAlias, forbidden, tooHot]), now: 5)
        #expect(decision.writes.map(\.operation) == [.registers(address: 1, words: [650]), .registers(address: 1, words: [700])])
        #expect(decision.writes.allSatisfy { $0.origin == "sparkplug DCMD" && $0.device == "tc-01" })
        #expect(decision.log.count == 2)
        #expect(decision.log[0].result.contains("signal 'pv' is not writable"))
        #expect(decision.log[1].result.contains("900 is outside the allowed range"))
        // Sparkplug has no reply message: the next DDATA shows the value.
        #expect(decision.messages.isEmpty)
        #expect(sp.received(InboundMessage(topic: "spBv1.0/Plant 1/DCMD/gw-1/tc-01", payload: [0xFF, 0x01]), now: 5).log.first?.result.contains("not a Sparkplug B protobuf") == true)
    }

    @Test func signedCommandValuesFollowTheSignalsType() {
        let offset = Fixture.meter.signals[1]
        var metric = Org_Eclipse_Tahu_Protobuf_Payload.Metric()
        metric.intValue = UInt32(bitPattern: -3)
        #expect(SparkplugProfile.value(of: metric, for: offset) == .int(-3))
        metric.intValue = 65533  // 16-bit two's complement, as some hosts send it
        #expect(SparkplugProfile.value(of: metric, for: offset) == .int(-3))
    }

    @Test func bdSeqStartsAtZeroPersistsAndWraps() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bdseq-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = BirthDeathSequence(stateDirectory: directory)
        #expect(first.current == nil)
        #expect(first.advance() == 0)
        #expect(first.advance() == 1)
        let restarted = BirthDeathSequence(stateDirectory: directory)
        #expect(restarted.current == 1)
        #expect(restarted.advance() == 2)
        try "255\n".write(to: directory.appendingPathComponent("sparkplug-bdseq"), atomically: true, encoding: .utf8)
        #expect(BirthDeathSequence(stateDirectory: directory).advance() == 0)
    }
}
