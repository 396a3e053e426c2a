/// A real mosquitto broker for one test (PITFALLS G19: tests start their own broker), a
/// `mosquitto_sub` subscriber, and a throw-away certificate authority for TLS tests.
///
/// Guarantees: the broker listens on 127.0.0.1 only, on ports picked free, with a test-only config in
/// the test's directory (`user root`, persistence in that directory, no limit on queued messages
/// (G10), so a slow subscriber never loses messages); `restart()` reuses the same port and the same
/// persistence file, so a persistent subscriber session survives. Every process is stopped on
/// `stop()` or deinit.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A mosquitto broker on 127.0.0.1 with a test-only config.
public final class Mosquitto {
    /// A TLS listener (in addition to the plain one) with the server's certificate and key.
    public struct TLSListener: Sendable {
        public var port: Int
        public var certificateFile: String
        public var keyFile: String
        public init(port: Int = TestSupport.freeTCPPort(), certificateFile: String, keyFile: String) {
            self.port = port
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    public static let executable = "/usr/sbin/mosquitto"

    /// Whether mosquitto and its clients are installed (gate broker tests on this).
    public static var isAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: executable) && TestSupport.which("mosquitto_sub") != nil
            && TestSupport.which("mosquitto_pub") != nil
    }

    /// The plain MQTT listener.
    public let port: Int
    public let tls: TLSListener?
    /// Where the config, the persistence file and the password file live.
    public let directory: URL
    public let configFile: URL
    private var process: ChildProcess?
    private var earlierOutput = ""

    /// Writes the config and starts the broker (unless `start` is false).
    /// - Parameters:
    ///   - passwordFile: a mosquitto_passwd file; with it, anonymous clients are refused.
    public init(directory: URL = TestSupport.temporaryDirectory("uplink-mosquitto"), port: Int = TestSupport.freeTCPPort(),
                tls: TLSListener? = nil, passwordFile: String? = nil, start: Bool = true) throws {
        self.directory = directory
        self.port = port
        self.tls = tls
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        configFile = directory.appendingPathComponent("mosquitto.conf")
        var lines = [
            "user root",
            "per_listener_settings false",
            "allow_anonymous \(passwordFile == nil)",
            "persistence true",
            "persistence_location \(directory.path)/",
            "persistence_file mosquitto.db",
            // PITFALLS G10: an ack only means the broker took the message; never drop a queued one.
            "max_queued_messages 0",
            "max_queued_bytes 0",
            // stderr: unbuffered, so the log can be read while the broker runs (stdout to a pipe is block-buffered).
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if let passwordFile { lines.append("password_file \(passwordFile)") }
        lines.append("listener \(port) 127.0.0.1")
        if let tls {
            lines += ["listener \(tls.port) 127.0.0.1", "certfile \(tls.certificateFile)", "keyfile \(tls.keyFile)"]
        }
        try (lines.joined(separator: "\n") + "\n").write(to: configFile, atomically: true, encoding: .utf8)
        if start { try self.start() }
    }

    /// `mqtt://127.0.0.1:PORT` (the plain listener).
    public var url: String { "mqtt://127.0.0.1:\(port)" }
    /// `mqtts://127.0.0.1:PORT` (the TLS listener), if there is one.
    public var tlsURL: String? { tls.map { "mqtts://127.0.0.1:\($0.port)" } }

    public var isRunning: Bool { process?.process.isRunning ?? false }

    /// Starts the broker and waits until every listener accepts connections.
    public func start() throws {
        guard !isRunning else { return }
        if let previous = process { earlierOutput += previous.outputText }
        let child = try ChildProcess(Self.executable, ["-c", configFile.path])
        process = child
        var ready = TestSupport.waitForTCP(port: port, timeout: 15)
        if ready, let tls { ready = TestSupport.waitForTCP(port: tls.port, timeout: 15) }
        guard ready else {
            child.stop()
            throw PeerError.didNotStart("mosquitto on port \(port): \(child.outputText)")
        }
    }

    /// Stops the broker gracefully (SIGTERM: it saves its persistence file) and waits for the exit.
    public func stop() {
        process?.stop()
    }

    /// Stops (if running) and starts again on the same ports with the same persistence file.
    public func restart() throws {
        stop()
        try start()
    }

    /// Everything the broker logged, over all its runs.
    public var outputText: String { earlierOutput + (process?.outputText ?? "") }

    deinit { process?.stop() }

    /// Writes a mosquitto password file holding one user.
    public static func writePasswordFile(user: String, password: String, to url: URL) throws {
        guard let tool = TestSupport.which("mosquitto_passwd") else { throw PeerError.didNotStart("mosquitto_passwd is not installed") }
        let (status, output) = try ChildProcess.run(tool, ["-b", "-c", url.path, user, password])
        guard status == 0 else { throw PeerError.didNotStart("mosquitto_passwd: \(output)") }
    }

    /// The retained message on `topic`, or nil if none arrives within `timeout` seconds.
    public func retainedMessage(topic: String, timeout: Int = 5, username: String? = nil, password: String? = nil) throws -> String? {
        guard let tool = TestSupport.which("mosquitto_sub") else { return nil }
        var arguments = ["-h", "127.0.0.1", "-p", String(port), "-t", topic, "-C", "1", "-W", String(timeout), "--retained-only"]
        if let username { arguments += ["-u", username] }
        if let password { arguments += ["-P", password] }
        let (status, output) = try ChildProcess.run(tool, arguments, timeout: Double(timeout) + 10)
        guard status == 0 else { return nil }
        return output.split(separator: "\n").first.map(String.init)
    }
}

/// One message as `mosquitto_sub -v` printed it.
public struct ReceivedMessage: Sendable, Hashable {
    public var topic: String
    public var payload: String
}

/// A `mosquitto_sub` client with a persistent session (`-c -i ID`, QoS 1): what it receives while
/// it or the broker is down is delivered when both are back. Payloads must be one line.
public final class MQTTSubscriber {
    public let broker: Mosquitto
    public let clientID: String
    public let topic: String
    private let credentials: (user: String, password: String)?
    private var process: ChildProcess
    private var earlierOutput = ""
    private let probeTopic: String

