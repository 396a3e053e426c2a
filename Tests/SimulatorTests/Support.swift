// Shared helpers for the simulator tests: paths, an uplink-sim child process that serves a
// scenario on free ports, a raw HTTP client for the control interface, raw Modbus TCP and RTU
// clients, and the two third-party masters (pymodbus through a small script, mbpoll).

import Foundation
import Testing
import TestSupport
@testable import Simulator
#if canImport(Glibc)
import Glibc
#endif

enum Paths {
    static let repoRoot = TestSupport.repoRoot
    static func simulator(_ name: String) -> String { repoRoot.appendingPathComponent("Simulators/\(name)").path }
    static func config(_ name: String) -> String { repoRoot.appendingPathComponent("Configs/\(name)").path }
    /// Broken profiles with their expected messages (outside the test target: SwiftPM warns about
    /// non-source files inside it, and the manifest is not ours to change).
    static let testcases = repoRoot.appendingPathComponent("Simulators/testcases").path
    static let profiles = ["injection-moulding", "cnc-machining-centre", "air-compressor", "energy-meter", "temperature-controller"]
}

enum TestError: Error, CustomStringConvertible {
    case failed(String)
    var description: String {
        switch self {
        case .failed(let message): message
        }
    }
}

// MARK: - uplink-sim as a child process

/// uplink-sim serving a scenario written to a temporary directory. Use port 0 and `control: 0`
/// in the scenario: the simulator binds free ports itself (no race) and prints them.
final class SimProcess {
    struct Endpoint: Equatable {
        var port: Int?
        var unit: Int
        var serialPath: String?
    }

    let child: ChildProcess
    let directory: URL
    private(set) var endpoints: [String: Endpoint] = [:]
    private(set) var controlPort: Int?

    /// Writes `scenario` into `directory` (a new temporary one by default; removed on stop).
    convenience init(directory: URL = TestSupport.temporaryDirectory("uplink-sim"), scenario: String,
                     arguments: [String] = []) throws {
        let file = directory.appendingPathComponent("scenario.yaml")
        try scenario.write(to: file, atomically: true, encoding: .utf8)
        try self.init(file: file.path, arguments: arguments, directory: directory)
    }

    init(file: String, arguments: [String] = [], directory: URL = TestSupport.temporaryDirectory("uplink-sim")) throws {
        self.directory = directory
        child = try ChildProcess(TestSupport.product("uplink-sim"), [file] + arguments)
        guard child.waitForOutput(containing: "\nready", timeout: 20) else {
            child.stop()
            throw TestError.failed("uplink-sim did not get ready:\n\(child.outputText)")
        }
        parse(child.outputText)
    }

    private func parse(_ output: String) {
        for line in output.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            if line.hasPrefix("control: "), let url = words.last,
               let port = url.split(separator: ":").last?.split(separator: "/").first.flatMap({ Int($0) }) {
                controlPort = port
            }
            guard line.hasPrefix("  "), let name = words.first, let unitIndex = words.lastIndex(of: "unit"),
                  unitIndex + 1 < words.count, let unit = Int(words[unitIndex + 1]) else { continue }
            if let tcp = words.firstIndex(of: "tcp"), tcp + 1 < words.count,
               let port = words[tcp + 1].split(separator: ":").last.flatMap({ Int($0) }) {
                endpoints[name] = Endpoint(port: port, unit: unit)
            } else if let rtu = words.firstIndex(of: "rtu"), rtu + 1 < words.count {
                endpoints[name] = Endpoint(unit: unit, serialPath: words[rtu + 1])
            }
        }
    }

    func port(_ machine: String) throws -> Int {
        guard let port = endpoints[machine]?.port else { throw TestError.failed("no TCP port printed for \(machine):\n\(child.outputText)") }
        return port
    }

    func control(_ method: String, _ path: String, _ body: String = "") throws -> HTTPResponse {
        guard let controlPort else { throw TestError.failed("no control port printed:\n\(child.outputText)") }
        return try HTTP.request(port: controlPort, method: method, path: path, body: body)
    }

    func setFaults(_ machine: String, _ faults: String) throws {
        let response = try control("PUT", "/machines/\(machine)/faults", faults)
        guard response.status == 200 else { throw TestError.failed("PUT faults: \(response.status) \(response.body)") }
    }

    func step(_ duration: String) throws {
        let response = try control("POST", "/time/step", "{\"by\": \"\(duration)\"}")
        guard response.status == 200 else { throw TestError.failed("step: \(response.status) \(response.body)") }
    }

    var isRunning: Bool { child.process.isRunning }

    func stop() {
        child.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}

