/// Publisher: turns buffered batches into MQTT messages (payload profiles and topics) and drains
/// the disk buffer through a bounded in-flight window; a broker acknowledgement deletes exactly the
/// records its message carried.
///
/// Guarantees: at most `max_inflight` messages are unacknowledged at any time (libmosquitto's own
/// queue never grows past it); records are published oldest first; a record is deleted from the
/// buffer only after the broker acknowledged (QoS 1/2) the message that carried it, so a crash or
/// an outage at any moment leads to a resend (same `seq`), never a loss. Payload profiles are
/// pure functions of a batch, so new platforms plug in without touching the buffer.
import Buffer
import UplinkCore

/// One MQTT message to publish and the records it carries.
public struct OutgoingMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    /// The seqs of the records in this message; the broker's ack deletes exactly these from the
    /// buffer. Empty for messages that carry no buffered record (births, replies).
    public var ranges: [ClosedRange<UInt64>]
    /// QoS of this message; nil: the publisher's (`mqtt.qos`).
    public var qos: Int?
    public var retain: Bool

    public init(topic: String, payload: [UInt8], ranges: [ClosedRange<UInt64>], qos: Int? = nil, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.ranges = ranges
        self.qos = qos
        self.retain = retain
    }

    /// A message carrying one contiguous run of seqs.
    public init(topic: String, payload: [UInt8], seqs: ClosedRange<UInt64>) {
        self.init(topic: topic, payload: payload, ranges: [seqs])
    }

    /// First to last seq carried (0...0 when the message carries no record).
    public var seqs: ClosedRange<UInt64> {
        guard let first = ranges.first, let last = ranges.last else { return 0...0 }
        return first.lowerBound...max(first.lowerBound, last.upperBound)
    }
}

/// What a payload profile knows about where it runs.
public struct PayloadContext: Sendable, Hashable {
    public var agent: String
    public var site: String
    public var topicPrefix: String
    public var dataTopic: String
    public var maxMessageBytes: Int
    /// Batches committed more than this long before they are sent are marked late.
    public var lateAfterMs: Int64

    public init(agent: String, site: String, topicPrefix: String, dataTopic: String, maxMessageBytes: Int, lateAfterMs: Int64) {
        self.agent = agent
        self.site = site
        self.topicPrefix = topicPrefix
        self.dataTopic = dataTopic
        self.maxMessageBytes = maxMessageBytes
        self.lateAfterMs = lateAfterMs
    }
}

/// A platform's message format. Implementations are pure and cheap to call per batch.
public protocol PayloadProfile: Sendable {
    /// The messages that carry `batch`, each within `context.maxMessageBytes` when a single point fits.
    func messages(for batch: BufferedBatch, now: Int64, context: PayloadContext) -> [OutgoingMessage]
}

/// Expands `{prefix}`, `{site}`, `{agent}` and `{device}` in a topic template.
public enum TopicTemplate {
    public static func expand(_ template: String, prefix: String, site: String, agent: String, device: String) -> String {
        guard template.contains("{") else { return template }
        var out = template
        out = out.replacingAll("{prefix}", with: prefix)
        out = out.replacingAll("{site}", with: site)
        out = out.replacingAll("{agent}", with: agent)
        out = out.replacingAll("{device}", with: device)
        return out
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard contains(target) else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

/// Uplink's own JSON format (docs/payloads.md): one device's readings of one poll per message.
///
/// `{"agent":"gw-1","site":"plant-1","device":"imm-01","ts":1700000000000,"late":false,
///   "points":[{"signal":"shot_count","ts":1700000000000,"value":1234,"unit":"shots","quality":"good","seq":42},...]}`
public struct JSONPayloadProfile: PayloadProfile {
    public init() {}

    public func messages(for buffered: BufferedBatch, now: Int64, context: PayloadContext) -> [OutgoingMessage] {
        let batch = buffered.batch
        let late = buffered.replayed || now - buffered.committedAt > context.lateAfterMs
        let topic = TopicTemplate.expand(context.dataTopic, prefix: context.topicPrefix, site: context.site, agent: context.agent, device: batch.device)
        var header = "{\"agent\":"
        JSONText.appendString(context.agent, to: &header)
        header += ",\"site\":"
        JSONText.appendString(context.site, to: &header)
        header += ",\"device\":"
        JSONText.appendString(batch.device, to: &header)
        header += ",\"ts\":\(batch.timestamp),\"late\":\(late),\"points\":["
        let footer = "]}"

        var messages: [OutgoingMessage] = []
        var body = ""
        body.reserveCapacity(min(context.maxMessageBytes, 64 * batch.records.count + 64))
        var firstSeq: UInt64?
        var lastSeq: UInt64 = 0
        var point = ""
        for record in batch.records {
            point.removeAll(keepingCapacity: true)
            Self.appendPoint(record, to: &point)
            // Split when this point would push the message over the limit (a lone oversized point still goes).
            if let first = firstSeq, header.utf8.count + body.utf8.count + 1 + point.utf8.count + footer.utf8.count > context.maxMessageBytes {
                messages.append(OutgoingMessage(topic: topic, payload: Array((header + body + footer).utf8), seqs: first...lastSeq))
                body.removeAll(keepingCapacity: true)
                firstSeq = nil
            }
            if firstSeq == nil { firstSeq = record.seq } else { body += "," }
            body += point
            lastSeq = record.seq
        }
        if let first = firstSeq {
            messages.append(OutgoingMessage(topic: topic, payload: Array((header + body + footer).utf8), seqs: first...lastSeq))
        }
        return messages
    }

    static func appendPoint(_ record: Record, to out: inout String) {
        out += "{\"signal\":"
        JSONText.appendString(record.signal, to: &out)
        out += ",\"ts\":\(record.timestamp),\"value\":"
        JSONText.appendValue(record.value, to: &out)
        if let unit = record.unit {
            out += ",\"unit\":"
            JSONText.appendString(unit, to: &out)
        }
        out += ",\"quality\":\"\(record.quality.code)\",\"seq\":\(record.seq)}"
    }
}