    /// Subscribes and waits until a probe message published under `topic` comes back, so nothing
    /// published after this returns is missed.
    public init(broker: Mosquitto, topic: String = "uplink/#", clientID: String = "e2e-sub-\(UUID().uuidString.prefix(8))",
                username: String? = nil, password: String? = nil, timeout: Double = 30) async throws {
        self.broker = broker
        self.topic = topic
        self.clientID = clientID
        credentials = username.map { ($0, password ?? "") }
        let base = topic.hasSuffix("/#") ? String(topic.dropLast(2)) : "uplink"
        probeTopic = "\(base)/_probe/\(clientID)"
        process = try Self.launch(broker: broker, topic: topic, clientID: clientID, credentials: credentials)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            try ensureRunning()
            try publishProbe()
            for _ in 0..<10 {
                if messages.contains(where: { $0.topic == probeTopic }) { return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        process.stop()
        throw PeerError.didNotStart("mosquitto_sub did not receive its probe on \(probeTopic): \(process.outputText)")
    }

    private static func launch(broker: Mosquitto, topic: String, clientID: String,
                               credentials: (user: String, password: String)?) throws -> ChildProcess {
        guard let tool = TestSupport.which("mosquitto_sub") else { throw PeerError.didNotStart("mosquitto_sub is not installed") }
        var arguments = ["-h", "127.0.0.1", "-p", String(broker.port), "-c", "-i", clientID, "-q", "1", "-v", "-t", topic]
        if let credentials { arguments += ["-u", credentials.user, "-P", credentials.password] }
        return try ChildProcess(tool, arguments)
    }

    private func publishProbe() throws {
        guard let tool = TestSupport.which("mosquitto_pub") else { throw PeerError.didNotStart("mosquitto_pub is not installed") }
        var arguments = ["-h", "127.0.0.1", "-p", String(broker.port), "-q", "1", "-t", probeTopic, "-m", "probe"]
        if let credentials { arguments += ["-u", credentials.user, "-P", credentials.password] }
        _ = try ChildProcess.run(tool, arguments, timeout: 10)
    }

    /// mosquitto_sub reconnects by itself after a broker restart; if it gave up and exited, start it
    /// again with the same client id (the broker kept its session).
    public func ensureRunning() throws {
        guard !process.process.isRunning else { return }
        earlierOutput += process.outputText
        process = try Self.launch(broker: broker, topic: topic, clientID: clientID, credentials: credentials)
    }

    /// Every complete message line received so far, in arrival order (probe messages included).
    public var messages: [ReceivedMessage] {
        let text = earlierOutput + process.outputText
        var out: [ReceivedMessage] = []
        // Only complete lines: the last one may still be arriving.
        guard let lastNewline = text.lastIndex(of: "\n") else { return [] }
        for line in text[..<lastNewline].split(separator: "\n", omittingEmptySubsequences: true) {
            guard let space = line.firstIndex(of: " ") else { continue }
            out.append(ReceivedMessage(topic: String(line[..<space]), payload: String(line[line.index(after: space)...])))
        }
        return out
    }

    /// What mosquitto_sub printed (for failure messages).
    public var outputText: String { earlierOutput + process.outputText }

    public func stop() { process.stop() }

    deinit { process.stop() }
}

/// A throw-away certificate authority and a server certificate for 127.0.0.1 and localhost, made with
/// the `openssl` command line in `directory`, plus a second, unrelated CA (the "wrong" one).
public struct TestCertificates: Sendable {
    public let caFile: String
    public let serverCertificateFile: String
    public let serverKeyFile: String
    /// A CA that did not sign the server certificate.
    public let otherCAFile: String

    public static var isAvailable: Bool { TestSupport.which("openssl") != nil }

    public init(directory: URL) throws {
        guard let openssl = TestSupport.which("openssl") else { throw PeerError.didNotStart("openssl is not installed") }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let ext = path("server-ext.cnf")
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: ext, atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["req", "-x509"] + ec + ["-keyout", path("ca.key"), "-out", path("ca.crt"), "-subj", "/CN=Uplink Test CA", "-days", "3",
                                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["req"] + ec + ["-keyout", path("server.key"), "-out", path("server.csr"), "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"), "-CAcreateserial",
             "-out", path("server.crt"), "-days", "2", "-extfile", ext],
            ["req", "-x509"] + ec + ["-keyout", path("other-ca.key"), "-out", path("other-ca.crt"), "-subj", "/CN=Some Other CA",
                                     "-days", "3", "-addext", "basicConstraints=critical,CA:TRUE"],
        ]
        for step in steps {
            let (status, output) = try ChildProcess.run(openssl, step, timeout: 60)
            guard status == 0 else { throw PeerError.didNotStart("openssl \(step.joined(separator: " ")): \(output)") }
        }
        caFile = path("ca.crt")
        serverCertificateFile = path("server.crt")
        serverKeyFile = path("server.key")
        otherCAFile = path("other-ca.crt")
    }
}
