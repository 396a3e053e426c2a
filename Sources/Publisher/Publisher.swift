import Buffer
import Foundation
import UplinkCore

/// What the publisher needs from an MQTT connection (the Agent adapts `MQTTClient` to it).
public protocol BrokerLink: Sendable {
    /// Hands a message to the client; `.accepted(mid)` means an acknowledgement with this mid will follow
    /// (for QoS 0: when it was written to the socket).
    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) -> PublishOutcome
}

public enum PublishOutcome: Sendable, Hashable {
    case accepted(mid: Int32)
    case refused(String)
}

/// What happens on the connection, fed to `Publisher.handle`.
public enum LinkEvent: Sendable, Hashable {
    case connected
    case disconnected(reason: String)
    case acknowledged(mid: Int32)
    /// The broker answered with a failure reason code (MQTT 5): the records are sent again.
    case refused(mid: Int32, reason: String)
}

/// Counters for status and benchmarks.
public struct PublisherStats: Sendable, Hashable {
    public var connected = false
    public var inflight = 0
    public var publishedMessages: UInt64 = 0
    public var acknowledgedMessages: UInt64 = 0
    public var acknowledgedRecords: UInt64 = 0
    public var lastAckAt: Int64?
    public var lastError: String?
}

/// Drains the buffer to the broker with at most `maxInflight` unacknowledged messages.
public actor Publisher {
    private let buffer: BufferWriter
    private let link: any BrokerLink
    private let profile: any PayloadProfile
    private let context: PayloadContext
    private let qos: Int
    private let maxInflight: Int
    private let onError: @Sendable (String) -> Void

    /// Message id -> the records it carries. An ack cannot overtake its entry (PITFALLS G13): `publish`
    /// returns the mid inside this actor's turn, and acks are handled by later turns of the same actor.
    /// Acks for unknown mids (the status message, a previous connection) are ignored.
    private var inflight: [Int32: ClosedRange<UInt64>] = [:]
    private var stats = PublisherStats()
    private var stopped = false
    private var wake: AsyncStream<Void>.Continuation?
    private let wakeStream: AsyncStream<Void>

    public init(buffer: BufferWriter, link: any BrokerLink, profile: any PayloadProfile, context: PayloadContext,
                qos: Int, maxInflight: Int, onError: @escaping @Sendable (String) -> Void = { _ in }) {
        self.buffer = buffer
        self.link = link
        self.profile = profile
        self.context = context
        self.qos = qos
        self.maxInflight = max(1, min(maxInflight, 60_000))
        self.onError = onError
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        wakeStream = stream
        wake = continuation
    }

    /// New records were committed, or anything else worth a look: cheap, callable from any thread.
    public nonisolated func notify() {
        Task { await self.poke() }
    }

    private func poke() { wake?.yield() }

    public func snapshot() -> PublisherStats {
        var s = stats
        s.inflight = inflight.count
        return s
    }

    public func handle(_ event: LinkEvent) async {
        switch event {
        case .connected:
            stats.connected = true
            stats.lastError = nil
        case .disconnected(let reason):
            stats.connected = false
            stats.lastError = reason
        case .acknowledged(let mid):
            if let seqs = inflight.removeValue(forKey: mid) { acknowledge(seqs) }
        case .refused(let mid, let reason):
            if inflight.removeValue(forKey: mid) != nil {
                stats.lastError = reason
                onError("the broker refused a message (\(reason)); its records will be sent again")
                await buffer.rewind()
            }
        }
        wake?.yield()
    }

    private func acknowledge(_ seqs: ClosedRange<UInt64>) {
        buffer.acknowledge(seqs)
        stats.acknowledgedMessages += 1
        stats.acknowledgedRecords += UInt64(seqs.count)
        stats.lastAckAt = Int64(Date().timeIntervalSince1970 * 1000)
    }

    /// Runs until `stop()`: fetch the oldest batches that fit the window, publish, repeat when woken.
    public func run() async {
        // A periodic nudge, so nothing waits forever on a missed notification.
        let ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await self?.poke()
            }
        }
        defer { ticker.cancel() }
        var iterator = wakeStream.makeAsyncIterator()
        while !stopped {
            let progressed = await publishWhatFits()
            if stopped { break }
            if !progressed { _ = await iterator.next() }
        }
    }

    /// Returns whether anything was published.
    private func publishWhatFits() async -> Bool {
        // Refill only once half the window is free: each read of the buffer is a round trip to its
        // thread, and refilling one slot per ack would cap a backlog drain at one message per trip.
        guard stats.connected, inflight.count <= maxInflight / 2 else { return false }
        let batches: [BufferedBatch]
        do {
            batches = try await buffer.nextBatches(max: maxInflight - inflight.count)
        } catch {
            onError("cannot read the buffer: \(error)")
            return false
        }
        guard !batches.isEmpty else { return false }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for batch in batches {
            for message in profile.messages(for: batch, now: now, context: context) {
                switch link.publish(topic: message.topic, payload: message.payload, qos: qos, retain: false) {
                case .accepted(let mid):
                    stats.publishedMessages += 1
                    inflight[mid] = message.seqs
                case .refused(let reason):
                    // Not lost: the records stay in the buffer and are handed out again.
                    stats.lastError = reason
                    onError("publish refused: \(reason); will retry")
                    await buffer.rewind()
                    try? await Task.sleep(for: .seconds(1))
                    return true
                }
            }
        }
        return true
    }

    /// Ends `run()` after the current step. In-flight messages stay in the buffer until acknowledged.
    public func stop() {
        stopped = true
        wake?.yield()
    }

    /// Waits up to `timeout` for the in-flight messages to be acknowledged (for a clean shutdown).
    public func drainInflight(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !inflight.isEmpty && stats.connected && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
