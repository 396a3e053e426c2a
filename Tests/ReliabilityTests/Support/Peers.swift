// Real peers for the attack tests: mosquitto (plain, TLS with client certificates, inside a network
// namespace), a persistent mosquitto_sub session, uplink-sim with its control interface, and
// `uplink run` itself; all as child processes stopped at cleanup.

import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

// MARK: Broker

/// A mosquitto broker with a test-only config in the sandbox (`user root`, persistence in its own
/// directory, no limit on queued messages: PITFALLS G10), optionally with a TLS listener, a password
/// file, or inside a network namespace.
final class Broker {
    struct TLS {
        var port: Int
        var caFile: String
        var certificateFile: String
        var keyFile: String
        var requireClientCertificate: Bool
    }

    let port: Int
    let host: String
    let tls: TLS?
    let directory: URL
    private let namespace: NetworkNamespace?
    private var process: ChildProcess?
    private var earlierOutput = ""

    /// - Parameters:
    ///   - namespace: runs the broker inside it, listening on every address of the namespace; the
    ///     agent reaches it at the namespace's veth address.
    init(_ sandbox: Sandbox, name: String = "broker", port: Int = TestSupport.freeTCPPort(), tls: TLS? = nil,
         passwordFile: String? = nil, namespace: NetworkNamespace? = nil, start: Bool = true) throws {
        self.port = port
        self.tls = tls
        self.namespace = namespace
        host = namespace?.namespaceAddress ?? "127.0.0.1"
        directory = sandbox.path(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let bind = namespace == nil ? "127.0.0.1" : "0.0.0.0"
        var lines = [
            "user root", "per_listener_settings false", "allow_anonymous \(passwordFile == nil)",
            "persistence true", "persistence_location \(directory.path)/", "persistence_file mosquitto.db",
            "max_queued_messages 0", "max_queued_bytes 0", "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information", "connection_messages true",
        ]
        if let passwordFile { lines.append("password_file \(passwordFile)") }
        lines.append("listener \(port) \(bind)")
        if let tls {
            lines += ["listener \(tls.port) \(bind)", "cafile \(tls.caFile)", "certfile \(tls.certificateFile)", "keyfile \(tls.keyFile)"]
            if tls.requireClientCertificate { lines += ["require_certificate true", "use_identity_as_username true"] }
        }
        try (lines.joined(separator: "\n") + "\n").write(to: directory.appendingPathComponent("mosquitto.conf"), atomically: true, encoding: .utf8)
        sandbox.onCleanup("stop broker") { [weak self] in self?.stop() }
        if start { try self.start() }
    }

    var url: String { "mqtt://\(host):\(port)" }
    var tlsURL: String? { tls.map { "mqtts://\(host):\($0.port)" } }
    var isRunning: Bool { process?.process.isRunning ?? false }
    var outputText: String { earlierOutput + (process?.outputText ?? "") }

    func start() throws {
        guard !isRunning else { return }
        if let previous = process { earlierOutput += previous.outputText }
        let command = ["/usr/sbin/mosquitto", "-c", directory.appendingPathComponent("mosquitto.conf").path]
        let full = namespace?.wrap(command) ?? command
        let child = try ChildProcess(full[0], Array(full.dropFirst()))
        process = child
        var ready = waitForTCP(host: host, port: port)
        if ready, let tls { ready = waitForTCP(host: host, port: tls.port) }
        guard ready else {
            child.stop()
            throw SandboxError("mosquitto did not start on \(host):\(port): \(child.outputText)")
        }
    }

    /// SIGTERM: mosquitto saves its persistence file (queued messages of persistent sessions).
    func stop() { process?.stop() }

    func restart() throws {
        stop()
        try start()
    }

    static var isAvailable: Bool { Mosquitto.isAvailable }
}

// MARK: Subscriber

/// `mosquitto_sub -c -i ID -q 1 -v -t 'uplink/#'`: a persistent session, so whatever arrives while it
/// or the broker is down is delivered when both are back.
final class Subscriber {
    let clientID = "rel-sub-\(UUID().uuidString.prefix(8))"
    private let host: String
    private let port: Int
    private let namespace: NetworkNamespace?
    private var process: ChildProcess
    private var earlierOutput = ""

