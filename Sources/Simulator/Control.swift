// The control interface: a small HTTP/1.1 JSON API on 127.0.0.1 to see machines and switch their
// faults, force states and step time while the simulator runs. Request bodies are YAML (JSON is
// YAML), parsed by the same code as the profiles' `faults:`, so both speak one language.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A JSON value with a deterministic writer (keys keep their order).
public indirect enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (lhs: JSON, rhs: JSON) -> Bool { lhs.text == rhs.text }

    public var text: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let value):
            guard value.isFinite else { return "null" }
            if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
            return String(value)
        case .string(let value): return Self.quote(value)
        case .array(let items): return "[" + items.map(\.text).joined(separator: ",") + "]"
        case .object(let pairs): return "{" + pairs.map { Self.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Routes control requests; pure apart from the machines it changes, so tests call it directly.
public struct ControlAPI: Sendable {
    public let simulation: Simulation
    /// Where each machine listens, as printed at start.
    public let endpoints: [String: String]

    public init(simulation: Simulation, endpoints: [String: String]) {
        self.simulation = simulation
        self.endpoints = endpoints
    }

    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: JSON
    }

    public func handle(method: String, target: String, body: String) -> Response {
        // "/machines?" has an empty query: split by index, never by subscripting a split.
        let mark = target.firstIndex(of: "?")
        let path = mark.map { String(target[..<$0]) } ?? target
        let query = mark.map { String(target[target.index(after: $0)...]) } ?? ""
        let parts = path.split(separator: "/").map { String($0).replacingAll("%2A", with: "*").replacingAll("%2a", with: "*") }
        switch (method, parts.count, parts.first) {
        case ("GET", 0, _), ("GET", 1, "machines"):
            return Response(status: 200, body: .array(simulation.machines.map { summary($0, values: false) }))
        case ("GET", 1, "time"):
            return Response(status: 200, body: timeJSON)
        case ("POST", 2, "time") where parts[1] == "step":
            return step(body: body, query: query)
        case (_, 2, "machines"):
            guard method == "GET" else { return methodNotAllowed(method, target) }
            guard let machine = simulation.machine(named: parts[1]) else { return unknownMachine(parts[1]) }
            return Response(status: 200, body: summary(machine, values: true))
        case (_, 3, "machines") where parts[2] == "faults":
            return faults(method: method, name: parts[1], body: body)
        case (_, 3, "machines") where parts[2] == "state":
            guard method == "POST" || method == "PUT" else { return methodNotAllowed(method, target) }
            return forceState(name: parts[1], body: body)
        default:
            return Response(status: 404, body: .object([("error", .string(
                "no route \(method) \(path); see docs/simulator.md: GET /machines, GET /machines/NAME, PUT|POST|DELETE /machines/NAME/faults, POST /machines/NAME/state, GET /time, POST /time/step"))]))
        }
    }

    private var timeJSON: JSON {
        .object([("time", .number(simulation.time)), ("speed", .number(simulation.speed)), ("tick", .number(simulation.tick)),
                 ("seed", .number(Double(simulation.seed)))])
    }

    private func error(_ status: Int, _ message: String) -> Response {
        Response(status: status, body: .object([("error", .string(message))]))
    }

    private func methodNotAllowed(_ method: String, _ target: String) -> Response {
        error(405, "\(method) is not allowed on \(target)")
    }

    private func unknownMachine(_ name: String) -> Response {
        error(404, "no machine named '\(name)'; GET /machines lists them")
    }

    private func machines(_ name: String) -> [Machine]? {
        if name == "*" { return simulation.machines }
        return simulation.machine(named: name).map { [$0] }
    }

    private func faults(method: String, name: String, body: String) -> Response {
        guard let targets = machines(name) else { return unknownMachine(name) }
        switch method {
        case "GET":
            return Response(status: 200, body: .array(targets.map { .object([("name", .string($0.name)), ("faults", Self.json($0.faults))]) }))
        case "DELETE":
            for machine in targets { machine.setFaults(FaultSet()) }
        case "PUT", "POST":
            let faults: FaultSet
            do {
                faults = try ProfileLoader.parseFaults(yaml: body.isEmpty ? "{}" : body, source: "request body")
            } catch {
                return self.error(400, error.description)
            }
            for machine in targets {
                if method == "PUT" { machine.setFaults(faults) } else { machine.addFaults(faults) }
            }
        default:
            return methodNotAllowed(method, "/machines/\(name)/faults")
        }
        return Response(status: 200, body: .array(targets.map { .object([("name", .string($0.name)), ("faults", Self.json($0.faults))]) }))
    }

    private func forceState(name: String, body: String) -> Response {
        guard let targets = machines(name) else { return unknownMachine(name) }
        let trimmed = body.trimmingCharacters(in: [" ", "\n", "\r", "\t"])
        var state = trimmed
        if trimmed.hasPrefix("{") {
            guard let parsed = Self.simpleField("state", in: trimmed) else {
                return error(400, "expected a body like {\"state\": \"alarm\"}")
            }
            state = parsed
        }
        for machine in targets {
            guard machine.force(state: state) else {
                let names = machine.definition.stateMachine?.states.map(\.name).joined(separator: ", ") ?? "none (it has no state machine)"
                return error(400, "'\(machine.name)' has no state '\(state)'; its states: \(names)")
            }
        }
        return Response(status: 200, body: .array(targets.map { summary($0, values: false) }))
    }

    private func step(body: String, query: String) -> Response {
        var text = query.hasPrefix("by=") ? String(query.dropFirst(3)) : body.trimmingCharacters(in: [" ", "\n", "\r", "\t"])
        if text.hasPrefix("{") {
            guard let parsed = Self.simpleField("by", in: text) else { return error(400, "expected a body like {\"by\": \"60s\"}") }
            text = parsed
        }
        guard let seconds = Self.duration(text) else {
            return error(400, "expected a duration with a unit, e.g. {\"by\": \"60s\"} or ?by=500ms, found '\(text)'")
        }
        guard seconds <= 7 * 86400 else { return error(400, "step at most 7d at a time") }
        simulation.step(by: seconds)
        return Response(status: 200, body: timeJSON)
    }

    /// The string value of `"key": "value"` in a one-level JSON object.
    static func simpleField(_ key: String, in text: String) -> String? {
        guard let range = text.range(of: "\"\(key)\"") else { return nil }
        let rest = text[range.upperBound...].drop { $0 == " " || $0 == ":" || $0 == "\t" }
        let value = rest.hasPrefix("\"") ? rest.dropFirst().prefix { $0 != "\"" } : rest.prefix { $0 != "," && $0 != "}" && $0 != " " }
        return value.isEmpty ? nil : String(value)
    }

    static func duration(_ text: String) -> Double? {
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)] where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value.isFinite, value >= 0 { return value * factor }
        }
        return nil
    }

    func summary(_ machine: Machine, values: Bool) -> JSON {
        let model = machine.model
        let statistics = machine.statistics
        var pairs: [(String, JSON)] = [
            ("name", .string(machine.name)),
            ("kind", .string(machine.definition.kind)),
            ("endpoint", .string(endpoints[machine.name] ?? "")),
            ("state", model.stateName.map(JSON.string) ?? .null),
            ("online", .bool(!machine.isOffline())),
            ("faults", Self.json(machine.faults)),
            ("statistics", .object([("requests", .number(Double(statistics.requests))),
                                    ("responses", .number(Double(statistics.responses))),
                                    ("exceptions", .number(Double(statistics.exceptions))),
                                    ("writes", .number(Double(statistics.writes))),
                                    ("faults", .object(statistics.faults.sorted { $0.key < $1.key }.map { ($0.key, .number(Double($0.value))) }))])),
        ]
        if values {
            pairs.append(("time", .number(model.time)))
            pairs.append(("values", .object(model.definition.variables.map { variable in
                if let text = model.text(of: variable.name) { return (variable.name, .string(text)) }
                return (variable.name, .number(model.value(of: variable.name) ?? 0))
            })))
        }
        return .object(pairs)
    }

    static func durationText(_ seconds: Double) -> JSON { .string("\(JSON.number((seconds * 1000).rounded()).text)ms") }

    /// Faults in the shape PUT accepts, so a GET can be edited and sent back.
    public static func json(_ faults: FaultSet) -> JSON {
        var pairs: [(String, JSON)] = []
        if let slow = faults.slow {
            pairs.append(("slow", .object([("delay", durationText(slow.delay)), ("jitter", durationText(slow.jitter)),
                                           ("probability", .number(slow.probability))])))
        }
        func probability(_ key: String, _ value: Double?) {
            if let value { pairs.append((key, .object([("probability", .number(value))]))) }
        }
        probability("no_response", faults.noResponse)
        if let exception = faults.exception {
            pairs.append(("exception", .object([("code", .string(exception.code.name)), ("probability", .number(exception.probability))])))
        }
        probability("drop_connection", faults.dropConnection)
        probability("garbled", faults.garbled)
        probability("short", faults.short)
        probability("truncated", faults.truncated)
        if let wrong = faults.wrongUnit {
            var inner: [(String, JSON)] = [("probability", .number(wrong.probability))]
            if let unit = wrong.unit { inner.append(("unit", .number(Double(unit)))) }
            pairs.append(("wrong_unit", .object(inner)))
        }
        if let offline = faults.offline {
            var inner: [(String, JSON)] = [("after", durationText(offline.after)), ("for", durationText(offline.duration))]
            if let every = offline.every { inner.append(("every", durationText(every))) }
            pairs.append(("offline", .object(inner)))
        }
        return .object(pairs)
    }
}

