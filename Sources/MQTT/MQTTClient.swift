/// MQTT: a Swift client over libmosquitto 2.0 for publishing records to the platform broker.
///
/// Its job: connect (TCP or TLS, credentials, will, MQTT 3.1.1 or 5), keep the connection up
/// (reconnect with exponential backoff and jitter), publish with QoS 0/1/2 and report every ack
/// by message id, subscribe, and disconnect cleanly. The in-flight window policy belongs to the
/// caller (the Publisher); the client exposes `pendingAcks` for it.
///
/// Guarantees:
/// - Every connection attempt ends in exactly one event: `.connected`, or `.connectionFailed`
///   with a typed error saying what to fix (refused, unreachable, bad credentials, not
///   authorized, TLS verification, timeout). A TLS failure that libmosquitto reports only in a
///   log line (PITFALLS G12) is still reported, by the per-attempt `connectTimeout` at the latest.
/// - `publish` at QoS 1/2 while disconnected is accepted and returns its mid (libmosquitto queues
///   it and sends it after the reconnect, G9); its ack arrives as `.published(mid:)` like any other.
///   An ack that arrives before `publish` returns (G13) is accounted for, never lost.
/// - Callbacks never block: they update state under a short lock and yield events.
/// - `disconnect()` sends DISCONNECT (so the broker does not publish the will) and stops the
///   network thread without `pthread_cancel`.
/// - No C type appears in the public API; the password is never logged.
///
/// Threading: libmosquitto runs on one network thread owned by the client, a loop over
/// `mosquitto_loop` in threaded mode, rather than `mosquitto_loop_start`. Measured with 2.0.11:
/// after a `connect_async` that fails at once (connection refused) the `loop_start` thread waits
/// forever and never retries; after a TLS verification failure it exits silently (G12); and
/// `loop_stop` can hang if it never connected. Our loop retries with its own backoff, times each
/// attempt out, and stops without `pthread_cancel`. `publish`, `subscribe` and the properties are
/// safe from any thread and never wait for the network. Releasing a client without
/// `disconnect()` disconnects it in `deinit`, which waits briefly (at most ~2 s) for the thread.
import CMosquitto
import Dispatch
import Foundation
import Synchronization

/// libmosquitto's global initialisation, exactly once per process (G14).
enum Library {
    static let initialized: Int32 = mosquitto_lib_init()
}

/// An MQTT connection to one broker. Create it, `start()` it, read `events`, `publish`, and
/// `disconnect()` at the end.
public final class MQTTClient: Sendable {
    public let options: MQTTOptions
    /// Everything the client reports, in order. Unbounded: keep reading it (acks arrive here).
    public let events: AsyncStream<MQTTEvent>
    private let core: ClientCore

    /// Validates `options` and prepares the connection; does not connect yet.
    public init(_ options: MQTTOptions) throws(MQTTError) {
        _ = Library.initialized
        try Configuration.validate(options)
        guard let mosq = mosquitto_new(options.clientID, options.cleanSession, nil) else {
            let err = uplink_mosq_errno()
            throw .library(code: Int(MOSQ_ERR_NOMEM.rawValue), message: "mosquitto_new failed: \(String(cString: strerror(err)))")
        }
        do {
            try Configuration.apply(options, to: mosq)
        } catch {
            mosquitto_destroy(mosq)
            throw error
        }
        let (stream, continuation) = AsyncStream.makeStream(of: MQTTEvent.self)
        let core = ClientCore(mosq: mosq, options: options, continuation: continuation)
        core.installCallbacks()
        self.options = options
        self.events = stream
        self.core = core
    }

    deinit {
        core.shutdown()
    }

    /// Starts the network thread and the first connection attempt. Returns at once; the outcome
    /// arrives as `.connected` or `.connectionFailed`. Throws `.stopped` after `disconnect()`,
    /// `.invalidOptions` if already started.
    public func start() throws(MQTTError) {
        try core.start()
    }

    /// Waits until connected. Throws the first connection failure reported after this call, or
    /// `.timeout` after `timeout`. The client keeps retrying either way.
    public func waitUntilConnected(timeout: Duration) async throws(MQTTError) {
        try await core.waitUntilConnected(timeout: timeout)
    }

    /// Publishes a message and returns its message id; its ack arrives as `.published(mid:)`.
    /// At QoS 1/2 a message published while disconnected is queued and sent after reconnecting.
    /// At QoS 0 it throws `.notConnected` when disconnected (the message is dropped).
    @discardableResult
    public func publish(topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce,
                        retain: Bool = false) throws(MQTTError) -> MQTTMessageID {
        try core.publish(topic: topic, payload: payload, qos: qos, retain: retain)
    }

    /// Publishes UTF-8 text.
    @discardableResult
    public func publish(topic: String, text: String, qos: MQTTQoS = .atLeastOnce,
                        retain: Bool = false) throws(MQTTError) -> MQTTMessageID {
        try publish(topic: topic, payload: Array(text.utf8), qos: qos, retain: retain)
    }

