/// End-to-end harness for `uplink run`: simulated machines served by `uplink-sim`, the agent as a
/// child process, `uplink status --json` decoded, and the Uplink JSON payload parsed and checked
/// for gaps, order and consistent repeats.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension TestSupport {
    /// Polls `condition` every `interval` seconds until it holds or `timeout` seconds pass; returns
    /// whether it held. Sleeps asynchronously (no cooperative thread is blocked while waiting).
    public static func waitUntil(timeout: Double, interval: Double = 0.1, _ condition: () throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try condition() { return true }
            if Date() >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }

    /// Writes `text` to `name` in `directory` and returns its URL.
    @discardableResult
    public static func write(_ text: String, to name: String, in directory: URL) throws -> URL {
        let url = directory.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Wall-clock milliseconds since 1970 (the clock of the agent's timestamps).
    public static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// One simulated machine: holding registers 0..<registers, named r0, r1, ...; r0 counts up every 100 ms,
/// the others hold their index.
public struct SimulatedMachine: Sendable {
    public var name: String
    public var port: Int
    public var registers: Int

    public init(name: String, port: Int = TestSupport.freeTCPPort(), registers: Int = 3) {
        self.name = name
        self.port = port
        self.registers = registers
    }

    public var signalNames: [String] { (0..<registers).map { "r\($0)" } }

    /// The machine's entry in a simulator scenario.
    public var scenarioYAML: String {
        var lines = ["  - name: \(name)", "    tcp: { port: \(port), unit: 1 }", "    registers:"]
        lines.append("      - { name: r0, area: holding, address: 0, type: uint16, counter: { every: 100ms } }")
        for index in 1..<max(registers, 1) {
            lines.append("      - { name: r\(index), area: holding, address: \(index), type: uint16, value: \(index) }")
        }
        return lines.joined(separator: "\n")
    }

    /// The machine's entry in an agent config's `devices:` list; `rename` maps signal names to the
    /// names the agent should use.
    public func deviceYAML(rename: [String: String] = [:]) -> String {
        var lines = ["  - name: \(name)", "    tcp: { host: 127.0.0.1, port: \(port) }", "    unit: 1", "    signals:"]
        for index in 0..<registers {
            let signal = rename["r\(index)"] ?? "r\(index)"
            lines.append("      - { name: \(signal), area: holding, address: \(index), type: uint16 }")
        }
        return lines.joined(separator: "\n")
    }
}

/// `uplink-sim` serving a scenario made of `machines`, written into `directory`.
public final class SimulatorProcess {
    public let machines: [SimulatedMachine]
    public let process: ChildProcess

    public init(machines: [SimulatedMachine], directory: URL) throws {
        self.machines = machines
        let scenario = "description: end-to-end test machines\nseed: 7\nspeed: 1\ntick: 100ms\nmachines:\n"
            + machines.map(\.scenarioYAML).joined(separator: "\n") + "\n"
        let file = try TestSupport.write(scenario, to: "scenario.yaml", in: directory)
        process = try ChildProcess(TestSupport.product("uplink-sim"), ["serve", file.path])
        guard process.waitForOutput(containing: "\nready", timeout: 20) else {
            process.stop()
            throw PeerError.didNotStart("uplink-sim: \(process.outputText)")
        }
        for machine in machines where !TestSupport.waitForTCP(port: machine.port, timeout: 10) {
            process.stop()
            throw PeerError.didNotStart("uplink-sim does not serve \(machine.name) on \(machine.port): \(process.outputText)")
        }
    }

    public func stop() { process.stop() }
    deinit { process.stop() }
}

/// `uplink run CONFIG --state-dir DIR` as a child process.
public final class AgentProcess {
    public let config: URL
    public let stateDirectory: URL
    public let process: ChildProcess

    public init(config: URL, stateDirectory: URL, arguments: [String] = [], environment: [String: String]? = nil) throws {
        self.config = config
        self.stateDirectory = stateDirectory
        process = try ChildProcess(TestSupport.product("uplink"),
                                   ["run", config.path, "--state-dir", stateDirectory.path] + arguments, environment: environment)
    }

    /// The agent's log so far.
    public var output: String { process.outputText }

    /// Log lines containing `text`.
    public func logLines(containing text: String) -> [Substring] {
        output.split(separator: "\n").filter { $0.contains(text) }
    }

    public func waitForLog(_ text: String, count: Int = 1, timeout: Double = 20) async -> Bool {
        await TestSupport.waitUntil(timeout: timeout) { logLines(containing: text).count >= count }
    }

    /// `uplink status --state-dir DIR --json`, decoded.
    public func status() throws -> AgentStatus { try AgentStatus.read(stateDirectory: stateDirectory) }

    /// Sends a signal to the agent.
    public func signal(_ sig: Int32) { process.signal(sig) }

    /// SIGTERM and wait; returns the exit status, or nil if it did not exit within `timeout`.
    public func terminate(timeout: Double = 5) -> Int32? {
        process.signal(SIGTERM)
        return process.waitForExit(timeout: timeout)
    }

    /// Stops the agent if it still runs (SIGTERM, then SIGKILL after a grace period).
    public func stop() { process.stop() }

    /// `kill -9`: no chance to flush, disconnect or write anything.
    public func kill9() {
        process.signal(SIGKILL)
        process.waitForExit(timeout: 10)
    }

    deinit { process.stop() }
}

/// The `uplink status --json` report (the keys the tests look at).
public struct AgentStatus: Decodable, Sendable {
    public struct Backlog: Decodable, Sendable {
        public var records: Int64
        public var bytes: Int64
    }
    public struct Dropped: Decodable, Sendable {
        public var total: UInt64
        public var overflow: UInt64
        public var expired: UInt64
    }
    public struct Broker: Decodable, Sendable {
        public var url: String
        public var connected: Bool
        public var lastError: String?
        public var publishedMessages: UInt64
    }
    public struct Device: Decodable, Sendable {
        public var device: String
        public var state: String
        public var polls: Int
    }

    public var running: Bool
    public var backlog: Backlog
    public var dropped: Dropped
    public var nextSeq: UInt64
    public var lastAckedSeq: UInt64
    public var broker: Broker?
    public var devices: [Device]
    /// The raw JSON text.
    public var text = ""

    enum CodingKeys: String, CodingKey {
        case running, backlog, dropped, nextSeq, lastAckedSeq, broker, devices
    }

    public static func read(stateDirectory: URL) throws -> AgentStatus {
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["status", "--state-dir", stateDirectory.path, "--json"],
                                                    timeout: 30)
        guard status == 0 else { throw StatusError(description: "uplink status exited \(status): \(output)") }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            var report = try decoder.decode(AgentStatus.self, from: Data(output.utf8))
            report.text = output
            return report
        } catch {
            throw StatusError(description: "uplink status --json: \(error): \(output)")
        }
    }

    public struct StatusError: Error, CustomStringConvertible {
        public var description: String
    }
}

