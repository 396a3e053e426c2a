import Foundation
import Synchronization
import TestSupport
@testable import MQTT

/// A mosquitto broker of our own on 127.0.0.1 with a test-only config. Killed on deinit.
///
/// Stopped with SIGKILL: children started from a test inherit a signal mask with SIGTERM
/// blocked (Foundation's Process on Linux), so SIGTERM would only take effect after
/// `ChildProcess.stop()`'s 3 s grace period. For a broker without persistence, SIGKILL is the
/// same outage as seen from the client.
final class Broker {
    static let executable: String? = TestSupport.which("mosquitto") ?? ["/usr/sbin/mosquitto"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static var available: Bool { executable != nil }

    let port: Int
    let directory: URL
    let configPath: String
    let logPath: String
    private var process: ChildProcess?

    /// `extra` lines are appended to the listener's config (TLS files, password file, ...).
    init(extra: [String] = [], allowAnonymous: Bool = true) throws {
        port = TestSupport.freeTCPPort()
        directory = TestSupport.temporaryDirectory("uplink-broker")
        configPath = directory.appendingPathComponent("mosquitto.conf").path
        logPath = directory.appendingPathComponent("mosquitto.log").path
        let lines = ["per_listener_settings false", "persistence false", "user root",
                     "allow_anonymous \(allowAnonymous)", "log_dest file \(logPath)", "log_type all",
                     "listener \(port) 127.0.0.1"] + extra
        try (lines.joined(separator: "\n") + "\n").write(toFile: configPath, atomically: true, encoding: .utf8)
        try start()
    }

    func start() throws {
        guard let executable = Self.executable else { throw TestError("mosquitto is not installed") }
        let child = try ChildProcess(executable, ["-c", configPath])
        process = child
        guard TestSupport.waitForTCP(port: port, timeout: 10) else {
            child.stop()
            throw TestError("mosquitto did not listen on \(port): \(child.outputText) \(log)")
        }
    }

    func stop() {
        process?.signal(SIGKILL)
        process?.waitForExit(timeout: 10)
        process = nil
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits until the broker's log contains `text` (the log file is flushed per line).
    @discardableResult
    func waitForLog(_ text: String, timeout: Double = 10) async -> Bool {
        await eventually(timeout: timeout) { self.log.contains(text) }
    }

    deinit { stop() }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 10 ms until it holds or `timeout` seconds pass (a bound, not a measurement).
func eventually(timeout: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Records a client's events as they arrive.
final class EventLog: Sendable {
    final class Store: Sendable {
        let events = Mutex<[MQTTEvent]>([])
    }
    private let store = Store()

    init(_ client: MQTTClient) {
        let stream = client.events
        Task { [store] in
            for await event in stream { store.events.withLock { $0.append(event) } }
        }
    }

    var all: [MQTTEvent] { store.events.withLock { $0 } }

    var connects: Int { all.filter { if case .connected = $0 { true } else { false } }.count }
    var failures: [MQTTError] { all.compactMap { if case .connectionFailed(let e) = $0 { e } else { nil } } }
    var disconnects: Int { all.filter { if case .disconnected = $0 { true } else { false } }.count }
    var acked: [MQTTMessageID] { all.compactMap { if case .published(let mid, _) = $0 { mid } else { nil } } }
    var messages: [MQTTMessage] { all.compactMap { if case .message(let m) = $0 { m } else { nil } } }
    var subacks: Int { all.filter { if case .subscribed = $0 { true } else { false } }.count }

    func wait(timeout: Double = 10, _ condition: (EventLog) -> Bool) async -> Bool {
        await eventually(timeout: timeout) { condition(self) }
    }
}

/// Options for a client of `broker` with quick reconnects for tests.
func testOptions(_ port: Int, id: String = "c-\(UUID().uuidString.prefix(8))") -> MQTTOptions {
    MQTTOptions(host: "127.0.0.1", port: port, clientID: id,
                reconnect: MQTTReconnectPolicy(initialDelay: .milliseconds(100), maxDelay: .milliseconds(400)),
                connectTimeout: .seconds(5))
}

/// Starts a client and waits for its first connection.
func connectedClient(_ options: MQTTOptions) async throws -> (MQTTClient, EventLog) {
    let client = try MQTTClient(options)
    let log = EventLog(client)
    try client.start()
    try await client.waitUntilConnected(timeout: .seconds(10))
    return (client, log)
}

/// A subscriber on `filter` that has its SUBACK (so nothing published afterwards is missed).
func subscriber(_ port: Int, _ filter: String, qos: MQTTQoS = .exactlyOnce) async throws -> (MQTTClient, EventLog) {
    let (client, log) = try await connectedClient(testOptions(port, id: "sub-\(UUID().uuidString.prefix(8))"))
    try client.subscribe(filter, qos: qos)
    guard await log.wait({ $0.subacks >= 1 }) else { throw TestError("no SUBACK for \(filter)") }
    return (client, log)
}

/// Test certificates made with openssl: a CA, a server certificate for 127.0.0.1 and localhost,
/// a client certificate, and an unrelated CA. Made once per test run.
struct TLSMaterial: Sendable {
    let directory: String
    var caFile: String { directory + "/ca.crt" }
    var wrongCAFile: String { directory + "/wrong-ca.crt" }
    var serverCert: String { directory + "/server.crt" }
    var serverKey: String { directory + "/server.key" }
    var clientCert: String { directory + "/client.crt" }
    var clientKey: String { directory + "/client.key" }

    static let shared: Result<TLSMaterial, TestError> = make()

    static func make() -> Result<TLSMaterial, TestError> {
        guard let openssl = TestSupport.which("openssl") else { return .failure(TestError("openssl is not installed")) }
        let dir = TestSupport.temporaryDirectory("uplink-tls").path
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let steps: [[String]] = [
            ["req", "-x509"] + ec + ["-keyout", "\(dir)/ca.key", "-out", "\(dir)/ca.crt", "-subj", "/CN=Uplink Test CA", "-days", "2"],
            ["req", "-x509"] + ec + ["-keyout", "\(dir)/wrong-ca.key", "-out", "\(dir)/wrong-ca.crt", "-subj", "/CN=Some Other CA", "-days", "2"],
            ["req"] + ec + ["-keyout", "\(dir)/server.key", "-out", "\(dir)/server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "\(dir)/server.csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key",
             "-CAcreateserial", "-out", "\(dir)/server.crt", "-days", "2", "-extfile", "\(dir)/server.ext"],
            ["req"] + ec + ["-keyout", "\(dir)/client.key", "-out", "\(dir)/client.csr", "-subj", "/CN=uplink-gateway-1"],
            ["x509", "-req", "-in", "\(dir)/client.csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key",
             "-CAcreateserial", "-out", "\(dir)/client.crt", "-days", "2", "-extfile", "\(dir)/client.ext"],
        ]
        do {
            try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                .write(toFile: "\(dir)/server.ext", atomically: true, encoding: .utf8)
            try "extendedKeyUsage=clientAuth\n".write(toFile: "\(dir)/client.ext", atomically: true, encoding: .utf8)
            for step in steps {
                let (status, output) = try ChildProcess.run(openssl, step)
                guard status == 0 else { return .failure(TestError("openssl \(step.joined(separator: " ")): \(output)")) }
            }
        } catch {
            return .failure(TestError("openssl: \(error)"))
        }
        return .success(TLSMaterial(directory: dir))
    }

    /// Broker config lines for a TLS listener.
    func brokerLines(requireClientCertificate: Bool = false) -> [String] {
        ["cafile \(caFile)", "certfile \(serverCert)", "keyfile \(serverKey)"]
            + (requireClientCertificate ? ["require_certificate true"] : [])
    }
}
