// A raw-socket Modbus TCP load generator, for `uplink-sim bench` and the flood tests: many
// connections, each keeping requests in flight, every response checked (transaction id, function
// code, byte count). It measures the server, not a client library.

import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct LoadTarget: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var unit: UInt8

    public init(host: String = "127.0.0.1", port: Int, unit: UInt8 = 1) {
        self.host = host
        self.port = port
        self.unit = unit
    }
}

public struct LoadReport: Sendable, Equatable {
    /// Responses received and checked good.
    public var responses = 0
    /// Responses that were exceptions, malformed, or for the wrong transaction.
    public var badResponses = 0
    /// Connections that failed to open or were closed by the server.
    public var connectionFailures = 0
    public var seconds = 0.0
    public var registersPerRequest = 0

    public var requestsPerSecond: Double { seconds > 0 ? Double(responses) / seconds : 0 }

    mutating func add(_ other: LoadReport) {
        responses += other.responses
        badResponses += other.badResponses
        connectionFailures += other.connectionFailures
    }
}

public enum LoadGenerator {
    /// Reads `quantity` holding registers per request, walking addresses below `registers`, over
    /// `connectionsPerTarget` connections to each target, from `threads` threads, for `duration`
    /// seconds, with `depth` requests pipelined per connection.
    public static func run(targets: [LoadTarget], connectionsPerTarget: Int = 1, threads: Int = 2, duration: Double,
                           quantity: Int = 125, registers: Int = 1000, depth: Int = 1) -> LoadReport {
        var connections: [(target: LoadTarget, index: Int)] = []
        for target in targets {
            for index in 0..<max(1, connectionsPerTarget) { connections.append((target, index)) }
        }
        let threadCount = max(1, min(threads, connections.count))
        let results = Mutex<[LoadReport]>([])
        let started = MonotonicClock.now()
        let deadline = started + duration
        for threadIndex in 0..<threadCount {
            let mine = connections.enumerated().filter { $0.offset % threadCount == threadIndex }.map(\.element.target)
            let thread = Thread {
                let report = runConnections(mine, deadline: deadline, quantity: max(1, min(quantity, 125)),
                                            registers: max(registers, 1), depth: max(1, depth))
                results.withLock { $0.append(report) }
            }
            thread.name = "uplink-sim.load-\(threadIndex)"
            thread.start()
        }
        while results.withLock({ $0.count }) < threadCount { usleep(10_000) }
        var total = LoadReport()
        for report in results.withLock({ $0 }) { total.add(report) }
        total.seconds = MonotonicClock.now() - started
        total.registersPerRequest = max(1, min(quantity, 125))
        return total
    }

    private final class Client {
        var fd: Int32
        let unit: UInt8
        var nextTransaction: UInt16 = 0
        var inFlight: [UInt16: Int] = [:]
        var input: [UInt8] = []
        var address = 0

        init(fd: Int32, unit: UInt8) {
            self.fd = fd
            self.unit = unit
        }
    }

    private static func connect(_ target: LoadTarget) -> Int32 {
        guard let address = Posix.ipv4(target.host) else { return -1 }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = in_port_t(UInt16(target.port).bigEndian)
        socketAddress.sin_addr = address
        let result = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            return -1
        }
        var yes: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
        Posix.setNonBlocking(fd)
        return fd
    }

    private static func runConnections(_ targets: [LoadTarget], deadline: Double, quantity: Int, registers: Int,
                                       depth: Int) -> LoadReport {
        var report = LoadReport()
        var clients: [Client] = []
        for target in targets {
            let fd = connect(target)
            if fd < 0 { report.connectionFailures += 1 } else { clients.append(Client(fd: fd, unit: target.unit)) }
        }
        defer { for client in clients where client.fd >= 0 { close(client.fd) } }

        func send(_ client: Client) -> Bool {
            let count = min(quantity, registers - client.address)
            let request = ModbusRequest(function: .readHoldingRegisters,
                                        operation: .read(.holding, address: client.address, count: count))
            client.address = client.address + quantity >= registers ? 0 : client.address + quantity
            client.nextTransaction &+= 1
            client.inFlight[client.nextTransaction] = count
            let frame = MBAP.encode(transactionID: client.nextTransaction, unit: client.unit, pdu: ModbusPDU.encode(request))
            let sent = frame.withUnsafeBytes { Glibc.send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            return sent == frame.count
        }

        for client in clients {
            for _ in 0..<depth where !send(client) {
                report.connectionFailures += 1
                close(client.fd)
                client.fd = -1
                break
            }
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var descriptors: [pollfd] = []
        while MonotonicClock.now() < deadline {
            let live = clients.filter { $0.fd >= 0 }
            guard !live.isEmpty else { break }
            descriptors = live.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            guard poll(&descriptors, nfds_t(descriptors.count), 100) > 0 else { continue }
            for (index, client) in live.enumerated() where descriptors[index].revents != 0 {
                let count = buffer.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 {
                    if count == 0 || (errno != EAGAIN && errno != EINTR) {
                        report.connectionFailures += 1
                        close(client.fd)
                        client.fd = -1
                    }
                    continue
                }
                client.input += buffer[0..<count]
                var start = 0
                while case .frame(let header, let pdu, let consumed) = MBAP.scan(client.input, from: start) {
                    start += consumed
                    let expected = client.inFlight.removeValue(forKey: header.transactionID)
                    if let expected, client.input[pdu.lowerBound] == 3, pdu.count == 2 + 2 * expected,
                       Int(client.input[pdu.lowerBound + 1]) == 2 * expected {
                        report.responses += 1
                    } else {
                        report.badResponses += 1
                    }
                    if MonotonicClock.now() < deadline, !send(client) {
                        report.connectionFailures += 1
                        close(client.fd)
                        client.fd = -1
                        break
                    }
                }
                if client.fd >= 0, start > 0 { client.input.removeFirst(start) }
            }
        }
        return report
    }
}

/// Synthetic machines for the scale benchmark: `registers` holding registers each, a tenth of
/// them changing every tick (counters, sines, random walks), the rest constants.
public enum BenchmarkScenario {
    public static func make(machines: Int, registers: Int, basePort: Int = 0, host: String = "127.0.0.1",
                            seed: UInt64 = 1) -> ScenarioDefinition {
        var variables: [VariableDefinition] = []
        for address in 0..<registers {
            let generator: Generator
            switch address % 40 {
            case 0: generator = .counter(Generator.Counter(source: .rate(Formula(constant: 5)), wrap: 65536))
            case 10: generator = .sine(min: 100, max: 900, period: 60, phase: Double(address))
            case 20: generator = .randomWalk(start: 500, min: 0, max: 1000, step: 2)
            case 30: generator = .ramp(from: 0, to: 1000, period: 30, phase: 0)
            default: generator = .constant(Double(address % 1000))
            }
            variables.append(VariableDefinition(name: "r\(address)", placement: Placement(area: .holding, address: address, type: .uint16),
                                                generator: generator))
        }
        let definitions = (0..<machines).map { index in
            MachineDefinition(name: "bench-\(index + 1)", kind: "benchmark machine",
                              endpoint: .tcp(host: host, port: basePort == 0 ? 0 : basePort + index, unit: 1),
                              areaSizes: [.holding: registers], variables: variables)
        }
        return ScenarioDefinition(source: "bench", seed: seed, machines: definitions)
    }
}