// MARK: - HTTP

final class ControlListener: LoopHandler {
    private(set) var fd: Int32
    private let api: ControlAPI
    private unowned let loop: EventLoop
    private(set) var isClosed = false

    init(fd: Int32, api: ControlAPI, loop: EventLoop) {
        self.fd = fd
        self.api = api
        self.loop = loop
    }

    var events: Int16 { Int16(POLLIN) }
    var deadline: Double? { nil }

    func handle(revents: Int16, now: Double) {
        for _ in 0..<16 {
            let (client, _) = Posix.accept(fd)
            guard client >= 0 else { return }
            loop.add(ControlConnection(fd: client, api: api, now: now))
        }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
        fd = -1
    }
}

/// One HTTP request and its response; the connection closes after it.
final class ControlConnection: LoopHandler {
    static let maxRequest = 1 << 20
    private(set) var fd: Int32
    private let api: ControlAPI
    private var input: [UInt8] = []
    private var output: [UInt8] = []
    private var responded = false
    private let expires: Double
    private(set) var isClosed = false

    init(fd: Int32, api: ControlAPI, now: Double) {
        self.fd = fd
        self.api = api
        expires = now + 10
    }

    var events: Int16 { responded ? Int16(POLLOUT) : Int16(POLLIN) }
    var deadline: Double? { expires }