    /// Subscribes to `filter` (wildcards allowed). The subscription is remembered and renewed
    /// after every reconnect that did not keep the session. Returns the SUBSCRIBE's message id,
    /// or nil when disconnected (it is sent when the connection is up).
    @discardableResult
    public func subscribe(_ filter: String, qos: MQTTQoS = .atLeastOnce) throws(MQTTError) -> MQTTMessageID? {
        try core.subscribe(filter, qos: qos)
    }

    /// QoS 1/2 messages published and not yet acknowledged by the broker.
    public var pendingAcks: Int { core.pendingAcks }

    /// Whether the connection is up (CONNACK accepted and not lost since).
    public var isConnected: Bool { core.isConnected }

    /// Sends DISCONNECT if connected (the will is not published), stops reconnecting and ends the
    /// network thread; `events` ends with `.stopped`. Messages not yet acknowledged are dropped
    /// from memory (the disk buffer still has them). Idempotent.
    public func disconnect() async {
        await core.stop()
    }
}

// MARK: - Configuration

enum Configuration {
    static func validate(_ o: MQTTOptions) throws(MQTTError) {
        guard !o.host.isEmpty else { throw .invalidOptions("host is empty") }
        guard (1...65535).contains(o.port) else { throw .invalidOptions("port \(o.port) is not in 1...65535") }
        guard !o.clientID.isEmpty, o.clientID.utf8.count <= 65535 else {
            throw .invalidOptions("client id must be 1...65535 bytes")
        }
        let keepAlive = o.keepAlive.seconds
        guard keepAlive >= 5, keepAlive <= 65535 else {
            throw .invalidOptions("keepalive must be 5...65535 seconds (got \(keepAlive))")
        }
        guard o.connectTimeout > .zero else { throw .invalidOptions("connect timeout must be positive") }
        if o.password != nil && o.username == nil { throw .invalidOptions("a password needs a username") }
        if let n = o.sendMaximum, !(1...65535).contains(n) { throw .invalidOptions("send maximum must be 1...65535") }
        if let will = o.will, mosquitto_pub_topic_check(will.topic) != MOSQ_ERR_SUCCESS.rawValue {
            throw .invalidTopic(will.topic)
        }
        if let tls = o.tls {
            if (tls.certificateFile == nil) != (tls.keyFile == nil) {
                throw .invalidOptions("a client certificate needs its key file, and a key file its certificate")
            }
            for (what, path) in [("CA file", tls.caFile), ("CA directory", tls.caDirectory),
                                 ("certificate file", tls.certificateFile), ("key file", tls.keyFile)] {
                guard let path else { continue }
                if access(path, R_OK) != 0 {
                    let err = uplink_mosq_errno()
                    throw .tlsSetup("\(what) \(path): \(String(cString: strerror(err)))")
                }
            }
        }
    }

    static func apply(_ o: MQTTOptions, to mosq: OpaquePointer) throws(MQTTError) {
        func check(_ rc: Int32, _ what: String) throws(MQTTError) {
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw .invalidOptions("\(what): \(String(cString: mosquitto_strerror(rc)))")
            }
        }
        // Publish and subscribe come from other threads; the network loop is ours.
        try check(mosquitto_threaded_set(mosq, true), "threaded mode")
        try check(mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION,
                                       o.protocolVersion == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311), "protocol version")
        if let username = o.username {
            try check(mosquitto_username_pw_set(mosq, username, o.password), "username")
        }
        if let n = o.sendMaximum {
            try check(mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, Int32(n)), "send maximum")
        }
        if let will = o.will {
            let rc = will.payload.withUnsafeBytes { buffer in
                mosquitto_will_set(mosq, will.topic, Int32(buffer.count), buffer.baseAddress,
                                   Int32(will.qos.rawValue), will.retain)
            }
            try check(rc, "will")
        }
        if let tls = o.tls {
            var caDirectory = tls.caDirectory
            if tls.caFile == nil && tls.caDirectory == nil {
                try check(mosquitto_int_option(mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1), "TLS OS certificates")
                if tls.certificateFile != nil { caDirectory = "/etc/ssl/certs" }
            }
            if tls.caFile != nil || caDirectory != nil {
                let rc = mosquitto_tls_set(mosq, tls.caFile, caDirectory, tls.certificateFile, tls.keyFile, nil)
                guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                    throw .tlsSetup("libmosquitto refused the TLS files: \(String(cString: mosquitto_strerror(rc)))")
                }
            }
            let rc = mosquitto_tls_opts_set(mosq, tls.insecure ? 0 : 1, tls.minimumVersion, nil)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw .tlsSetup("TLS version \(tls.minimumVersion ?? "default"): \(String(cString: mosquitto_strerror(rc)))")
            }
            if tls.insecure { try check(mosquitto_tls_insecure_set(mosq, true), "TLS insecure") }
        }
    }
}