    /// Subscribes and waits until its own probe message comes back.
    init(_ sandbox: Sandbox, host: String = "127.0.0.1", port: Int, namespace: NetworkNamespace? = nil) async throws {
        self.host = host
        self.port = port
        self.namespace = namespace
        process = try Self.launch(host: host, port: port, clientID: clientID, namespace: namespace)
        sandbox.onCleanup("stop subscriber") { [weak self] in self?.process.stop() }
        let probe = "uplink/_probe/\(clientID)"
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let command = ["mosquitto_pub", "-h", host, "-p", String(port), "-q", "1", "-t", probe, "-m", "probe"]
            Shell.run(namespace?.wrap(command) ?? command, timeout: 10)
            for _ in 0..<10 {
                if process.outputText.contains(probe) { return }
                await pause(0.05)
            }
        }
        throw SandboxError("mosquitto_sub did not receive its probe: \(process.outputText)")
    }

    /// Connects through the broker's plain listener.
    convenience init(_ sandbox: Sandbox, broker: Broker, insideNamespace namespace: NetworkNamespace? = nil) async throws {
        try await self.init(sandbox, host: namespace == nil ? broker.host : "127.0.0.1", port: broker.port, namespace: namespace)
    }

    private static func launch(host: String, port: Int, clientID: String, namespace: NetworkNamespace?) throws -> ChildProcess {
        let command = [TestSupport.which("mosquitto_sub") ?? "/usr/bin/mosquitto_sub",
                       "-h", host, "-p", String(port), "-c", "-i", clientID, "-q", "1", "-v", "-t", "uplink/#"]
        let full = namespace?.wrap(command) ?? command
        return try ChildProcess(full[0], Array(full.dropFirst()))
    }

    /// mosquitto_sub gives up when the broker is gone for long; start it again with the same session.
    func ensureRunning() {
        guard !process.process.isRunning else { return }
        earlierOutput += process.outputText
        if let fresh = try? Self.launch(host: host, port: port, clientID: clientID, namespace: namespace) { process = fresh }
    }

    /// Every complete `topic payload` line so far.
    var lines: [(topic: String, payload: String)] {
        let text = earlierOutput + process.outputText
        guard let end = text.lastIndex(of: "\n") else { return [] }
        var out: [(topic: String, payload: String)] = []
        for line in text[..<end].split(separator: "\n") {
            guard let space = line.firstIndex(of: " ") else { continue }
            out.append((String(line[..<space]), String(line[line.index(after: space)...])))
        }
        return out
    }

    var ledger: Ledger { Ledger(lines.filter { $0.topic.hasSuffix("/data") }.compactMap { DataMessage(topic: $0.topic, payload: $0.payload) }) }

    /// Waits until every seq in 1..<nextSeq arrived (restarting mosquitto_sub if it gave up).
    @discardableResult
    func waitForAll(below nextSeq: UInt64, from: UInt64 = 1, timeout: Double = 60) async -> Ledger {
        var ledger = self.ledger
        _ = await TestSupport.waitUntil(timeout: timeout, interval: 0.25) {
            ensureRunning()
            ledger = self.ledger
            return ledger.missing(below: nextSeq, from: from).isEmpty
        }
        return ledger
    }
}

// MARK: Payloads

/// One data message of the `json` payload profile.
struct DataMessage: Sendable {
    struct Point: Sendable, Hashable {
        var signal: String
        var ts: Int64
        var value: String
        var quality: String
        var seq: UInt64
    }

    var topic: String
    var device: String
    var ts: Int64
    var late: Bool
    var points: [Point]