    func handleTimers(now: Double) {
        if now >= expires { close() }
    }

    func handle(revents: Int16, now: Double) {
        if !responded {
            var buffer = [UInt8](repeating: 0, count: 16384)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 {
                if count == 0 || (errno != EAGAIN && errno != EINTR) { close() }
                return
            }
            input += buffer[0..<count]
            if input.count > Self.maxRequest {
                respond(413, .object([("error", .string("request too large"))]))
            } else if let request = Self.parse(input) {
                if request.method == "BAD" {
                    respond(400, .object([("error", .string("malformed HTTP request"))]))
                } else {
                    let response = api.handle(method: request.method, target: request.target, body: request.body)
                    respond(response.status, response.body)
                }
            }
        }
        if responded {
            let sent = output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 { output.removeFirst(sent) }
            if output.isEmpty || (sent < 0 && errno != EAGAIN) { close() }
        }
    }

    private func respond(_ status: Int, _ body: JSON) {
        let text = body.text + "\n"
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"][status] ?? "Error"
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(text.utf8.count)\r\nConnection: close\r\n\r\n"
        output = Array((head + text).utf8)
        responded = true
    }

    /// A complete request (headers and Content-Length bytes of body), or nil while incomplete.
    static func parse(_ bytes: [UInt8]) -> (method: String, target: String, body: String)? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4, let end = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<$0 + 4]) == separator }) else {
            return nil
        }
        let head = String(decoding: bytes[0..<end], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let requestLine = lines.first?.split(separator: " ") ?? []
        guard requestLine.count >= 2 else { return ("BAD", "/", "") }
        var length = 0
        for line in lines.dropFirst() {
            let pair = line.split(separator: ":", maxSplits: 1)
            if pair.count == 2, pair[0].lowercased() == "content-length" {
                length = Int(pair[1].trimmingCharacters(in: [" "])) ?? 0
            }
        }
        // A negative or absurd length is answered as a bad request, never used as a range.
        guard (0...maxRequest).contains(length) else { return ("BAD", "/", "") }
        let bodyStart = end + 4
        guard bytes.count >= bodyStart + length else { return nil }
        return (String(requestLine[0]).uppercased(), String(requestLine[1]),
                String(decoding: bytes[bodyStart..<bodyStart + length], as: UTF8.self))
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
        fd = -1
    }
}
