// The engine behind MQTTClient: the libmosquitto handle, its callbacks, the network thread and
// the state they share. Callbacks run on the network thread, take the state lock briefly, and
// yield events or resume continuations only after releasing it (PITFALLS G13).
import CMosquitto
import Dispatch
import Foundation
import Synchronization

final class ClientCore: Sendable {
    /// The libmosquitto handle. Not Sendable as a C pointer, but libmosquitto locks internally
    /// in threaded mode (G2, G13); it is destroyed only after the network thread has ended.
    nonisolated(unsafe) let mosq: OpaquePointer
    let options: MQTTOptions
    private let continuation: AsyncStream<MQTTEvent>.Continuation
    private let state = Mutex(State())
    /// Wakes the network thread from a reconnect delay (on stop).
    private let wake = DispatchSemaphore(value: 0)
    /// Signalled once when the network thread has ended.
    private let exited = DispatchSemaphore(value: 0)

    enum Phase { case idle, connecting, connected, waiting, stopped }

    struct State {
        var phase = Phase.idle
        var started = false
        var threadRunning = false
        var stopRequested = false
        var finished = false
        var attemptStarted = ContinuousClock.now
        var attemptReported = false
        /// The last warning or error line libmosquitto logged during this attempt.
        var lastError: String?
        var failures = 0
        /// Mids of QoS 1/2 publishes not yet acked; QoS 0 mids not yet sent; acks seen before
        /// `publish` returned their mid.
        var unacked = Set<Int>()
        var unsentQoS0 = Set<Int>()
        var earlyAcks = Set<Int>()
        /// Filters to keep subscribed; `sent` once a SUBSCRIBE went out on a connection.
        var subscriptions: [(filter: String, qos: MQTTQoS, sent: Bool)] = []
        var connectWaiters: [Int: CheckedContinuation<Result<Void, MQTTError>, Never>] = [:]
        var nextWaiterID = 0
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }

    init(mosq: OpaquePointer, options: MQTTOptions, continuation: AsyncStream<MQTTEvent>.Continuation) {
        self.mosq = mosq
        self.options = options
        self.continuation = continuation
    }

    // MARK: Callbacks (network thread)