    init?(topic: String, payload: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
              let device = object["device"] as? String, let ts = (object["ts"] as? NSNumber)?.int64Value,
              let late = object["late"] as? Bool, let list = object["points"] as? [[String: Any]] else { return nil }
        var points: [Point] = []
        for point in list {
            guard let seq = (point["seq"] as? NSNumber)?.uint64Value, let signal = point["signal"] as? String else { return nil }
            points.append(Point(signal: signal, ts: (point["ts"] as? NSNumber)?.int64Value ?? 0, value: "\(point["value"] ?? "null")",
                                quality: point["quality"] as? String ?? "", seq: seq))
        }
        self.topic = topic
        self.device = device
        self.ts = ts
        self.late = late
        self.points = points
    }
}

/// What a subscriber received, checked against the agent's promises (docs/payloads.md: a repeated
/// seq is a duplicate of the same record; a gap is a loss).
struct Ledger: Sendable {
    let messages: [DataMessage]
    init(_ messages: [DataMessage]) { self.messages = messages }

    var seqs: Set<UInt64> { Set(messages.flatMap { $0.points.map(\.seq) }) }

    /// Seqs in `from..<nextSeq` never received. (After a recovery that lost the counters, seqs jump
    /// to now_ms x 1000: pass the first seq of that life as `from`.)
    func missing(below nextSeq: UInt64, from: UInt64 = 1) -> [UInt64] {
        guard nextSeq > from else { return [] }
        let seen = seqs
        guard nextSeq - from < 10_000_000 else {
            // Too wide to list one by one: compare counts, and report `from` if anything is missing.
            return UInt64(seen.filter { $0 >= from && $0 < nextSeq }.count) == nextSeq - from ? [] : [from]
        }
        return (from..<nextSeq).filter { !seen.contains($0) }
    }

    func beyond(_ nextSeq: UInt64) -> [UInt64] { seqs.filter { $0 >= nextSeq }.sorted() }

    /// Point occurrences minus distinct seqs.
    var repeatedCount: Int { messages.reduce(0) { $0 + $1.points.count } - seqs.count }

    /// A repeated seq carrying a different record than its first delivery (a reused seq).
    var inconsistentRepeats: [String] {
        var first: [UInt64: (String, DataMessage.Point)] = [:]
        var out: [String] = []
        for message in messages {
            for point in message.points {
                if let (device, earlier) = first[point.seq] {
                    if device != message.device || earlier != point { out.append("seq \(point.seq): \(device) \(earlier) then \(message.device) \(point)") }
                } else {
                    first[point.seq] = (message.device, point)
                }
            }
        }
        return out
    }

    /// Per device, first deliveries in increasing seq order.
    var orderViolations: [String] {
        var seen = Set<UInt64>(), last: [String: UInt64] = [:], out: [String] = []
        for message in messages {
            for point in message.points where seen.insert(point.seq).inserted {
                if let previous = last[message.device], point.seq < previous {
                    out.append("\(message.device): seq \(point.seq) first arrived after \(previous)")
                }
                last[message.device] = max(point.seq, last[message.device] ?? 0)
            }
        }
        return out
    }

    func messages(of device: String) -> [DataMessage] { messages.filter { $0.device == device } }

    /// Distinct poll timestamps of a device (first delivery of each), ascending.
    func pollTimes(of device: String) -> [Int64] { Array(Set(messages(of: device).map(\.ts))).sorted() }
}