// MARK: - HTTP (the control interface)

struct HTTPResponse {
    var status: Int
    var body: String
}

enum HTTP {
    static func request(port: Int, method: String, path: String, body: String = "") throws -> HTTPResponse {
        let response = try HTTPClient.request(port: port, method: method, path: path, body: body, timeout: 5)
        return HTTPResponse(status: response.status, body: response.body)
    }
}

// MARK: - Raw sockets

/// A blocking TCP client with a receive timeout, for byte-exact conversations.
final class RawSocket {
    let fd: Int32

    /// `receiveBuffer` shrinks the kernel's receive buffer (set before connecting, so the window
    /// stays small): a master that never reads then pushes back on the server sooner.
    init(port: Int, timeout: Double = 2, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw TestError.failed("connect to \(port): \(String(cString: strerror(code)))")
        }
        var time = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var yes: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestError.failed("send failed: \(String(cString: strerror(errno)))") }
            offset += sent
        }
    }

    /// Reads exactly `count` bytes; nil if the peer closed or the timeout passed first.
    func read(_ count: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: max(count, 1))
        while out.count < count {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, count - out.count, 0) }
            guard got > 0 else { return nil }
            out += buffer[0..<got]
        }
        return out
    }

    /// Whether the server closed the connection (recv returns 0 or a reset) within the timeout.
    func isClosedByPeer() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { return true }
            if got < 0 { return errno == ECONNRESET }
        }
    }

    func readToEnd() throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { return out }
            guard got > 0 else { throw TestError.failed("read failed: \(String(cString: strerror(errno)))") }
            out += buffer[0..<got]
        }
    }

    /// Sends one Modbus TCP request and reads the whole response frame (header, then length).
    func modbus(_ pdu: [UInt8], unit: UInt8 = 1, transaction: UInt16 = 1) throws -> (header: MBAPHeader, pdu: [UInt8])? {
        try send(MBAP.encode(transactionID: transaction, unit: unit, pdu: pdu))
        return readFrame()
    }

    func readFrame() -> (header: MBAPHeader, pdu: [UInt8])? {
        guard let head = read(MBAPHeader.size) else { return nil }
        let length = Int(head[4]) << 8 | Int(head[5])
        guard length >= 1, let rest = read(length - 1) else { return nil }
        guard case .frame(let header, let range, _) = MBAP.scan(head + rest) else { return nil }
        return (header, Array((head + rest)[range]))
    }
}

/// A serial line opened from the test side (the pty slave path the simulator printed).
final class SerialClient {
    let fd: Int32

    init(path: String) throws {
        fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else { throw TestError.failed("open \(path): \(String(cString: strerror(errno)))") }
        var settings = termios()
        if tcgetattr(fd, &settings) == 0 {
            cfmakeraw(&settings)
            tcsetattr(fd, TCSANOW, &settings)
        }
        tcflush(fd, TCIOFLUSH)
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset) }
            if written > 0 { offset += written } else { usleep(1000) }
        }
    }

    /// Reads one RTU response frame (sized from its function code), or nil after `timeout` seconds.
    func readResponse(timeout: Double) -> [UInt8]? {
        var bytes: [UInt8] = []
        let deadline = MonotonicClock.now() + timeout
        while MonotonicClock.now() < deadline {
            if case .bytes(let length) = RTUFraming.responseLength(bytes), bytes.count >= length {
                return Array(bytes.prefix(length))
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 20) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 512)
            let got = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if got > 0 { bytes += buffer[0..<got] }
        }
        return nil
    }
}

