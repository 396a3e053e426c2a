import Buffer
import Foundation
import Synchronization
import Testing
@testable import Publisher
import UplinkCore

/// A broker link that records what it is asked to publish and hands out mids.
final class RecordingLink: BrokerLink, Sendable {
    struct Sent: Sendable {
        var mid: Int32
        var topic: String
        var payload: [UInt8]
        var qos: Int
    }

    private let state = Mutex<(next: Int32, sent: [Sent], refuse: Bool)>((1, [], false))

    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) -> PublishOutcome {
        state.withLock { s in
            if s.refuse { return .refused("not connected") }
            let mid = s.next
            s.next += 1
            s.sent.append(Sent(mid: mid, topic: topic, payload: payload, qos: qos))
            return .accepted(mid: mid)
        }
    }

    var sent: [Sent] { state.withLock { $0.sent } }
    func refuse(_ on: Bool) { state.withLock { $0.refuse = on } }
}

/// The publisher with a session profile over a real disk buffer: births before data, acks of
/// aggregated messages delete exactly their records, QoS 0 messages lost with the connection are sent again.
@Suite("Publisher with a session profile", .serialized)
struct PublisherSessionTests {
    func waitFor(_ timeout: Double = 10, _ condition: () async -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await condition()
    }

    func kind(_ sent: RecordingLink.Sent) -> Substring { sent.topic.split(separator: "/")[2] }

    @Test func sparkplugSessionOverTheBuffer() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("uplink-pub-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: directory), linger: .zero)
        let cache = LastValueCache()
        let bdSeq = BirthDeathSequence(stateDirectory: nil)
        bdSeq.advance()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let first = PollBatch(device: "tc-01", timestamp: now, records: [
            Record(device: "tc-01", signal: "pv", timestamp: now, value: .double(20)),
            Record(device: "tc-01", signal: "setpoint", timestamp: now, value: .double(180)),
        ])
        cache.update(first)
        try await writer.append([first])

        let link = RecordingLink()
        let profile = SparkplugProfile(settings: SparkplugSettings(groupID: "g", edgeNodeID: "n"), devices: [Fixture.tc],
                                       bdSeq: bdSeq, lastValues: cache)
        let publisher = Publisher(buffer: writer, link: link, session: profile, qos: 0, maxInflight: 8)
        let runner = Task { await publisher.run() }
        defer { runner.cancel() }

        await publisher.handle(.connected)
        #expect(await waitFor { link.sent.contains { kind($0) == "DDATA" } })
        // NBIRTH, DBIRTH, then the data, all QoS 0.
        #expect(link.sent.prefix(3).map(kind) == ["NBIRTH", "DBIRTH", "DDATA"])
        #expect(link.sent.allSatisfy { $0.qos == 0 })
        // The ack of the DDATA deletes its records.
        for sent in link.sent { await publisher.handle(.acknowledged(mid: sent.mid)) }
        #expect(await waitFor { (try? await writer.stats().backlogRecords) == 0 })

        // A DDATA in flight when the connection goes is dropped by libmosquitto without an ack:
        // after the reconnect (and the new births) its records are sent again, as history.
        let second = PollBatch(device: "tc-01", timestamp: now + 1000, records: [
            Record(device: "tc-01", signal: "pv", timestamp: now + 1000, value: .double(21)),
        ])
        try await writer.append([second])
        publisher.notify()
        #expect(await waitFor { link.sent.filter { kind($0) == "DDATA" }.count == 2 })
        await publisher.handle(.disconnected(reason: "test"))
        #expect(await publisher.snapshot().inflight == 0)
        let before = link.sent.count
        await publisher.handle(.connected)
        #expect(await waitFor { link.sent.count >= before + 3 })
        let again = Array(link.sent[before...])
        #expect(again.prefix(3).map(kind) == ["NBIRTH", "DBIRTH", "DDATA"], "\(again.map(kind))")
        let replayed = try Org_Eclipse_Tahu_Protobuf_Payload(serializedBytes: again[2].payload)
        #expect(replayed.metrics.allSatisfy { $0.isHistorical })
        #expect(try Org_Eclipse_Tahu_Protobuf_Payload(serializedBytes: again[0].payload).seq == 0)
        await publisher.stop()
        await writer.close()
    }

    @Test func jsonProfileIsUnchangedThroughTheSessionAdapter() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("uplink-pub-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: directory), linger: .zero)
        let batch = PollBatch(device: "d", timestamp: 5, records: [Record(device: "d", signal: "s", timestamp: 5, value: .int(1))])
        try await writer.append([batch, batch])
        let link = RecordingLink()
        let context = PayloadContext(agent: "a", site: "s", topicPrefix: "uplink", dataTopic: "{prefix}/{site}/{device}/data",
                                     maxMessageBytes: 1024, lateAfterMs: 10_000)
        let publisher = Publisher(buffer: writer, link: link, profile: JSONPayloadProfile(), context: context, qos: 1, maxInflight: 8)
        let runner = Task { await publisher.run() }
        defer { runner.cancel() }
        await publisher.handle(.connected)
        #expect(await waitFor { link.sent.count == 2 })
        #expect(link.sent.allSatisfy { $0.topic == "uplink/s/d/data" && $0.qos == 1 })
        await publisher.handle(.disconnected(reason: "x"))
        // A lost connection hands what was in flight out again, oldest first, after the reconnect
        // (so a device's seqs reach the platform in order across repeated outages).
        #expect(await publisher.snapshot().inflight == 0)
        await publisher.handle(.connected)
        #expect(await waitFor { link.sent.count == 4 })
        #expect(link.sent[2].payload == link.sent[0].payload.replacingLate(), "the same batch again, marked late")
        await publisher.stop()
        await writer.close()
    }
}

extension Array where Element == UInt8 {
    /// The payload as a replay carries it: `"late":true`.
    func replacingLate() -> [UInt8] {
        Array(String(decoding: self, as: UTF8.self).replacingOccurrences(of: "\"late\":false", with: "\"late\":true").utf8)
    }
}