/// One data message in Uplink's JSON payload profile.
public struct UplinkMessage: Sendable {
    public struct Point: Sendable, Hashable {
        public var signal: String
        public var ts: Int64
        /// The value's JSON text form, for comparing repeats.
        public var value: String
        public var quality: String
        public var seq: UInt64
    }

    public var topic: String
    public var agent: String
    public var site: String
    public var device: String
    public var ts: Int64
    public var late: Bool
    public var points: [Point]

    /// Parses a data message; nil when the payload is not Uplink JSON with points.
    public init?(_ message: ReceivedMessage) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(message.payload.utf8)) as? [String: Any],
              let device = object["device"] as? String, let points = object["points"] as? [[String: Any]],
              let ts = (object["ts"] as? NSNumber)?.int64Value, let late = object["late"] as? Bool else { return nil }
        var parsed: [Point] = []
        for point in points {
            guard let seq = (point["seq"] as? NSNumber)?.uint64Value, let signal = point["signal"] as? String else { return nil }
            parsed.append(Point(signal: signal, ts: (point["ts"] as? NSNumber)?.int64Value ?? 0, value: "\(point["value"] ?? "nil")",
                                quality: point["quality"] as? String ?? "", seq: seq))
        }
        topic = message.topic
        agent = object["agent"] as? String ?? ""
        site = object["site"] as? String ?? ""
        self.device = device
        self.ts = ts
        self.late = late
        self.points = parsed
    }

    public var seqs: [UInt64] { points.map(\.seq) }
}

