import Buffer
import Foundation
import Testing
import UplinkCore
@testable import Publisher

@Suite("JSON payload profile")
struct JSONPayloadTests {
    let context = PayloadContext(agent: "gw-1", site: "plant-1", topicPrefix: "uplink", dataTopic: "{prefix}/{site}/{device}/data",
                                 maxMessageBytes: 256 * 1024, lateAfterMs: 10_000)

    func buffered(_ records: Int, committedAt: Int64 = 1_000, replayed: Bool = false, firstSeq: UInt64 = 100) -> BufferedBatch {
        var recs: [Record] = []
        for i in 0..<records {
            let good = i % 2 == 0
            let value: Value? = good ? .double(Double(i) + 0.5) : nil
            let unit: String? = i % 3 == 0 ? "degC" : nil
            recs.append(Record(device: "imm-01", signal: "s\(i)", timestamp: 900, value: value, unit: unit,
                               quality: good ? .good : .timeout, seq: firstSeq + UInt64(i)))
        }
        return BufferedBatch(batch: PollBatch(device: "imm-01", timestamp: 900, records: recs),
                             seqs: firstSeq...(firstSeq + UInt64(records) - 1), committedAt: committedAt, replayed: replayed)
    }

    func decode(_ message: OutgoingMessage) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any])
    }

    @Test func oneMessagePerBatchWithEveryField() throws {
        let messages = JSONPayloadProfile().messages(for: buffered(3), now: 2_000, context: context)
        #expect(messages.count == 1)
        let message = try #require(messages.first)
        #expect(message.topic == "uplink/plant-1/imm-01/data")
        #expect(message.seqs == 100...102)
        let object = try decode(message)
        #expect(object["agent"] as? String == "gw-1")
        #expect(object["site"] as? String == "plant-1")
        #expect(object["device"] as? String == "imm-01")
        #expect(object["ts"] as? Int == 900)
        #expect(object["late"] as? Bool == false)
        let points = try #require(object["points"] as? [[String: Any]])
        #expect(points.count == 3)
        #expect(points[0]["signal"] as? String == "s0")
        #expect(points[0]["value"] as? Double == 0.5)
        #expect(points[0]["unit"] as? String == "degC")
        #expect(points[0]["quality"] as? String == "good")
        #expect(points[0]["seq"] as? Int == 100)
        #expect(points[0]["ts"] as? Int == 900)
        #expect(points[1]["value"] is NSNull)
        #expect(points[1]["quality"] as? String == "timeout")
        #expect(points[1]["unit"] == nil)
    }

    @Test func replayedOrOldBatchesAreLate() throws {
        let profile = JSONPayloadProfile()
        #expect(try decode(profile.messages(for: buffered(1, replayed: true), now: 1_001, context: context)[0])["late"] as? Bool == true)
        #expect(try decode(profile.messages(for: buffered(1, committedAt: 1_000), now: 11_001, context: context)[0])["late"] as? Bool == true)
        #expect(try decode(profile.messages(for: buffered(1, committedAt: 1_000), now: 10_999, context: context)[0])["late"] as? Bool == false)
    }

    @Test func largeBatchesAreSplitWithinTheLimitAndKeepEverySeqOnce() throws {
        var small = context
        small.maxMessageBytes = 1024
        let messages = JSONPayloadProfile().messages(for: buffered(100), now: 2_000, context: small)
        #expect(messages.count > 1)
        var seqs: [Int] = []
        for message in messages {
            #expect(message.payload.count <= 1024)
            let points = try #require(try decode(message)["points"] as? [[String: Any]])
            let messageSeqs = points.compactMap { $0["seq"] as? Int }
            #expect(messageSeqs.first.map(UInt64.init) == message.seqs.lowerBound)
            #expect(messageSeqs.last.map(UInt64.init) == message.seqs.upperBound)
            seqs += messageSeqs
        }
        #expect(seqs == Array(100..<200))
    }

    @Test func topicTemplateExpandsEveryPlaceholder() {
        #expect(TopicTemplate.expand("{prefix}/{site}/{agent}/{device}/x", prefix: "p", site: "s", agent: "a", device: "d") == "p/s/a/d/x")
        #expect(TopicTemplate.expand("fixed/topic", prefix: "p", site: "s", agent: "a", device: "d") == "fixed/topic")
    }

    @Test func specialValuesStayValidJSON() throws {
        let records = [Record(device: "d", signal: "nan", timestamp: 1, value: .double(.nan), seq: 1),
                       Record(device: "d", signal: "q\"uote", timestamp: 1, value: .string("a\nb"), seq: 2),
                       Record(device: "d", signal: "big", timestamp: 1, value: .uint(UInt64.max), seq: 3)]
        let batch = BufferedBatch(batch: PollBatch(device: "d", timestamp: 1, records: records), seqs: 1...3, committedAt: 1, replayed: false)
        let message = try #require(JSONPayloadProfile().messages(for: batch, now: 1, context: context).first)
        let points = try #require(try decode(message)["points"] as? [[String: Any]])
        #expect(points[0]["value"] as? String == "NaN")
        #expect(points[1]["signal"] as? String == "q\"uote")
        #expect(points[1]["value"] as? String == "a\nb")
        #expect(String(decoding: message.payload, as: UTF8.self).contains("\"value\":18446744073709551615"))
    }
}