// MARK: - Third-party masters

/// pymodbus 3.8 (the repo's .venv) driven by a small script: one JSON line per operation.
enum PyModbus {
    /// Outcome of one operation, classified the way the agent classifies qualities.
    enum Outcome: Equatable {
        case values([Int])
        case exception(Int)
        case timeout
        case connection
        case badResponse
        case error(String)
    }

    static let script = #"""
    import json, logging, sys
    logging.disable(logging.CRITICAL)
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ConnectionException, ModbusIOException
    spec = json.loads(sys.argv[1])
    client = ModbusTcpClient("127.0.0.1", port=spec["port"], timeout=spec.get("timeout", 2.0), retries=0)
    client.connect()
    unit = spec.get("unit", 1)
    for op in spec["ops"]:
        try:
            kind, address = op["op"], op["address"]
            if kind == "read":
                count, area = op["count"], op["area"]
                call = {"holding": client.read_holding_registers, "input": client.read_input_registers,
                        "coil": client.read_coils, "discrete": client.read_discrete_inputs}[area]
                result = call(address, count=count, slave=unit)
            elif kind == "write":
                result = client.write_registers(address, op["values"], slave=unit)
            else:
                result = client.write_coil(address, bool(op["value"]), slave=unit)
            if result.isError():
                print(json.dumps({"exception": getattr(result, "exception_code", -1)}))
            elif kind == "read" and op["area"] in ("coil", "discrete"):
                print(json.dumps({"ok": [int(b) for b in result.bits[:op["count"]]]}))
            elif kind == "read":
                print(json.dumps({"ok": list(result.registers)}))
            else:
                print(json.dumps({"ok": []}))
        except ConnectionException as error:
            print(json.dumps({"error": "connection", "detail": str(error)}))
        except ModbusIOException as error:
            text = str(error)
            kind = "timeout" if "No response" in text else "bad_response"
            print(json.dumps({"error": kind, "detail": text}))
        except Exception as error:
            print(json.dumps({"error": "other", "detail": type(error).__name__ + ": " + str(error)}))
        sys.stdout.flush()
    client.close()
    """#

    static let scriptPath: String = {
        // One fixed file, rewritten atomically by each run (same content), so runs leave no litter.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("uplink-sim-pymodbus-master.py")
        try? script.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }()

    static var available: Bool { FileManager.default.isExecutableFile(atPath: TestSupport.python) }

    /// Runs operations (`["op": "read", "area": "holding", "address": 0, "count": 10]`, ...) over one connection.
    static func run(port: Int, unit: Int = 1, timeout: Double = 2, ops: [[String: Any]]) throws -> [Outcome] {
        let spec: [String: Any] = ["port": port, "unit": unit, "timeout": timeout, "ops": ops]
        let json = String(decoding: try JSONSerialization.data(withJSONObject: spec), as: UTF8.self)
        let result = try ChildProcess.run(TestSupport.python, [scriptPath, json], timeout: 60)
        guard result.status == 0 else { throw TestError.failed("pymodbus script failed (\(result.status)):\n\(result.output)") }
        let lines = result.output.split(separator: "\n").filter { $0.hasPrefix("{") }
        guard lines.count == ops.count else { throw TestError.failed("pymodbus printed \(lines.count) results for \(ops.count) ops:\n\(result.output)") }
        return try lines.map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw TestError.failed("not JSON: \(line)")
            }
            if let values = object["ok"] as? [Int] { return .values(values) }
            if let code = object["exception"] as? Int { return .exception(code) }
            switch object["error"] as? String {
            case "timeout": return .timeout
            case "connection": return .connection
            case "bad_response": return .badResponse
            default: return .error(object["detail"] as? String ?? line.description)
            }
        }
    }

    static func read(port: Int, unit: Int = 1, area: String = "holding", address: Int, count: Int, timeout: Double = 2) throws -> Outcome {
        try run(port: port, unit: unit, timeout: timeout, ops: [["op": "read", "area": area, "address": address, "count": count]])[0]
    }
}

/// mbpoll (libmodbus 3.1.6 underneath: the same library the agent uses).
enum MBPoll {
    static var path: String? { TestSupport.which("mbpoll") }

    struct Result {
        var status: Int32
        var output: String
        /// Values by PDU address, as printed.
        var values: [Int: Double] {
            var out: [Int: Double] = [:]
            for line in output.split(separator: "\n") where line.hasPrefix("[") {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, let address = Int(parts[0].dropFirst().dropLast()),
                      let value = parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap({ Double($0) }) else { continue }
                out[address] = value
            }
            return out
        }
    }

    /// `-0` (PDU addresses) and `-1` (poll once) are always passed.
    static func run(_ arguments: [String]) throws -> Result {
        guard let path else { throw TestError.failed("mbpoll is not installed") }
        let result = try ChildProcess.run(path, ["-0", "-1"] + arguments, timeout: 30)
        return Result(status: result.status, output: result.output)
    }

    /// TCP read: `type` is mbpoll's -t (4 holding, 3 input, 0 coils, 1 discrete, 3:float ...).
    static func tcp(port: Int, unit: Int = 1, type: String = "4", address: Int, count: Int, extra: [String] = [],
                    timeout: String = "3") throws -> Result {
        try run(["-m", "tcp", "-p", String(port), "-a", String(unit), "-t", type, "-r", String(address),
                 "-c", String(count), "-o", timeout] + extra + ["127.0.0.1"])
    }

    static func rtu(path serial: String, unit: Int, type: String = "4", address: Int, count: Int, extra: [String] = [],
                    timeout: String = "3", write: [String] = []) throws -> Result {
        // mbpoll refuses -c when writing: the values give the count.
        let countArguments = write.isEmpty ? ["-c", String(count)] : []
        return try run(["-m", "rtu", "-b", "9600", "-P", "none", "-a", String(unit), "-t", type, "-r", String(address)]
                       + countArguments + ["-o", timeout] + extra + [serial] + write)
    }
}

/// Reads every mapped register of a machine definition and decodes its values, the way an agent
/// with the matching config would.
struct DecodedMachine {
    var numbers: [String: Double] = [:]
    var texts: [String: String] = [:]
    var raw: [DataArea: [UInt16]] = [:]

    /// `registers` holds each area's contents from address 0 (bits as 0/1).
    init(definition: MachineDefinition, registers: [DataArea: [UInt16]]) {
        raw = registers
        for variable in definition.variables {
            guard let placement = variable.placement, let area = registers[placement.area],
                  placement.end <= area.count else { continue }
            let slice = Array(area[placement.address..<placement.end])
            if case .string = placement.type {
                texts[variable.name] = ValueCodec.decodeText(slice, order: placement.order)
            } else if let value = ValueCodec.decode(slice, as: placement.type, order: placement.order,
                                                    scale: placement.scale, offset: placement.offset) {
                numbers[variable.name] = value
            }
        }
    }

    subscript(_ name: String) -> Double { numbers[name] ?? .nan }
}

extension MachineDefinition {
    /// (area, start, count) chunks of at most 125 registers (or 2000 bits) covering each area.
    var readPlan: [(area: DataArea, address: Int, count: Int)] {
        var plan: [(DataArea, Int, Int)] = []
        for area in DataArea.allCases {
            let size = areaSizes[area] ?? 0
            let chunk = area.holdsBits ? 2000 : 125
            var address = 0
            while address < size {
                plan.append((area, address, min(chunk, size - address)))
                address += chunk
            }
        }
        return plan
    }
}

/// Loads a shipped profile.
func loadProfile(_ name: String) throws -> MachineDefinition {
    let scenario = try ProfileLoader.load(path: Paths.simulator("\(name).yaml"))
    guard let machine = scenario.machines.first else { throw TestError.failed("no machine in \(name)") }
    return machine
}

func requireTools() -> Bool { PyModbus.available && MBPoll.path != nil }
