/// uplink-bench: prints the collection core's figures (decode rate, planning time, poll rate).
/// Build in release mode for figures: `swift build -c release --product uplink-bench`.
/// The results and the commands that produced them go to BENCHMARKS.md.
import ArgumentParser
import Collector
import Foundation
import Modbus
import UplinkCore

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "uplink-bench", abstract: "Benchmarks of the collection core.")

    @Option(help: "Modbus TCP server HOST:PORT to poll for the request-rate figure (e.g. uplink-sim); skipped if absent.")
    var server: String?

    @Option(help: "Unit id on that server.")
    var unit: Int = 1

    @Option(help: "Seconds to poll the server.")
    var seconds: Double = 5

    @Option(help: "Registers per request when polling.")
    var registers: Int = 100

    @Option(help: "Bare loop: publish QoS 1 to this broker HOST:PORT for --seconds and print acks/s (skips the core figures).")
    var mqtt: String?

    @Option(help: "With --mqtt: payload bytes per message.")
    var payloadBytes: Int = 8000

    @Option(help: "With --mqtt: messages in flight.")
    var window: Int = 256

    @Option(help: "Bare loop: durable buffer commits/s in this (scratch, emptied) directory for --seconds (skips the core figures).")
    var bufferDir: String?

    @Option(help: "With --buffer-dir: records per commit.")
    var recordsPerCommit: Int = 100

    @Option(help: "Bare loop: poll the first device of --config over RTU on this serial device for --seconds per plan (skips the core figures).")
    var rtu: String?

    @Option(help: "With --rtu: baud rate.")
    var baud: Int = 9600

    @Option(help: "With --rtu: agent config whose first device's map is polled.")
    var config: String?

    @Flag(help: "Only the poll-rate bare loop (with --server), not the decode and planning figures.")
    var pollOnly = false

    func run() async throws {
        if let mqtt {
            guard let colon = mqtt.lastIndex(of: ":"), let port = Int(mqtt[mqtt.index(after: colon)...]) else { throw ValidationError("--mqtt: expected HOST:PORT") }
            try await Raw.mqttRate(host: String(mqtt[..<colon]), port: port, seconds: seconds, payloadBytes: payloadBytes, window: window)
            return
        }
        if let bufferDir { try Raw.bufferRate(directory: bufferDir, seconds: seconds, recordsPerCommit: recordsPerCommit); return }
        if let rtu {
            guard let config else { throw ValidationError("--rtu needs --config") }
            try Raw.rtu(config: config, port: rtu, baud: baud, unit: nil, seconds: seconds)
            return
        }
        if !pollOnly {
            decodeRate()
            planningTime()
        }
        if let server { try pollRate(server) }
    }

    /// A map of 10,000 signals of mixed types, 8 registers apart on average.
    static func map(signals: Int) -> [Signal] {
        let types: [DataType] = [.uint16, .int16, .float32, .uint32, .int32, .float64, .bit(3), .int64]
        var address = 0
        return (0..<signals).map { i in
            let type = types[i % types.count]
            defer { address += type.width + (i % 5 == 0 ? 3 : 0) }
            return Signal(name: "s\(i)", area: i % 7 == 0 ? .inputRegister : .holdingRegister, address: address % 60_000, type: type,
                          order: ByteOrder.allCases[i % 4], scale: i % 3 == 0 ? 0.1 : 1)
        }
    }

    func decodeRate() {
        let signals = Self.map(signals: 1000)
        let words = (0..<200).map { UInt16(truncatingIfNeeded: $0 &* 7919) }
        var checksum = 0.0, registers = 0
        let rounds = 2000
        let start = ContinuousClock.now
        for _ in 0..<rounds {
            for signal in signals {
                let at = signal.address % 100
                if case .success(let value) = Decoder.record(for: signal, base: signal.address - at, words: words) {
                    if case .double(let d) = value { checksum += d.isFinite ? 1 : 0 } else { checksum += 1 }
                }
                registers += signal.type.width
            }
        }
        let seconds = (ContinuousClock.now - start).seconds
        print(String(format: "decode: %.1f M registers/s, %.1f M values/s (%d values, checksum %.0f)",
                     Double(registers) / seconds / 1e6, Double(rounds * signals.count) / seconds / 1e6, rounds * signals.count, checksum))
    }

    func planningTime() {
        let device = Device(name: "big", transport: .tcp(host: "127.0.0.1", port: 502), signals: Self.map(signals: 10_000))
        var best = Duration.seconds(1000)
        var requests = 0
        for _ in 0..<5 {
            let start = ContinuousClock.now
            if case .success(let plan) = Planner.plan(device) { requests = plan.requestsPerCycle }
            best = min(best, ContinuousClock.now - start)
        }
        print(String(format: "plan: 10000 signals -> %d requests in %.2f ms (best of 5)", requests, best.seconds * 1000))
    }

    func pollRate(_ server: String) throws {
        guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]) else {
            throw ValidationError("--server: expected HOST:PORT")
        }
        let client = try ModbusClient(host: String(server[..<colon]), port: port)
        client.setResponseTimeout(milliseconds: 2000)
        try client.connect()
        try client.setUnit(unit)
        var count = 0
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            _ = try client.readRegisters(.holdingRegisters, address: 0, count: registers)
            count += 1
        }
        let elapsed = (ContinuousClock.now - start).seconds
        print(String(format: "poll: %.0f requests/s of %d registers from %@ (%d requests in %.1f s, one connection)",
                     Double(count) / elapsed, registers, server, count, elapsed))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
