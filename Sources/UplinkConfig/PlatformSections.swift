import UplinkCore

/// The `mqtt` and `buffer` sections, and the broker URL shared with `uplink run --broker`.
extension ConfigBuilder {
    static let mqttKeys = ["broker", "client_id", "protocol", "qos", "username", "password_file", "password_env", "keepalive",
                           "tls", "topic_prefix", "data_topic", "status_topic", "max_inflight", "max_message_size",
                           "reconnect_min", "reconnect_max", "payload", "username_file", "username_env", "sparkplug"]
    static let tlsKeys = ["ca_file", "ca_path", "cert_file", "key_file", "insecure"]
    static let bufferKeys = ["max_size", "max_age", "when_full", "late_after"]
    static let payloadProfiles = PayloadKind.allCases.map(\.rawValue)
    static let sparkplugKeys = ["group_id", "edge_node_id"]

    func mqttSettings(_ at: Cursor) -> MQTTSettings? {
        guard let f = reader.fields(at, what: "MQTT settings", allowed: Self.mqttKeys) else { return nil }
        var mqtt = MQTTSettings()
        if let c = f["broker"], let text = reader.string(c) {
            switch BrokerURL.parse(text) {
            case .success(let url):
                mqtt.host = url.host
                mqtt.port = url.port
                if url.tls { mqtt.tls = MQTTSettings.TLS() }
            case .failure(let why): reader.fail(c, why.description)
            }
        }
        if let c = f["client_id"], let v = reader.string(c) {
            if v.isEmpty || v.utf8.count > 65535 { reader.fail(c, "expected a non-empty client id") } else { mqtt.clientID = v }
        }
        if let c = f["protocol"], let v = reader.string(c) {
            if let p = MQTTSettings.ProtocolVersion(rawValue: v) { mqtt.protocolVersion = p } else {
                reader.fail(c, "unknown MQTT protocol '\(v)'; expected 3.1.1 or 5")
            }
        }
        if let c = f["qos"], let v = reader.int(c, in: 0...2, what: "a QoS level") { mqtt.qos = v }
        if let c = f["username"], let v = reader.string(c) { mqtt.username = v }
        let usernameKeys = ["username", "username_file", "username_env"].compactMap { f[$0] }
        if usernameKeys.count > 1, let c = usernameKeys.last {
            reader.fail(c, "give one of username, username_file or username_env")
        } else if let c = f["username_file"] {
            if let v = reader.string(c, what: "a file path") { mqtt.usernameSource = .file(v) }
        } else if let c = f["username_env"] {
            if let v = reader.string(c, what: "an environment variable name") { mqtt.usernameSource = .environment(v) }
        }
        switch (f["password_file"], f["password_env"]) {
        case (.some(let file), .some(let env)):
            _ = file
            reader.fail(env, "give either password_file or password_env, not both")
        case (.some(let c), nil):
            if let v = reader.string(c, what: "a file path") { mqtt.password = .file(v) }
        case (nil, .some(let c)):
            if let v = reader.string(c, what: "an environment variable name") { mqtt.password = .environment(v) }
        case (nil, nil): break
        }
        if let c = f["keepalive"], let v = reader.duration(c, in: 5000...3_600_000) { mqtt.keepaliveSeconds = v / 1000 }
        if let c = f["tls"], let t = reader.fields(c, what: "TLS settings", allowed: Self.tlsKeys) {
            var tls = mqtt.tls ?? MQTTSettings.TLS()
            if let c = t["ca_file"] { tls.caFile = reader.string(c, what: "a file path") }
            if let c = t["ca_path"] { tls.caPath = reader.string(c, what: "a directory path") }
            if let c = t["cert_file"] { tls.certFile = reader.string(c, what: "a file path") }
            if let c = t["key_file"] { tls.keyFile = reader.string(c, what: "a file path") }
            if let c = t["insecure"], let v = reader.bool(c) { tls.insecure = v }
            if (tls.certFile == nil) != (tls.keyFile == nil) {
                reader.fail(c, "a client certificate needs both cert_file and key_file; expected both or neither")
            }
            mqtt.tls = tls
        }
        if let c = f["topic_prefix"], let v = reader.string(c) { mqtt.topicPrefix = v }
        if let c = f["data_topic"], let v = topicTemplate(c, needsDevice: true) { mqtt.dataTopic = v }
        if let c = f["status_topic"], let v = topicTemplate(c, needsDevice: false) { mqtt.statusTopic = v }
        if let c = f["max_inflight"], let v = reader.int(c, in: 1...10_000, what: "a message count") { mqtt.maxInflight = v }
        if let c = f["max_message_size"], let v = size(c, in: 1024...268_435_455) { mqtt.maxMessageBytes = Int(v) }
        if let c = f["reconnect_min"], let v = reader.duration(c, in: 100...3_600_000) { mqtt.reconnectMinMs = v }
        if let c = f["reconnect_max"], let v = reader.duration(c, in: 100...3_600_000) { mqtt.reconnectMaxMs = v }
        if mqtt.reconnectMaxMs < mqtt.reconnectMinMs, let c = f["reconnect_max"] {
            reader.fail(c, "reconnect_max is below reconnect_min; expected at least \(YAMLReader.format(mqtt.reconnectMinMs))")
        }
        if let c = f["payload"], let v = reader.string(c) {
            if Self.payloadProfiles.contains(v) { mqtt.payload = v } else {
                reader.fail(c, "unknown payload profile '\(v)'; expected one of \(Self.payloadProfiles.joined(separator: ", "))")
            }
        }
        applyProfileRules(f, to: &mqtt)
        return mqtt
    }