    func installCallbacks() {
        mosquitto_user_data_set(mosq, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_v5_callback_set(mosq) { _, userdata, rc, flags, _ in
            ClientCore.from(userdata)?.onConnect(rc: rc, flags: flags)
        }
        mosquitto_disconnect_v5_callback_set(mosq) { _, userdata, rc, _ in
            let err = uplink_mosq_errno()
            ClientCore.from(userdata)?.onDisconnect(rc: rc, errno: err)
        }
        mosquitto_publish_v5_callback_set(mosq) { _, userdata, mid, reason, _ in
            ClientCore.from(userdata)?.onPublish(mid: Int(mid), reason: Int(reason))
        }
        mosquitto_subscribe_v5_callback_set(mosq) { _, userdata, mid, count, granted, _ in
            let qos = granted.map { Array(UnsafeBufferPointer(start: $0, count: Int(max(0, count)))) } ?? []
            ClientCore.from(userdata)?.yield(.subscribed(mid: Int(mid), grantedQoS: qos.map(Int.init)))
        }
        mosquitto_message_v5_callback_set(mosq) { _, userdata, message, _ in
            guard let core = ClientCore.from(userdata), let m = message?.pointee, let topic = m.topic else { return }
            var payload: [UInt8] = []
            if let bytes = m.payload, m.payloadlen > 0 {
                payload = Array(UnsafeRawBufferPointer(start: bytes, count: Int(m.payloadlen)))
            }
            core.yield(.message(MQTTMessage(topic: String(cString: topic), payload: payload,
                                            qos: MQTTQoS(rawValue: Int(m.qos)) ?? .atMostOnce, retain: m.retain)))
        }
        mosquitto_log_callback_set(mosq) { _, userdata, level, text in
            guard let text else { return }
            ClientCore.from(userdata)?.onLog(level: level, text: String(cString: text))
        }
    }

    private static func from(_ userdata: UnsafeMutableRawPointer?) -> ClientCore? {
        userdata.map { Unmanaged<ClientCore>.fromOpaque($0).takeUnretainedValue() }
    }

    private func yield(_ event: MQTTEvent) {
        continuation.yield(event)
    }

    private func onConnect(rc: Int32, flags: Int32) {
        guard rc == 0 else {
            reportFailure(Self.connackError(rc, v5: options.protocolVersion == .v5))
            return
        }
        let sessionPresent = flags & 1 != 0
        let (subscriptions, waiters) = state.withLock { s in
            s.phase = .connected
            s.failures = 0
            s.attemptReported = true
            let waiters = Array(s.connectWaiters.values)
            s.connectWaiters.removeAll()
            // Without a kept session the broker forgot every subscription; with one, only those
            // never sent are missing.
            let renew = s.subscriptions.filter { !sessionPresent || !$0.sent }
            for i in s.subscriptions.indices { s.subscriptions[i].sent = true }
            return (renew, waiters)
        }
        for sub in subscriptions {
            mosquitto_subscribe(mosq, nil, sub.filter, Int32(sub.qos.rawValue))
        }
        yield(.connected(sessionPresent: sessionPresent))
        for waiter in waiters { waiter.resume(returning: .success(())) }
    }

    private func onDisconnect(rc: Int32, errno err: Int32) {
        enum Outcome { case lost, failedAttempt, quiet }
        let outcome: Outcome = state.withLock { s in
            s.unsentQoS0.removeAll()
            if s.phase == .connected {
                s.phase = .idle
                return s.stopRequested ? .quiet : .lost
            }
            if s.phase == .connecting && !s.attemptReported && !s.stopRequested { return .failedAttempt }
            return .quiet
        }
        switch outcome {
        case .lost:
            yield(.disconnected(reason: Self.text(rc: rc, errno: err), code: Int(rc)))
        case .failedAttempt:
            let last = state.withLock { $0.lastError }
            reportFailure(error(rc: rc, errno: err, lastError: last))
        case .quiet:
            break
        }
    }

    private func onPublish(mid: Int, reason: Int) {
        state.withLock { s in
            if s.unacked.remove(mid) == nil && s.unsentQoS0.remove(mid) == nil {
                s.earlyAcks.insert(mid)
            }
        }
        yield(.published(mid: mid, reasonCode: reason))
    }

    private func onLog(level: Int32, text: String) {
        let mapped: MQTTLogLevel
        switch level {
        case MOSQ_LOG_ERR: mapped = .error
        case MOSQ_LOG_WARNING: mapped = .warning
        case MOSQ_LOG_NOTICE: mapped = .notice
        case MOSQ_LOG_INFO: mapped = .info
        default: mapped = .debug
        }
        if mapped >= .warning { state.withLock { $0.lastError = text } }
        if mapped >= options.logLevel { yield(.log(level: mapped, text: text)) }
    }

    /// Ends the current attempt with `error`: one `.connectionFailed` event, waiters fail.
    private func reportFailure(_ error: MQTTError) {
        let waiters = state.withLock { s -> [CheckedContinuation<Result<Void, MQTTError>, Never>] in
            s.attemptReported = true
            s.failures += 1
            s.phase = .idle
            let waiters = Array(s.connectWaiters.values)
            s.connectWaiters.removeAll()
            return waiters
        }
        yield(.connectionFailed(error))
        for waiter in waiters { waiter.resume(returning: .failure(error)) }
    }

    // MARK: Errors

    static func text(rc: Int32, errno err: Int32) -> String {
        if rc == MOSQ_ERR_ERRNO.rawValue && err != 0 { return String(cString: strerror(err)) }
        return String(cString: mosquitto_strerror(rc))
    }

    static func connackError(_ rc: Int32, v5: Bool) -> MQTTError {
        switch (rc, v5) {
        case (4, false), (0x86, true): return .badCredentials(code: Int(rc))
        case (5, false), (0x87, true): return .notAuthorized(code: Int(rc))
        default:
            let reason = v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc)
            return .refused(code: Int(rc), reason: reason.map { String(cString: $0) } ?? "unknown reason")
        }
    }

    static func tlsError(_ line: String) -> MQTTError? {
        let lower = line.lowercased()
        if lower.contains("certificate verify failed") { return .tlsVerificationFailed(line) }
        if lower.contains("openssl") || lower.contains("ssl") || lower.contains("tls") { return .tlsHandshakeFailed(line) }
        return nil
    }

    /// The error for a failed attempt from libmosquitto's return code, errno (captured right
    /// after the failing call, G8) and the last error it logged.
    func error(rc: Int32, errno err: Int32, lastError: String?) -> MQTTError {
        if let lastError, let tls = Self.tlsError(lastError) { return tls }
        let endpoint = "\(options.host):\(options.port)"
        switch rc {
        case MOSQ_ERR_ERRNO.rawValue:
            return .network("\(endpoint): \(String(cString: strerror(err)))", code: Int(err))
        case MOSQ_ERR_EAI.rawValue, MOSQ_ERR_LOOKUP.rawValue:
            return .network("cannot resolve \(options.host)", code: Int(rc))
        case MOSQ_ERR_TLS.rawValue, MOSQ_ERR_TLS_HANDSHAKE.rawValue:
            return .tlsHandshakeFailed(lastError ?? String(cString: mosquitto_strerror(rc)))
        case MOSQ_ERR_CONN_LOST.rawValue, MOSQ_ERR_NO_CONN.rawValue, MOSQ_ERR_CONN_REFUSED.rawValue:
            return .network("\(endpoint): the connection was closed before CONNACK\(lastError.map { " (\($0))" } ?? "")", code: Int(rc))
        default:
            return .library(code: Int(rc), message: lastError ?? String(cString: mosquitto_strerror(rc)))
        }
    }

