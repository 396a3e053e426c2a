// Platform profiles with a session: what ThingsBoard and Sparkplug B need beyond "a batch in, a
// message out". They plug in above the disk buffer; the buffer is unchanged.
//
// A `SessionProfile` is a value owned by the `Publisher` actor and mutated only there, so it needs
// no locks. It sees every buffered batch in seq order, may put many batches into one message (each
// message lists the seq ranges it acknowledges), says what to send after every connect (births,
// device announcements) and before a clean disconnect, and turns commands that arrive on its
// subscriptions into checked write requests and replies.
import Buffer
import Synchronization
import UplinkCore

/// What a profile makes of a run of buffered batches.
public struct ProfileOutput: Sendable, Hashable {
    /// In publishing order; each lists the seq ranges the broker's ack deletes from the buffer.
    public var messages: [OutgoingMessage]
    /// Seqs handled without a message (e.g. a ThingsBoard reading whose quality is bad: the device
    /// state carries it); acknowledged at once.
    public var settled: [ClosedRange<UInt64>]

    public init(messages: [OutgoingMessage] = [], settled: [ClosedRange<UInt64>] = []) {
        self.messages = messages
        self.settled = settled
    }
}

/// A message that arrived on one of the profile's subscriptions.
public struct InboundMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]

    public init(topic: String, payload: [UInt8]) {
        self.topic = topic
        self.payload = payload
    }
}

/// A write the platform asked for, already checked against the config (`Encoder.write`).
public struct WriteRequest: Sendable, Hashable {
    /// Who asked, for the log: `thingsboard rpc 17`, `sparkplug DCMD`.
    public var origin: String
    public var device: String
    public var signal: String
    /// The engineering value asked for.
    public var value: Value
    public var operation: WriteOperation
    /// What the profile needs to answer (the ThingsBoard RPC id); nil when no reply is due.
    public var replyTo: String?

    public init(origin: String, device: String, signal: String, value: Value, operation: WriteOperation, replyTo: String? = nil) {
        self.origin = origin
        self.device = device
        self.signal = signal
        self.value = value
        self.operation = operation
        self.replyTo = replyTo
    }
}

/// One line of the command log: every write and every refusal, with where it came from.
public struct CommandLog: Sendable, Hashable {
    public var origin: String
    public var device: String
    public var signal: String
    public var value: String
    /// `written`, `refused: ...` or `failed: ...`.
    public var result: String

    public init(origin: String, device: String, signal: String, value: String, result: String) {
        self.origin = origin
        self.device = device
        self.signal = signal
        self.value = value
        self.result = result
    }
}

/// What a profile decided about an inbound message.
public struct CommandDecision: Sendable, Hashable {
    /// Checked writes for the collector.
    public var writes: [WriteRequest]
    /// To publish now: refusals, replies, a rebirth.
    public var messages: [OutgoingMessage]
    /// Refusals and other command events to log.
    public var log: [CommandLog]

    public init(writes: [WriteRequest] = [], messages: [OutgoingMessage] = [], log: [CommandLog] = []) {
        self.writes = writes
        self.messages = messages
        self.log = log
    }

    public static let ignore = CommandDecision()
}

/// A platform profile with per-session state. See the file header.
public protocol SessionProfile: Sendable {
    /// Topic filters to subscribe for commands (renewed by the MQTT client on every reconnect).
    var subscriptions: [String] { get }
    /// How many buffered batches one message may carry, so the publisher reads enough of them
    /// per free slot of its in-flight window (1 for one message per batch).
    var batchesPerMessage: Int { get }
    /// Messages to publish after every connect, before any data (births, device announcements).
    mutating func sessionStarted(now: Int64) -> [OutgoingMessage]
    /// The connection was lost (or never came up); the next `sessionStarted` starts over.
    mutating func sessionLost()
    /// Messages to publish before a clean disconnect.
    mutating func sessionEnding(now: Int64) -> [OutgoingMessage]
    /// Buffered batches, oldest first, as messages.
    mutating func messages(for batches: [BufferedBatch], now: Int64) -> ProfileOutput
    /// A message on one of `subscriptions`.
    mutating func received(_ message: InboundMessage, now: Int64) -> CommandDecision
    /// A write from `received` finished; replies to publish.
    mutating func writeFinished(_ request: WriteRequest, outcome: WriteOutcome, now: Int64) -> [OutgoingMessage]
    /// The devices were reloaded (SIGHUP); messages announcing the change.
    mutating func devicesChanged(_ devices: [Device], now: Int64) -> [OutgoingMessage]
}

extension SessionProfile {
    public var subscriptions: [String] { [] }
    public var batchesPerMessage: Int { 1 }
    public mutating func sessionStarted(now: Int64) -> [OutgoingMessage] { [] }
    public mutating func sessionLost() {}
    public mutating func sessionEnding(now: Int64) -> [OutgoingMessage] { [] }
    public mutating func received(_ message: InboundMessage, now: Int64) -> CommandDecision { .ignore }
    public mutating func writeFinished(_ request: WriteRequest, outcome: WriteOutcome, now: Int64) -> [OutgoingMessage] { [] }
    public mutating func devicesChanged(_ devices: [Device], now: Int64) -> [OutgoingMessage] { [] }
}

/// A stateless `PayloadProfile` (Uplink's JSON) as a session profile: one batch at a time, no
/// births, no commands. The JSON payload is exactly what it was.
public struct PerBatchSession: SessionProfile {
    public let profile: any PayloadProfile
    public let context: PayloadContext

    public init(_ profile: any PayloadProfile, context: PayloadContext) {
        self.profile = profile
        self.context = context
    }

    public mutating func messages(for batches: [BufferedBatch], now: Int64) -> ProfileOutput {
        ProfileOutput(messages: batches.flatMap { profile.messages(for: $0, now: now, context: context) })
    }
}

/// The newest reading of every signal, fed by the collector before report by exception and the
/// buffer, so births and attribute announcements carry current values even while a backlog drains.
public final class LastValueCache: Sendable {
    private let table = Mutex<[String: [String: Record]]>([:])

    public init() {}

    /// Remembers the records of a poll.
    public func update(_ batch: PollBatch) {
        table.withLock { table in
            var device = table[batch.device] ?? [:]
            for record in batch.records { device[record.signal] = record }
            table[batch.device] = device
        }
    }

    /// The newest record of each signal of `device` (empty before its first poll).
    public func records(of device: String) -> [String: Record] {
        table.withLock { $0[device] ?? [:] }
    }

    /// Forgets devices that are no longer configured.
    public func keep(only devices: Set<String>) {
        table.withLock { table in table = table.filter { devices.contains($0.key) } }
    }
}

/// Merges a list of seqs into sorted, non-overlapping ranges.
func mergedRanges(_ ranges: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
    let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
    var out: [ClosedRange<UInt64>] = []
    for range in sorted {
        if let last = out.last, range.lowerBound <= last.upperBound &+ 1 {
            out[out.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
        } else {
            out.append(range)
        }
    }
    return out
}

/// Seqs of `records` as merged ranges.
func ranges(of records: [Record]) -> [ClosedRange<UInt64>] {
    mergedRanges(records.map { $0.seq...$0.seq })
}