    /// A topic template: only known placeholders, no MQTT wildcards.
    func topicTemplate(_ at: Cursor, needsDevice: Bool) -> String? {
        guard let text = reader.string(at) else { return nil }
        if text.contains("+") || text.contains("#") || text.isEmpty {
            reader.fail(at, "'\(text)' cannot be a publish topic; expected a topic without + or # wildcards")
            return nil
        }
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}") else {
                reader.fail(at, "unclosed '{' in '\(text)'; expected placeholders {prefix}, {site}, {agent}, {device}")
                return nil
            }
            let name = rest[rest.index(after: open)..<close]
            if !["prefix", "site", "agent", "device"].contains(name) {
                reader.fail(at, "unknown placeholder {\(name)}; expected {prefix}, {site}, {agent} or {device}")
                return nil
            }
            rest = rest[rest.index(after: close)...]
        }
        if needsDevice && !text.contains("{device}") {
            reader.fail(at, "the data topic must contain {device}; expected e.g. {prefix}/{site}/{device}/data")
            return nil
        }
        return text
    }

    func bufferSettings(_ at: Cursor) -> BufferSettings? {
        guard let f = reader.fields(at, what: "buffer settings", allowed: Self.bufferKeys) else { return nil }
        var buffer = BufferSettings()
        if let c = f["max_size"], let v = size(c, in: 1 << 20 ... 1 << 40) { buffer.maxBytes = v }
        if let c = f["max_age"], let v = reader.duration(c, in: 60_000...(366 * 86_400_000)) { buffer.maxAgeMs = Int64(v) }
        if let c = f["late_after"], let v = reader.duration(c, in: 0...86_400_000) { buffer.lateAfterMs = Int64(v) }
        if let c = f["when_full"], let v = reader.string(c) {
            if let p = BufferSettings.WhenFull(rawValue: v) { buffer.whenFull = p } else {
                reader.fail(c, "unknown policy '\(v)'; expected drop_oldest or drop_newest")
            }
        }
        return buffer
    }

    /// A size with a unit: `512KB`, `64MB`, `2GB` (powers of 1024), or plain bytes.
    func size(_ at: Cursor, in range: ClosedRange<Int64>) -> Int64? {
        guard let text = reader.string(at, what: "a size") else { return nil }
        let units: [(String, Int64)] = [("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40), ("B", 1)]
        var value: Int64?
        if let plain = Int64(text) { value = plain }
        for (suffix, factor) in units where value == nil && text.uppercased().hasSuffix(suffix) {
            if let n = Double(text.dropLast(suffix.count)), n.isFinite, n >= 0, n * Double(factor) < 9e18 { value = Int64(n * Double(factor)) }
            break
        }
        guard let value else {
            reader.fail(at, "expected a size like 512KB, 64MB or 2GB, found '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            reader.fail(at, "\(text) is out of range; expected a size from \(Self.sizeText(range.lowerBound)) to \(Self.sizeText(range.upperBound))")
            return nil
        }
        return value
    }

    static func sizeText(_ bytes: Int64) -> String {
        for (suffix, factor) in [("TB", Int64(1) << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] where bytes >= factor && bytes % factor == 0 {
            return "\(bytes / factor)\(suffix)"
        }
        return "\(bytes) bytes"
    }
}

/// `mqtt://host:1883` or `mqtts://host:8883` (TLS). The port defaults to 1883 / 8883.
public struct BrokerURL: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var tls: Bool

    public init(host: String, port: Int, tls: Bool) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ text: String) -> Result<BrokerURL, Invalid> {
        let expected = "expected a broker URL like mqtt://127.0.0.1:1883 or mqtts://broker.example.com:8883"
        let tls: Bool
        let rest: Substring
        if text.hasPrefix("mqtt://") || text.hasPrefix("tcp://") {
            tls = false
            rest = text.drop { $0 != "/" }.dropFirst(2)
        } else if text.hasPrefix("mqtts://") || text.hasPrefix("ssl://") {
            tls = true
            rest = text.drop { $0 != "/" }.dropFirst(2)
        } else {
            return .failure(Invalid(description: "'\(text)' has no mqtt:// or mqtts:// scheme; \(expected)"))
        }
        var hostPart = rest
        if hostPart.hasSuffix("/") { hostPart = hostPart.dropLast() }
        var port = tls ? 8883 : 1883
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { return .failure(Invalid(description: "'\(text)': unclosed [ in the host; \(expected)")) }
            let after = hostPart[hostPart.index(after: close)...]
            let host = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { return .failure(Invalid(description: "'\(text)': bad port; \(expected)")) }
                port = p
            }
            hostPart = host
        } else if let colon = hostPart.lastIndex(of: ":") {
            guard let p = Int(hostPart[hostPart.index(after: colon)...]), (1...65535).contains(p) else {
                return .failure(Invalid(description: "'\(text)': bad port; \(expected)"))
            }
            port = p
            hostPart = hostPart[..<colon]
        }
        guard !hostPart.isEmpty, !hostPart.contains("/") else { return .failure(Invalid(description: "'\(text)': no host; \(expected)")) }
        return .success(BrokerURL(host: String(hostPart), port: port, tls: tls))
    }
}