/// The promises every delivery test checks: nothing below `nextSeq` missing (beyond `allowedMissing`
/// counted drops), nothing at or beyond it, first deliveries in order per device, repeats identical.
func expectDelivered(_ ledger: Ledger, nextSeq: UInt64, from: UInt64 = 1, allowedMissing: Int = 0,
                     sourceLocation: SourceLocation = #_sourceLocation) {
    let missing = ledger.missing(below: nextSeq, from: from)
    #expect(missing.count <= allowedMissing, "missing \(missing.count) seqs (allowed \(allowedMissing)), first \(missing.prefix(10))",
            sourceLocation: sourceLocation)
    #expect(ledger.beyond(nextSeq).isEmpty, "seqs at or beyond next_seq \(nextSeq): \(ledger.beyond(nextSeq).prefix(5))", sourceLocation: sourceLocation)
    #expect(ledger.inconsistentRepeats.isEmpty, "\(ledger.inconsistentRepeats.prefix(5))", sourceLocation: sourceLocation)
    expectOrdered(ledger, sourceLocation: sourceLocation)
}

/// First deliveries in seq order per device. (Once seen out of order after a broker outage, 1 run in
/// 13; fixed in 26b39cc: in-flight messages are re-sent oldest first after a lost connection.)
func expectOrdered(_ ledger: Ledger, context: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
    let violations = ledger.orderViolations
    #expect(violations.isEmpty, "\(violations.prefix(5)) \(context)", sourceLocation: sourceLocation)
}

// MARK: Simulator

/// uplink-sim serving a scenario, optionally with its control interface.
final class Sim {
    let process: ChildProcess
    let controlPort: Int?
    let scenario: URL

    init(_ sandbox: Sandbox, scenario text: String, name: String = "scenario.yaml", control: Bool = false,
         namespace: NetworkNamespace? = nil, waitFor ports: [Int] = []) throws {
        scenario = sandbox.path(name)
        try text.write(to: scenario, atomically: true, encoding: .utf8)
        let controlPort = control ? TestSupport.freeTCPPort() : nil
        self.controlPort = controlPort
        var command = [TestSupport.product("uplink-sim"), "serve", scenario.path]
        if let controlPort { command += ["--control", String(controlPort)] }
        let full = namespace?.wrap(command) ?? command
        process = try ChildProcess(full[0], Array(full.dropFirst()))
        sandbox.onCleanup("stop uplink-sim") { [process] in process.stop() }
        guard process.waitForOutput(containing: "\nready", timeout: 30) else {
            process.stop()
            throw SandboxError("uplink-sim did not start: \(process.outputText)")
        }
        if namespace == nil {
            for port in ports where !TestSupport.waitForTCP(port: port, timeout: 10) {
                throw SandboxError("uplink-sim does not serve port \(port): \(process.outputText)")
            }
        }
    }

    /// A scenario of `machines` (TestSupport.SimulatedMachine: r0 counts, r1... hold their index).
    convenience init(_ sandbox: Sandbox, machines: [SimulatedMachine], control: Bool = false, namespace: NetworkNamespace? = nil,
                     name: String = "scenario.yaml") throws {
        let text = "description: reliability test machines\nseed: 7\nspeed: 1\ntick: 100ms\nmachines:\n"
            + machines.map(\.scenarioYAML).joined(separator: "\n") + "\n"
        try self.init(sandbox, scenario: text, name: name, control: control, namespace: namespace,
                      waitFor: namespace == nil ? machines.map(\.port) : [])
    }

    /// One HTTP request to the control interface; (status, body).
    func control(_ method: String, _ path: String, body: String = "") throws -> (status: Int, body: String) {
        guard let controlPort else { throw SandboxError("uplink-sim runs without a control interface") }
        return try HTTPClient.request(port: controlPort, method: method, path: path, body: body)
    }

    /// Requests the simulator answered for `machine`, from GET /machines/NAME.
    func requests(of machine: String) throws -> Int {
        let (status, body) = try control("GET", "/machines/\(machine)")
        guard status == 200, let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
            throw SandboxError("GET /machines/\(machine): \(status) \(body)")
        }
        let statistics = object["statistics"] as? [String: Any] ?? object
        return (statistics["requests"] as? NSNumber)?.intValue ?? -1
    }

    func stop() { process.stop() }
}

// MARK: Agent