    // MARK: Network thread

    func start() throws(MQTTError) {
        try state.withLock { (s) throws(MQTTError) in
            if s.stopRequested { throw .stopped }
            if s.started { throw .invalidOptions("start() called twice") }
            s.started = true
            s.threadRunning = true
        }
        let thread = Thread { [self] in run() }
        thread.name = "uplink-mqtt"
        thread.start()
    }

    private func run() {
        var first = true
        while !state.withLock({ $0.stopRequested }) {
            state.withLock { s in
                s.phase = .connecting
                s.attemptStarted = .now
                s.attemptReported = false
                s.lastError = nil
            }
            let keepAlive = Int32(options.keepAlive.seconds)
            let rc = first ? mosquitto_connect_async(mosq, options.host, Int32(options.port), keepAlive)
                           : mosquitto_reconnect_async(mosq)
            let err = uplink_mosq_errno()
            first = false
            if rc == MOSQ_ERR_SUCCESS.rawValue {
                driveConnection()
            } else {
                let last = state.withLock { $0.lastError }
                reportFailure(error(rc: rc, errno: err, lastError: last))
            }
            let failures = state.withLock { s -> Int? in
                guard !s.stopRequested else { return nil }
                s.phase = .waiting
                return s.failures
            }
            guard let failures else { break }
            let delay = options.reconnect.delay(afterFailures: max(0, failures - 1), random: Double.random(in: 0...1))
            _ = wake.wait(timeout: .now() + .milliseconds(Int(max(1, delay.seconds * 1000))))
        }
        finish()
    }

