// Options, events and errors of the MQTT client. Plain Swift values: nothing from libmosquitto.

/// MQTT protocol version spoken to the broker.
public enum MQTTProtocolVersion: Sendable, Hashable {
    case v311
    case v5
}

/// Quality of service of a publish or subscription.
public enum MQTTQoS: Int, Sendable, Hashable, CaseIterable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2
}

/// Severity of libmosquitto's log lines, lowest first.
public enum MQTTLogLevel: Int, Sendable, Hashable, Comparable {
    case debug, info, notice, warning, error
    public static func < (a: MQTTLogLevel, b: MQTTLogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// The last will: published by the broker if the client goes away without a clean DISCONNECT.
public struct MQTTWill: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: MQTTQoS
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }

    public init(topic: String, payload: String, qos: MQTTQoS = .atLeastOnce, retain: Bool = false) {
        self.init(topic: topic, payload: Array(payload.utf8), qos: qos, retain: retain)
    }
}

/// TLS settings. Server verification (chain and host name) is on unless `insecure` is set.
public struct MQTTTLSOptions: Sendable, Hashable {
    /// PEM file of the CA(s) that signed the broker's certificate.
    public var caFile: String?
    /// Directory of hashed CA certificates (as made by `openssl rehash`). With neither `caFile`
    /// nor `caDirectory`, the operating system's CA store is used.
    public var caDirectory: String?
    /// Client certificate (PEM) for mutual TLS; needs `keyFile`.
    public var certificateFile: String?
    /// Unencrypted PEM private key of `certificateFile` (encrypted keys are not supported).
    public var keyFile: String?
    /// Disables verification of the broker's certificate chain and host name. For tests only:
    /// anybody on the path can then read and change the traffic.
    public var insecure: Bool
    /// Lowest TLS version accepted, e.g. "tlsv1.2" or "tlsv1.3"; nil for libmosquitto's default (1.2).
    public var minimumVersion: String?

    public init(caFile: String? = nil, caDirectory: String? = nil, certificateFile: String? = nil,
                keyFile: String? = nil, insecure: Bool = false, minimumVersion: String? = nil) {
        self.caFile = caFile
        self.caDirectory = caDirectory
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.insecure = insecure
        self.minimumVersion = minimumVersion
    }
}

/// How long to wait between connection attempts: `initialDelay`, multiplied by `multiplier`
/// after each failed attempt up to `maxDelay`, each delay varied by ±`jitter` (a fraction) so a
/// fleet of gateways does not reconnect in lockstep. Reset after a successful connection.
public struct MQTTReconnectPolicy: Sendable, Hashable {
    public var initialDelay: Duration
    public var maxDelay: Duration
    public var multiplier: Double
    public var jitter: Double

    public init(initialDelay: Duration = .seconds(1), maxDelay: Duration = .seconds(60),
                multiplier: Double = 2, jitter: Double = 0.2) {
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The delay before attempt number `failures + 1` (without jitter when `random` is nil).
    public func delay(afterFailures failures: Int, random: Double? = nil) -> Duration {
        let initial = initialDelay.seconds
        let cap = max(initial, maxDelay.seconds)
        var seconds = initial
        for _ in 0..<max(0, failures) where seconds < cap { seconds *= max(1, multiplier) }
        seconds = min(seconds, cap)
        if let random { seconds *= 1 + jitter * (2 * random - 1) }
        return .milliseconds(Int64(max(0, seconds) * 1000))
    }
}

/// Everything needed to connect. The password is never logged or printed (`description` hides it);
/// the caller reads it from a file or the environment.
public struct MQTTOptions: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var clientID: String
    public var protocolVersion: MQTTProtocolVersion
    /// MQTT 3.1.1 clean session / MQTT 5 clean start.
    public var cleanSession: Bool
    public var username: String?
    public var password: String?
    public var tls: MQTTTLSOptions?
    /// Keepalive interval (at least 5 s; libmosquitto's minimum).
    public var keepAlive: Duration
    public var will: MQTTWill?
    public var reconnect: MQTTReconnectPolicy
    /// How long one connection attempt may take until CONNACK before it counts as failed. Needed
    /// because some failures (a TLS handshake that fails, PITFALLS G12) give no other signal.
    public var connectTimeout: Duration
    /// Messages libmosquitto keeps in flight at once (MOSQ_OPT_SEND_MAXIMUM; under MQTT 5 the
    /// broker's Receive Maximum can lower it). More are queued in memory inside libmosquitto.
    public var sendMaximum: Int?
    /// Lowest level of libmosquitto's log lines delivered as `.log` events.
    public var logLevel: MQTTLogLevel

    public init(host: String, port: Int = 1883, clientID: String, protocolVersion: MQTTProtocolVersion = .v311,
                cleanSession: Bool = true, username: String? = nil, password: String? = nil,
                tls: MQTTTLSOptions? = nil, keepAlive: Duration = .seconds(30), will: MQTTWill? = nil,
                reconnect: MQTTReconnectPolicy = MQTTReconnectPolicy(), connectTimeout: Duration = .seconds(10),
                sendMaximum: Int? = nil, logLevel: MQTTLogLevel = .warning) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.cleanSession = cleanSession
        self.username = username
        self.password = password
        self.tls = tls
        self.keepAlive = keepAlive
        self.will = will
        self.reconnect = reconnect
        self.connectTimeout = connectTimeout
        self.sendMaximum = sendMaximum
        self.logLevel = logLevel
    }

    public var description: String {
        var parts = ["\(tls == nil ? "mqtt" : "mqtts")://\(host):\(port)", "client id \(clientID)",
                     protocolVersion == .v5 ? "MQTT 5" : "MQTT 3.1.1"]
        if let username { parts.append("user \(username)") }
        if password != nil { parts.append("password ***") }
        if tls?.insecure == true { parts.append("TLS verification OFF") }
        return parts.joined(separator: ", ")
    }
}