/// `uplink run CONFIG --state-dir DIR` as a child process (optionally inside a namespace).
final class Agent {
    let config: URL
    let stateDirectory: URL
    let process: ChildProcess

    init(_ sandbox: Sandbox, config: URL, stateDirectory: URL, arguments: [String] = [], environment: [String: String]? = nil,
         namespace: NetworkNamespace? = nil) throws {
        self.config = config
        self.stateDirectory = stateDirectory
        let command = [TestSupport.product("uplink"), "run", config.path, "--state-dir", stateDirectory.path] + arguments
        let full = namespace?.wrap(command) ?? command
        // Run in the sandbox: a core dump after SIGABRT (the watchdog tests) lands there, not in the repository.
        process = try ChildProcess(full[0], Array(full.dropFirst()), environment: environment, currentDirectory: sandbox.directory)
        sandbox.onCleanup("stop agent") { [process] in process.stop() }
    }

    var pid: Int32 { process.process.processIdentifier }
    var isRunning: Bool { process.process.isRunning }
    var output: String { process.outputText }

    func logLines(containing text: String) -> [Substring] {
        output.split(separator: "\n").filter { $0.contains(text) }
    }

    func waitForLog(_ text: String, count: Int = 1, timeout: Double = 30) async -> Bool {
        await TestSupport.waitUntil(timeout: timeout) { logLines(containing: text).count >= count }
    }

    func status() throws -> AgentStatus { try AgentStatus.read(stateDirectory: stateDirectory) }

    func signal(_ sig: Int32) { process.signal(sig) }

    /// SIGTERM and wait up to `timeout` seconds; the exit status, or nil if still running.
    func terminate(timeout: Double = 5) -> Int32? {
        process.signal(SIGTERM)
        return process.waitForExit(timeout: timeout)
    }

    func kill9() {
        process.signal(SIGKILL)
        process.waitForExit(timeout: 15)
    }
}

extension AgentStatus {
    /// The `dropped` object of the raw JSON (every reason, not only the ones AgentStatus decodes).
    var drops: [String: UInt64] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let dropped = object["dropped"] as? [String: Any] else { return [:] }
        return dropped.compactMapValues { ($0 as? NSNumber)?.uint64Value }
    }

    func polls(of device: String) -> Int { devices.first { $0.device == device }?.polls ?? 0 }
}

// MARK: Configs

/// Writes an agent config polling `machines` (TCP), publishing to `broker`.
@discardableResult
func writeAgentConfig(_ sandbox: Sandbox, name: String = "uplink.yaml", machines: [SimulatedMachine], broker: String,
                      interval: String = "100ms", timeout: String = "500ms", retries: Int = 0, agentName: String = "gw",
                      reconnectMax: String = "1s", extraDevices: [String] = [], top: [String] = [], mqtt: [String] = [],
                      buffer: [String] = []) throws -> URL {
    var lines = ["agent: { name: \(agentName), site: s1 }", "defaults: { interval: \(interval), timeout: \(timeout), retries: \(retries) }"]
    lines += top
    lines.append("devices:")
    lines += machines.map { $0.deviceYAML() }
    lines += extraDevices
    lines += ["mqtt:", "  broker: \(broker)", "  reconnect_min: 200ms", "  reconnect_max: \(reconnectMax)"] + mqtt.map { "  " + $0 }
    if !buffer.isEmpty { lines += ["buffer:"] + buffer.map { "  " + $0 } }
    let url = sandbox.path(name)
    try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
    return url
}

/// Machines m1...mN on free ports (N registers each).
func machines(_ count: Int, registers: Int = 3, prefix: String = "m") -> [SimulatedMachine] {
    (1...count).map { SimulatedMachine(name: "\(prefix)\($0)", registers: registers) }
}

/// Prints a line of evidence for docs/reliability.md (shown in the test log).
func report(_ text: String) {
    print("[reliability] \(text)")
}