/// What a subscriber received, checked against the agent's promises.
public struct DeliveryCheck: Sendable, CustomStringConvertible {
    public let messages: [UplinkMessage]

    /// A short summary (test failure messages would otherwise print every message).
    public var description: String {
        let all = seqs
        return "\(messages.count) data messages, \(all.count) distinct seqs \(all.min() ?? 0)...\(all.max() ?? 0), \(repeatedCount) repeats"
    }

    public init(_ messages: [UplinkMessage]) { self.messages = messages }

    /// Parses the data messages (topics ending in `/data`) among `received`.
    public init(received: [ReceivedMessage]) {
        messages = received.filter { $0.topic.hasSuffix("/data") }.compactMap(UplinkMessage.init)
    }

    /// Every distinct seq received.
    public var seqs: Set<UInt64> { Set(messages.flatMap(\.seqs)) }

    /// Seqs in `range` never received.
    public func missing(in range: ClosedRange<UInt64>) -> [UInt64] {
        let seen = seqs
        return range.filter { !seen.contains($0) }
    }

    /// Whether every seq in 1..<nextSeq was received (vacuously true for nextSeq <= 1).
    public func isComplete(nextSeq: UInt64) -> Bool {
        nextSeq <= 1 || missing(in: 1...(nextSeq - 1)).isEmpty
    }

    /// `seqs` as compact ranges, e.g. "1...4560, 12241...12360" (for failure messages).
    public static func rangesText(_ seqs: [UInt64]) -> String {
        var ranges: [ClosedRange<UInt64>] = []
        for seq in seqs.sorted() {
            if let last = ranges.last, last.upperBound + 1 == seq {
                ranges[ranges.count - 1] = last.lowerBound...seq
            } else if ranges.last?.upperBound != seq {
                ranges.append(seq...seq)
            }
        }
        return ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)...\($0.upperBound)" }.joined(separator: ", ")
    }

    /// Per device, the first occurrence of each seq must come in increasing order; one line per violation.
    public var orderViolations: [String] {
        var seen = Set<UInt64>()
        var last: [String: UInt64] = [:]
        var out: [String] = []
        for message in messages {
            for seq in message.seqs where seen.insert(seq).inserted {
                if let previous = last[message.device], seq < previous {
                    out.append("\(message.device): seq \(seq) first arrived after seq \(previous)")
                }
                last[message.device] = max(seq, last[message.device] ?? 0)
            }
        }
        return out
    }

    /// A repeated seq must be the very same record (device, signal, time, value); one line per violation.
    public var inconsistentRepeats: [String] {
        var first: [UInt64: (String, UplinkMessage.Point)] = [:]
        var out: [String] = []
        for message in messages {
            for point in message.points {
                if let (device, earlier) = first[point.seq] {
                    if device != message.device || earlier != point {
                        out.append("seq \(point.seq): \(device) \(earlier) then \(message.device) \(point)")
                    }
                } else {
                    first[point.seq] = (message.device, point)
                }
            }
        }
        return out
    }

    /// How many seqs arrived more than once.
    public var repeatedCount: Int {
        messages.reduce(0) { $0 + $1.seqs.count } - seqs.count
    }

    /// The first message carrying each seq, in arrival order (repeats left out).
    public var firstOccurrences: [UplinkMessage] {
        var seen = Set<UInt64>()
        return messages.filter { message in
            var fresh = false
            for seq in message.seqs where seen.insert(seq).inserted { fresh = true }
            return fresh
        }
    }
}
