/// Bare loops that measure the raw limits of each stage on its own, for comparison with the
/// end-to-end figures of `Benchmarks/run-all.sh`: broker QoS 1 acks/s (MQTT module), buffer
/// commits/s (Buffer module), and RTU bus time per poll cycle (planner vs one request per signal,
/// against the theoretical minimum from frame sizes).
import ArgumentParser
import Buffer
import Foundation
import Modbus
import MQTT
import UplinkConfig
import UplinkCore

enum Raw {
    /// Publishes QoS 1 messages of `payloadBytes` keeping `window` in flight; prints acks/s.
    static func mqttRate(host: String, port: Int, seconds: Double, payloadBytes: Int, window: Int) async throws {
        var options = MQTTOptions(host: host, port: port, clientID: "uplink-bench-\(getpid())")
        options.sendMaximum = window
        let client = try MQTTClient(options)
        try client.start()
        try await client.waitUntilConnected(timeout: .seconds(10))
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: payloadBytes)
        var sent = 0, acked = 0
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        for _ in 0..<window { try client.publish(topic: "bench/raw", payload: payload); sent += 1 }
        var last = start
        for await event in client.events {
            guard case .published = event else { continue }
            acked += 1
            last = ContinuousClock.now
            if last < end {
                try client.publish(topic: "bench/raw", payload: payload); sent += 1
            } else if acked == sent { break }
        }
        let elapsed = (last - start).seconds
        print(String(format: "mqtt: %.0f QoS 1 acks/s of %d-byte messages (%d acked in %.1f s, window %d, %.1f MB/s)",
                     Double(acked) / elapsed, payloadBytes, acked, elapsed, window, Double(acked * payloadBytes) / elapsed / 1e6))
        await client.disconnect()
    }

    /// Appends batches of `recordsPerCommit` records (one transaction, fsynced, each), then acknowledges them
    /// (deletes) in the same batches; prints commits/s and records/s for both.
    static func bufferRate(directory: String, seconds: Double, recordsPerCommit: Int) throws {
        let dir = URL(fileURLWithPath: directory)
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let buffer = try DiskBuffer(stateDirectory: dir, options: BufferOptions(maxBytes: 4 << 30, verifyOnOpen: false))
        defer { buffer.close() }
        let now = systemMillis()
        let records = (0..<recordsPerCommit).map { Record(device: "m0", signal: "r\($0)", timestamp: now, value: .uint(UInt64($0 * 7)), quality: .good) }
        var commits = 0
        var ranges: [ClosedRange<UInt64>] = []
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            let result = try buffer.append([PollBatch(device: "m0", timestamp: now, records: records)])
            for batch in result.committed {
                if let first = batch.records.first?.seq, let last = batch.records.last?.seq { ranges.append(first...last) }
            }
            commits += 1
        }
        let appendTime = (ContinuousClock.now - start).seconds
        let ackStart = ContinuousClock.now
        var acks = 0
        for range in ranges { _ = try buffer.acknowledge(range); acks += 1 }
        let ackTime = (ContinuousClock.now - ackStart).seconds
        print(String(format: "buffer: %.0f commits/s of %d records = %.0f records/s durable (synchronous=FULL); acknowledge (delete) %.0f commits/s = %.0f records/s (%d commits)",
                     Double(commits) / appendTime, recordsPerCommit, Double(commits * recordsPerCommit) / appendTime,
                     Double(acks) / max(ackTime, 1e-9), Double(acks * recordsPerCommit) / max(ackTime, 1e-9), commits))
    }

    /// Line time of one read per the Modbus serial line spec: request (8 chars) + t3.5 + response (5 + data
    /// bytes) + t3.5 before the next request; 11 bits per char. `gaps: 1` is the simulator's timing model (it
    /// answers t3.5 after the request and does not hold the master to a gap after the answer).
    static func requestSeconds(area: Area, count: Int, baud: Int, gaps: Int = 2) -> Double {
        let char = 11.0 / Double(baud)
        let gap = baud > 19_200 ? 0.00175 : 3.5 * char
        let data = area.isBitArea ? (count + 7) / 8 : 2 * count
        return Double(8 + 5 + data) * char + Double(gaps) * gap
    }

    static func planSeconds(_ plan: PollPlan, baud: Int, gaps: Int = 2) -> Double {
        plan.groups.flatMap(\.requests).reduce(0) { $0 + requestSeconds(area: $1.area, count: $1.count, baud: baud, gaps: gaps) }
    }

    /// The least line time any grouping of the map's signals into reads can take (dynamic programming over each
    /// area's signals sorted by address; a read covers a contiguous span within the protocol limit).
    static func optimalSeconds(_ signals: [Signal], baud: Int) -> (seconds: Double, requests: Int) {
        var total = 0.0, requests = 0
        for area in Area.allCases {
            let spans = signals.filter { $0.area == area }.map { ($0.address, $0.address + $0.type.width) }.sorted { $0.0 < $1.0 }
            guard !spans.isEmpty else { continue }
            var best = [Double](repeating: .infinity, count: spans.count + 1), count = [Int](repeating: 0, count: spans.count + 1)
            best[0] = 0
            for j in 1...spans.count {            // best[j]: the first j signals read
                var end = 0
                for i in stride(from: j - 1, through: 0, by: -1) { // one read covering signals i..<j
                    end = max(end, spans[j - 1].1, spans[i].1)
                    let width = end - spans[i].0
                    if width > area.protocolLimit { break }
                    let cost = best[i] + requestSeconds(area: area, count: width, baud: baud)
                    if cost < best[j] { best[j] = cost; count[j] = count[i] + 1 }
                }
            }
            total += best[spans.count]; requests += count[spans.count]
        }
        return (total, requests)
    }

    /// Polls the config's first device over RTU back to back for `seconds` with our plan and with one request
    /// per signal; prints the measured bus time per cycle against each plan's theoretical minimum.
    static func rtu(config path: String, port: String, baud: Int, unit: Int?, seconds: Double) throws {
        let config = try ConfigLoader.load(path: path)
        guard var device = config.devices.first else { throw ValidationError("\(path): no devices") }
        device.transport = .rtu(bus: "bench", settings: SerialSettings(port: port, baud: baud))
        let client = try ModbusClient(serialPort: port, baud: baud, parity: .none, dataBits: 8, stopBits: 1)
        client.setResponseTimeout(milliseconds: 2000)
        try client.connect()
        try client.setUnit(unit ?? device.unit)
        let optimal = optimalSeconds(device.signals, baud: baud)
        print(String(format: "rtu: %@ at %d baud, device %@: %d signals, %d registers/bits; least possible line time per cycle %.1f ms (%d reads)",
                     path, baud, device.name, device.signals.count, device.signals.reduce(0) { $0 + $1.type.width }, optimal.seconds * 1000, optimal.requests))
        for single in [false, true] {
            device.poll.singleReads = single
            guard case .success(let plan) = Planner.plan(device) else { throw ValidationError("plan failed") }
            let requests = plan.groups.flatMap(\.requests)
            let minimum = planSeconds(plan, baud: baud)
            let emulated = planSeconds(plan, baud: baud, gaps: 1)
            var cycles = 0, errors = 0
            let start = ContinuousClock.now
            let end = start + .milliseconds(Int(seconds * 1000))
            repeat {
                for r in requests {
                    do {
                        switch r.area {
                        case .holdingRegister: _ = try client.readRegisters(.holdingRegisters, address: r.address, count: r.count)
                        case .inputRegister: _ = try client.readRegisters(.inputRegisters, address: r.address, count: r.count)
                        case .coil: _ = try client.readBits(.coils, address: r.address, count: r.count)
                        case .discreteInput: _ = try client.readBits(.discreteInputs, address: r.address, count: r.count)
                        }
                    } catch { errors += 1 }
                }
                cycles += 1
            } while ContinuousClock.now < end
            let perCycle = (ContinuousClock.now - start).seconds / Double(cycles)
            print(String(format: "rtu: %@: %d reads per cycle, bus time %.1f ms per cycle measured (%d cycles, %d errors); theoretical minimum of these reads %.1f ms per the spec (measured/minimum %.3f; vs the least possible for the map %.3f), %.1f ms in the simulator's model without the gap after each answer (measured/that %.3f)",
                         single ? "one request per signal" : "uplink planner", requests.count, perCycle * 1000, cycles, errors,
                         minimum * 1000, perCycle / minimum, perCycle / optimal.seconds, emulated * 1000, perCycle / emulated))
        }
    }
}