/// A message received on a subscription.
public struct MQTTMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: MQTTQoS
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: MQTTQoS, retain: Bool) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }

    /// The payload as UTF-8 text (invalid bytes replaced).
    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// A message id returned by `publish`/`subscribe` and carried by the matching ack (1...65535).
public typealias MQTTMessageID = Int

/// What the client reports. Delivered in order on `MQTTClient.events`.
public enum MQTTEvent: Sendable, Hashable {
    /// CONNACK accepted. `sessionPresent`: the broker kept a session (only with cleanSession false).
    case connected(sessionPresent: Bool)
    /// One connection attempt failed (refused, unreachable, bad credentials, TLS, timeout). The
    /// client retries after the reconnect delay; the error says what to fix.
    case connectionFailed(MQTTError)
    /// An established connection was lost (`code` is libmosquitto's or the broker's reason). The
    /// client reconnects; QoS 1/2 messages not yet acked are sent again.
    case disconnected(reason: String, code: Int)
    /// The broker acknowledged a publish: PUBACK (QoS 1) or PUBCOMP (QoS 2); for QoS 0, the
    /// message was written to the socket. Under MQTT 5 a `reasonCode` >= 0x80 means the broker
    /// refused the message.
    case published(mid: MQTTMessageID, reasonCode: Int)
    /// SUBACK: the granted QoS per topic (0x80 and up: refused).
    case subscribed(mid: MQTTMessageID, grantedQoS: [Int])
    case message(MQTTMessage)
    /// A libmosquitto log line at or above `MQTTOptions.logLevel`.
    case log(level: MQTTLogLevel, text: String)
    /// The client stopped (after `disconnect()`); the last event.
    case stopped
}

/// Errors of the MQTT client. Each description says what to do.
public enum MQTTError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The options cannot work (empty client id, bad port, keepalive below 5 s, ...).
    case invalidOptions(String)
    /// A TLS file is missing or unreadable, or libmosquitto rejected the TLS settings.
    case tlsSetup(String)
    /// The broker could not be reached over TCP (refused, unreachable, DNS).
    case network(String, code: Int)
    /// CONNACK: bad user name or password (MQTT 3.1.1 code 4, MQTT 5 0x86).
    case badCredentials(code: Int)
    /// CONNACK: not authorized (MQTT 3.1.1 code 5, MQTT 5 0x87).
    case notAuthorized(code: Int)
    /// CONNACK with another refusal (protocol version, client id, server unavailable, banned, ...).
    case refused(code: Int, reason: String)
    /// TLS: the broker's certificate failed verification (unknown CA, wrong host name, expired).
    case tlsVerificationFailed(String)
    /// TLS handshake failed for another reason (protocol version, client certificate refused, ...).
    case tlsHandshakeFailed(String)
    /// No CONNACK within `connectTimeout`. Carries the last error line libmosquitto logged, if any.
    case timeout(String)
    /// QoS 0 publish while disconnected: the message was dropped.
    case notConnected
    /// The topic is not valid for a publish (wildcards, empty, bad UTF-8) or a subscription.
    case invalidTopic(String)
    /// The payload exceeds the MQTT limit (268 435 455 bytes) or the broker's maximum packet size.
    case payloadTooLarge(Int)
    /// The client was stopped with `disconnect()`.
    case stopped
    /// Another libmosquitto error (`code` is the MOSQ_ERR value).
    case library(code: Int, message: String)

    /// A numeric code: CONNACK/reason code, errno, or libmosquitto's MOSQ_ERR value (0 if none).
    public var code: Int {
        switch self {
        case .network(_, let code), .badCredentials(let code), .notAuthorized(let code),
             .refused(let code, _), .library(let code, _): code
        case .payloadTooLarge: 9
        case .notConnected: 4
        default: 0
        }
    }

    public var description: String {
        switch self {
        case .invalidOptions(let m): "invalid MQTT options: \(m)"
        case .tlsSetup(let m): "TLS setup failed: \(m); check the ca/cert/key file paths and that they are readable PEM files"
        case .network(let m, _): "cannot connect to the broker: \(m); check that the broker runs and the host and port are right"
        case .badCredentials(let c): "the broker refused the connection: bad username or password (code \(c)); check the credentials"
        case .notAuthorized(let c): "the broker refused the connection: not authorized (code \(c)); check the username, password and the broker's ACL"
        case .refused(let c, let r): "the broker refused the connection: \(r) (code \(c))"
        case .tlsVerificationFailed(let m): "TLS: certificate verify failed (\(m)); check ca_file and that the broker's certificate is for this host name"
        case .tlsHandshakeFailed(let m): "TLS handshake failed (\(m)); check that the port speaks TLS and the TLS version and client certificate"
        case .timeout(let m): "no CONNACK from the broker in time\(m.isEmpty ? "" : " (last error: \(m))"); check the network, the port and whether it expects TLS"
        case .notConnected: "not connected: QoS 0 message dropped"
        case .invalidTopic(let t): "invalid topic '\(t)'"
        case .payloadTooLarge(let n): "payload of \(n) bytes is too large for MQTT"
        case .stopped: "the MQTT client was stopped"
        case .library(let c, let m): "libmosquitto error \(c): \(m)"
        }
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