    /// Runs the loop for one connection attempt and, if it succeeds, the connection. Returns when
    /// the attempt failed or timed out, the connection ended, or a stop finished.
    private func driveConnection() {
        var disconnectDeadline: ContinuousClock.Instant?
        while true {
            let (stop, phase, started, reported, lastError) = state.withLock { s in
                (s.stopRequested, s.phase, s.attemptStarted, s.attemptReported, s.lastError)
            }
            if stop {
                // A clean DISCONNECT is under way (sent by stop()); give it a moment to go out.
                guard phase == .connected else { return }
                if disconnectDeadline == nil { disconnectDeadline = .now + .seconds(2) }
                if let deadline = disconnectDeadline, deadline < .now { return }
            }
            var timeoutMs: Int32 = 1000
            if phase == .connecting && !reported {
                let remaining = options.connectTimeout - (ContinuousClock.now - started)
                if remaining <= .zero {
                    reportFailure(.timeout(lastError ?? ""))
                    return
                }
                timeoutMs = Int32(max(1, min(1000, remaining.seconds * 1000)))
            }
            let rc = mosquitto_loop(mosq, timeoutMs, 1)
            let err = uplink_mosq_errno()
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                // Lost connections and refused CONNACKs were reported by the callbacks; a TLS
                // failure fires no callback at all (G12), so it is reported here.
                let unreported = state.withLock { s in
                    s.phase == .connecting && !s.attemptReported && !s.stopRequested ? s.lastError : nil as String??
                }
                if let last = unreported { reportFailure(error(rc: rc, errno: err, lastError: last)) }
                state.withLock { s in if s.phase == .connected { s.phase = .idle } }
                return
            }
        }
    }

    private func finish() {
        let (stopWaiters, connectWaiters) = state.withLock { s in
            s.phase = .stopped
            s.threadRunning = false
            s.finished = true
            let result = (s.stopWaiters, Array(s.connectWaiters.values))
            s.stopWaiters.removeAll()
            s.connectWaiters.removeAll()
            return result
        }
        yield(.stopped)
        continuation.finish()
        for waiter in connectWaiters { waiter.resume(returning: .failure(.stopped)) }
        for waiter in stopWaiters { waiter.resume() }
        exited.signal()
    }

    // MARK: API (any thread)

    func publish(topic: String, payload: [UInt8], qos: MQTTQoS, retain: Bool) throws(MQTTError) -> MQTTMessageID {
        guard payload.count <= 268_435_455 else { throw .payloadTooLarge(payload.count) }
        if state.withLock({ $0.stopRequested }) { throw .stopped }
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes { buffer in
            mosquitto_publish(mosq, &mid, topic, Int32(buffer.count), buffer.baseAddress, Int32(qos.rawValue), retain)
        }
        let err = uplink_mosq_errno()
        switch rc {
        case MOSQ_ERR_SUCCESS.rawValue,
             MOSQ_ERR_NO_CONN.rawValue where qos != .atMostOnce:
            // NO_CONN at QoS >= 1: queued and sent after the reconnect (G9). The ack may already
            // have arrived (G13): then there is nothing left to wait for.
            let id = Int(mid)
            state.withLock { s in
                if s.earlyAcks.remove(id) == nil {
                    if qos == .atMostOnce { s.unsentQoS0.insert(id) } else { s.unacked.insert(id) }
                }
            }
            return id
        case MOSQ_ERR_NO_CONN.rawValue:
            throw .notConnected
        case MOSQ_ERR_INVAL.rawValue, MOSQ_ERR_MALFORMED_UTF8.rawValue:
            throw .invalidTopic(topic)
        case MOSQ_ERR_PAYLOAD_SIZE.rawValue, MOSQ_ERR_OVERSIZE_PACKET.rawValue:
            throw .payloadTooLarge(payload.count)
        case MOSQ_ERR_ERRNO.rawValue:
            throw .library(code: Int(rc), message: String(cString: strerror(err)))
        default:
            throw .library(code: Int(rc), message: String(cString: mosquitto_strerror(rc)))
        }
    }

    func subscribe(_ filter: String, qos: MQTTQoS) throws(MQTTError) -> MQTTMessageID? {
        guard mosquitto_sub_topic_check(filter) == MOSQ_ERR_SUCCESS.rawValue else { throw .invalidTopic(filter) }
        let connected = try state.withLock { (s) throws(MQTTError) -> Bool in
            if s.stopRequested { throw .stopped }
            s.subscriptions.removeAll { $0.filter == filter }
            s.subscriptions.append((filter, qos, s.phase == .connected))
            return s.phase == .connected
        }
        guard connected else { return nil }
        var mid: Int32 = 0
        let rc = mosquitto_subscribe(mosq, &mid, filter, Int32(qos.rawValue))
        switch rc {
        case MOSQ_ERR_SUCCESS.rawValue: return Int(mid)
        case MOSQ_ERR_NO_CONN.rawValue: return nil  // renewed on reconnect
        default: throw .library(code: Int(rc), message: String(cString: mosquitto_strerror(rc)))
        }
    }

    var pendingAcks: Int { state.withLock { $0.unacked.count } }
    var isConnected: Bool { state.withLock { $0.phase == .connected } }

    func waitUntilConnected(timeout: Duration) async throws(MQTTError) {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Void, MQTTError>, Never>) in
            enum Now { case connected, stopped, wait(Int) }
            let now: Now = state.withLock { s in
                if s.phase == .connected { return .connected }
                if s.finished || s.stopRequested { return .stopped }
                let id = s.nextWaiterID
                s.nextWaiterID += 1
                s.connectWaiters[id] = continuation
                return .wait(id)
            }
            switch now {
            case .connected: continuation.resume(returning: .success(()))
            case .stopped: continuation.resume(returning: .failure(.stopped))
            case .wait(let id):
                let millis = Int(max(1, timeout.seconds * 1000))
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(millis)) { [self] in
                    let waiter = state.withLock { $0.connectWaiters.removeValue(forKey: id) }
                    waiter?.resume(returning: .failure(.timeout("not connected within \(timeout)")))
                }
            }
        }
        try result.get()
    }

    /// Requests a clean stop and waits for the network thread to end.
    func stop() async {
        let running = requestStop()
        guard running else {
            finishIfNeverStarted()
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if !s.threadRunning { return true }
                s.stopWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Sets the stop flag, sends DISCONNECT (which also wakes the loop) and wakes a reconnect
    /// delay. Returns whether the network thread is running.
    private func requestStop() -> Bool {
        let running = state.withLock { s -> Bool in
            s.stopRequested = true
            return s.threadRunning
        }
        if running {
            mosquitto_disconnect(mosq)
            wake.signal()
        }
        return running
    }

    private func finishIfNeverStarted() {
        let finish = state.withLock { s -> Bool in
            guard !s.finished && !s.threadRunning else { return false }
            s.finished = true
            s.phase = .stopped
            return true
        }
        if finish {
            yield(.stopped)
            continuation.finish()
        }
    }

    /// From MQTTClient.deinit: stop (clean DISCONNECT), wait for the thread, free the handle.
    func shutdown() {
        if requestStop() { exited.wait() } else { finishIfNeverStarted() }
        mosquitto_destroy(mosq)
    }
}
