import Collector
import Foundation
import Synchronization
import Testing
import TestSupport
import UplinkCore

/// The collector's write queue against the simulator: writes run on the device's poll loop between
/// polls, are answered, and the device is polled again at once so the new value is read back.
@Suite("Collector writes (uplink-sim)", .serialized)
struct CollectorWriteTests {
    final class Polls: Sendable {
        let batches = Mutex<[PollBatch]>([])
        func value(_ signal: String, after index: Int) -> [Value?] {
            batches.withLock { Array($0.dropFirst(index)) }.flatMap { $0.records.filter { $0.signal == signal }.map(\.value) }
        }
        var count: Int { batches.withLock { $0.count } }
    }

    func write(_ collector: Collector, _ device: String, _ operation: WriteOperation) async -> WriteOutcome {
        await withCheckedContinuation { continuation in
            collector.write(device: device, operation: operation) { continuation.resume(returning: $0) }
        }
    }

    @Test func writesAreQueuedAnsweredAndReadBack() async throws {
        let directory = TestSupport.temporaryDirectory("uplink-writes")
        defer { try? FileManager.default.removeItem(at: directory) }
        let plant = try Plant(directory: directory)
        defer { plant.stop() }
        let oven = Device(name: "oven", transport: .tcp(host: "127.0.0.1", port: plant.ovenPort),
                          poll: PollSettings(intervalMs: 2000, timeoutMs: 500, retries: 0), signals: [
            Signal(name: "run", area: .coil, address: 0, type: .bool, writable: .unbounded),
            Signal(name: "setpoint", area: .holdingRegister, address: 1, type: .int16, scale: 0.1, writable: .unbounded),
            Signal(name: "status_bit0", area: .holdingRegister, address: 4, type: .bit(0), writable: .unbounded),
        ])
        let plan = try Planner.plan(oven).get()
        let polls = Polls()
        let collector = Collector(plans: [plan], onBatch: { batch in polls.batches.withLock { $0.append(batch) } })
        collector.start()
        defer { collector.stop() }
        #expect(await TestSupport.waitUntil(timeout: 10) { polls.count >= 1 })

        // A set point: written, and read back right away (the poll interval is 2 s).
        let before = polls.count
        let written = await write(collector, "oven", try Encoder.write(.double(123.4), to: oven.signals[1]).get())
        #expect(written == .written)
        #expect(await TestSupport.waitUntil(timeout: 1.5) { polls.value("setpoint", after: before).contains(.double(123.4)) },
                "\(polls.value("setpoint", after: before))")
        #expect(try plant.values("oven")["setpoint"] as? Double == 123.4)

        let coil = await write(collector, "oven", .coil(address: 0, value: false))
        #expect(coil == .written)
        #expect(try await TestSupport.waitUntil(timeout: 5) { try plant.values("oven")["run"] as? Double == 0 })

        // The device's own refusal comes back with its reason (the status register is not writable there).
        let refused = await write(collector, "oven", .registerBit(address: 4, bit: 0, value: true))
        guard case .failed(let why) = refused else { Issue.record("\(refused)"); return }
        #expect(why.contains("exception 2"), "\(why)")
        #expect(await write(collector, "press-9", .coil(address: 0, value: true)) == .failed("device 'press-9' is not polled by this agent"))

        // An offline device: the write is not sent, and says so.
        try plant.faults("oven", #"{"offline": "30s"}"#)
        #expect(await TestSupport.waitUntil(timeout: 10) { polls.batches.withLock { $0.last?.records.first?.quality == .offline } })
        let offline = await write(collector, "oven", .coil(address: 0, value: true))
        guard case .failed(let reason) = offline else { Issue.record("\(offline)"); return }
        #expect(reason.contains("not sent") || reason.contains("connection"), "\(reason)")

        collector.stop()
        let stopped = await write(collector, "oven", .coil(address: 0, value: true))
        guard case .failed(let late) = stopped else { Issue.record("\(stopped)"); return }
        #expect(late.contains("stopping") || late.contains("stopped"), "\(late)")
    }
}
