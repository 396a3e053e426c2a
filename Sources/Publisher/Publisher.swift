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
    /// The payload profile and its per-session state (Session.swift); only this actor touches it.
    private var session: any SessionProfile
    private let qos: Int
    private let maxInflight: Int
    private let onError: @Sendable (String) -> Void

    /// Message id -> the records it carries. An ack cannot overtake its entry (PITFALLS G13): `publish`
    /// returns the mid inside this actor's turn, and acks are handled by later turns of the same actor.
    /// Acks for unknown mids (the status message, a previous connection) are ignored.
    private var inflight: [Int32: [ClosedRange<UInt64>]] = [:]
    /// In-flight QoS 0 messages: libmosquitto drops them without an ack when the connection goes.
    private var qos0Inflight: Set<Int32> = []
    private var executeWrite: (@Sendable (WriteRequest) -> Void)?
    private var logCommand: @Sendable (CommandLog) -> Void = { _ in }
    private var stats = PublisherStats()
    private var stopped = false
    private var wake: AsyncStream<Void>.Continuation?
    private let wakeStream: AsyncStream<Void>

    public init(buffer: BufferWriter, link: any BrokerLink, profile: any PayloadProfile, context: PayloadContext,
                qos: Int, maxInflight: Int, onError: @escaping @Sendable (String) -> Void = { _ in }) {
        self.init(buffer: buffer, link: link, session: PerBatchSession(profile, context: context), qos: qos,
                  maxInflight: maxInflight, onError: onError)
    }

    /// A publisher for a session profile (ThingsBoard, Sparkplug B; Session.swift).
    public init(buffer: BufferWriter, link: any BrokerLink, session: any SessionProfile,
                qos: Int, maxInflight: Int, onError: @escaping @Sendable (String) -> Void = { _ in }) {
        self.buffer = buffer
        self.link = link
        self.session = session
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
            // Births and announcements go out before any data of the new session.
            publishControl(session.sessionStarted(now: Self.nowMs()), what: "session start")
        case .disconnected(let reason):
            session.sessionLost()
            stats.connected = false
            stats.lastError = reason
            // Whatever was in flight is handed out again after the reconnect, oldest first, so a
            // device's records reach the platform in seq order even across repeated outages. QoS 0
            // messages not yet written are dropped by libmosquitto without an ack; QoS 1/2 ones it may
            // resend itself (a duplicate with a seq already seen; the ack of its old mid is ignored).
            if !inflight.isEmpty {
                inflight.removeAll()
                qos0Inflight.removeAll()
                await buffer.rewind()
            }
        case .acknowledged(let mid):
            qos0Inflight.remove(mid)
            if let ranges = inflight.removeValue(forKey: mid) { acknowledge(ranges) }
        case .refused(let mid, let reason):
            qos0Inflight.remove(mid)
            if inflight.removeValue(forKey: mid) != nil {
                stats.lastError = reason
                onError("the broker refused a message (\(reason)); its records will be sent again")
                await buffer.rewind()
            }
        }
        wake?.yield()
    }

    private func acknowledge(_ ranges: [ClosedRange<UInt64>], message: Bool = true) {
        buffer.acknowledge(ranges)
        if message { stats.acknowledgedMessages += 1 }
        stats.acknowledgedRecords += ranges.reduce(0) { $0 + UInt64($1.count) }
        stats.lastAckAt = Self.nowMs()
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

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
            // Profiles that aggregate read enough batches to fill their messages, within a bound on records.
            let perMessage = max(1, session.batchesPerMessage)
            batches = try await buffer.nextBatches(max: min(10_000, (maxInflight - inflight.count) * perMessage),
                                                   maxRecords: perMessage == 1 ? .max : 20_000)
        } catch {
            onError("cannot read the buffer: \(error)")
            return false
        }
        guard !batches.isEmpty else { return false }
        let output = session.messages(for: batches, now: Self.nowMs())
        if !output.settled.isEmpty { acknowledge(output.settled, message: false) }
        for message in output.messages {
            let messageQoS = message.qos ?? qos
            switch link.publish(topic: message.topic, payload: message.payload, qos: messageQoS, retain: message.retain) {
            case .accepted(let mid):
                stats.publishedMessages += 1
                if !message.ranges.isEmpty {
                    inflight[mid] = message.ranges
                    if messageQoS == 0 { qos0Inflight.insert(mid) }
                }
            case .refused(let reason):
                // Not lost: the records stay in the buffer and are handed out again.
                stats.lastError = reason
                onError("publish refused: \(reason); will retry")
                await buffer.rewind()
                try? await Task.sleep(for: .seconds(1))
                return true
            }
        }
        return true
    }

    /// Publishes messages that carry no buffered record (births, announcements, replies). A failure
    /// is logged: the next session start (or the platform's retry) repeats them.
    private func publishControl(_ messages: [OutgoingMessage], what: String) {
        for message in messages {
            switch link.publish(topic: message.topic, payload: message.payload, qos: message.qos ?? qos, retain: message.retain) {
            case .accepted(let mid):
                stats.publishedMessages += 1
                if !message.ranges.isEmpty {
                    inflight[mid] = message.ranges
                    if (message.qos ?? qos) == 0 { qos0Inflight.insert(mid) }
                }
            case .refused(let reason):
                onError("\(what): cannot publish on \(message.topic) (\(reason))")
            }
        }
    }

    // MARK: Commands from the platform

    /// Wires commands to the machines: `execute` runs a checked write (on the collector) and must
    /// call `writeFinished` when it is done; `log` records every write and refusal.
    public func setCommandHandlers(execute: @escaping @Sendable (WriteRequest) -> Void,
                                   log: @escaping @Sendable (CommandLog) -> Void) {
        executeWrite = execute
        logCommand = log
    }

    /// A message arrived on one of the profile's subscriptions.
    public func received(_ message: InboundMessage) {
        let decision = session.received(message, now: Self.nowMs())
        for entry in decision.log { logCommand(entry) }
        publishControl(decision.messages, what: "command reply")
        for request in decision.writes {
            if let executeWrite {
                executeWrite(request)
            } else {
                writeFinished(request, outcome: .failed("commands are not enabled in this agent"))
            }
        }
        wake?.yield()
    }

    /// A write finished: logged and answered.
    public func writeFinished(_ request: WriteRequest, outcome: WriteOutcome) {
        let result: String = switch outcome {
        case .written: "written"
        case .failed(let why): "failed: \(why)"
        }
        logCommand(CommandLog(origin: request.origin, device: request.device, signal: request.signal,
                              value: request.value.description, result: result))
        publishControl(session.writeFinished(request, outcome: outcome, now: Self.nowMs()), what: "command reply")
    }

    /// The topic filters the profile needs subscribed.
    public func subscriptions() -> [String] { session.subscriptions }

    /// The devices were reloaded: the profile announces the change (a Sparkplug rebirth).
    public func devicesChanged(_ devices: [Device]) {
        let messages = session.devicesChanged(devices, now: Self.nowMs())
        if stats.connected { publishControl(messages, what: "device reload") }
    }

    /// Before a clean disconnect: what the profile sends last (a Sparkplug NDEATH).
    public func endSession() {
        guard stats.connected else { return }
        publishControl(session.sessionEnding(now: Self.nowMs()), what: "session end")
    }

    /// Ends `run()` after the current step. In-flight messages stay in the buffer until acknowledged.
    public func stop() {
        stopped = true
        wake?.yield()
    }

}
