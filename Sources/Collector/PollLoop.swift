import Foundation
import Modbus
import UplinkCore

/// One thread polling one TCP device, or every device on one serial bus in turn.
final class PollLoop: @unchecked Sendable {
    // @unchecked: `stopRequested` and `finished` are guarded by `condition`; everything else is
    // immutable or owned by the loop's thread once started.
    private let name: String
    private let plans: [PollPlan]
    var deviceNames: [String] { plans.map(\.device.name) }
    private let onBatch: Collector.BatchHandler
    private let onEvent: Collector.EventHandler
    private let health: HealthTable
    private let condition = NSCondition()
    private var stopRequested = false
    private var finished = false
    private var started = false
    /// Writes waiting for the gap between two polls (guarded by `condition`).
    private var pendingWrites: [PendingWrite] = []

    /// Writes queued at most per loop; more are refused at once.
    static let maxPendingWrites = 64

    /// Longest wait before retrying a device that keeps failing.
    static let maxBackoffMs: Int64 = 30_000

    init(name: String, plans: [PollPlan], onBatch: @escaping Collector.BatchHandler,
         onEvent: @escaping Collector.EventHandler, health: HealthTable) {
        self.name = name
        self.plans = plans
        self.onBatch = onBatch
        self.onEvent = onEvent
        self.health = health
    }

    func start() {
        condition.lock()
        started = true
        condition.unlock()
        let thread = Thread { [self] in
            run()
            condition.lock()
            finished = true
            let unfinished = pendingWrites
            pendingWrites.removeAll()
            condition.broadcast()
            condition.unlock()
            for write in unfinished { write.completion(.failed("the agent stopped polling this device (stop or reload); the write was not sent")) }
        }
        thread.name = "uplink poll \(name)"
        thread.stackSize = 256 * 1024
        thread.start()
    }

    func requestStop() {
        condition.lock()
        stopRequested = true
        condition.broadcast()
        condition.unlock()
    }

    func waitUntilStopped() {
        condition.lock()
        while started && !finished { condition.wait() }
        condition.unlock()
    }

    /// Queues a write for the gap after the current poll; false (and nothing queued) when the
    /// loop has stopped or too many writes wait.
    func enqueue(_ write: PendingWrite) -> WriteOutcome? {
        condition.lock()
        defer { condition.unlock() }
        if stopRequested || finished { return .failed("the agent is stopping; the write was not sent") }
        if pendingWrites.count >= Self.maxPendingWrites {
            return .failed("\(Self.maxPendingWrites) writes are already waiting for this line; try again later")
        }
        pendingWrites.append(write)
        condition.broadcast()
        return nil
    }

    private func takeWrites() -> [PendingWrite] {
        condition.lock()
        defer { condition.unlock() }
        let writes = pendingWrites
        pendingWrites.removeAll()
        return writes
    }

    /// Sleeps until the monotonic time `until`, or until a stop is requested (or, with
    /// `wakeForWrites`, a write is queued). Returns false on stop.
    private func sleep(until: Int64, wakeForWrites: Bool = false) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !stopRequested {
            if wakeForWrites && !pendingWrites.isEmpty { return true }
            let remaining = until - monotonicMs()
            if remaining <= 0 { return true }
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(remaining) / 1000))
        }
        return false
    }

    private var shouldStop: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopRequested
    }

    /// The schedule and link state of one device in this loop.
    private struct Slot {
        let poller: DevicePoller
        let groups: [PollGroup]
        var nextDue: [Int64]
        /// While now < this, the device is not contacted (backoff after failures).
        var retryAt: Int64 = 0
        var failures = 0
        var lastFailure: Quality = .offline
    }

    private func run() {
        let start = monotonicMs()
        var slots = plans.map { plan in
            Slot(poller: DevicePoller(device: plan.device), groups: plan.groups,
                 nextDue: Array(repeating: start, count: plan.groups.count))
        }
        guard let transport = plans.first?.device.transport else { return }
        var client: ModbusClient?
        var linkRetryAt: Int64 = 0
        var linkFailures = 0
        var turn = 0

        while !shouldStop {
            guard let due = slots.flatMap(\.nextDue).min() else { return }
            guard sleep(until: due, wakeForWrites: true) else { return }
            // Writes go between polls, never inside one (one request at a time on a serial bus).
            performWrites(&slots, client: client)
            let now = monotonicMs()
            // Serial bus fairness: start the round with the next device each time.
            let order = (0..<slots.count).map { (turn + $0) % slots.count }
            turn += 1
            for index in order {
                if shouldStop { break }
                let dueGroups = slots[index].nextDue.indices.filter { slots[index].nextDue[$0] <= now }
                guard !dueGroups.isEmpty else { continue }
                let requests = dueGroups.flatMap { slots[index].groups[$0].requests }
                for g in dueGroups { slots[index].nextDue[g] = Self.advance(slots[index].nextDue[g], interval: Int64(slots[index].groups[g].intervalMs), now: now) }
                let timestamp = wallClockMs()
                let device = slots[index].poller.device

                // The link (TCP connection or serial port) comes first.
                if client == nil || client?.isConnected == false {
                    if now < linkRetryAt {
                        report(slots[index].poller.unavailable(requests, quality: .offline, timestamp: timestamp), quality: .offline, detail: nil)
                        continue
                    }
                    do throws(ModbusError) {
                        let c: ModbusClient
                        if let existing = client { c = existing } else { c = try ModbusClient.make(for: transport, timeoutMs: device.poll.timeoutMs) }
                        client = c
                        try c.connect()
                        linkFailures = 0
                    } catch {
                        linkFailures += 1
                        linkRetryAt = monotonicMs() + Self.backoff(failures: linkFailures, base: Int64(device.poll.intervalMs))
                        report(slots[index].poller.unavailable(requests, quality: .offline, timestamp: timestamp), quality: .offline, detail: error.description)
                        continue
                    }
                }
                guard let link = client else { continue }

                // A device that keeps timing out waits its backoff, so its bus neighbours keep their schedule.
                if now < slots[index].retryAt {
                    report(slots[index].poller.unavailable(requests, quality: slots[index].lastFailure, timestamp: timestamp),
                           quality: slots[index].lastFailure, detail: nil)
                    continue
                }
                link.setResponseTimeout(milliseconds: device.poll.timeoutMs)
                let outcome = slots[index].poller.poll(requests, with: link, timestamp: timestamp) { [self] ms in
                    _ = sleep(until: monotonicMs() + Int64(ms))
                }
                if let failure = outcome.failure, outcome.answered == 0 {
                    slots[index].failures += 1
                    slots[index].lastFailure = Quality(failure)
                    if case .connection = failure {
                        link.close()
                        linkFailures += 1
                        linkRetryAt = monotonicMs() + Self.backoff(failures: linkFailures, base: Int64(device.poll.intervalMs))
                    } else if slots[index].failures >= 2 {
                        slots[index].retryAt = monotonicMs() + Self.backoff(failures: slots[index].failures - 1, base: Int64(device.poll.intervalMs))
                    }
                } else {
                    slots[index].failures = 0
                }
                let quality = outcome.failure.map(Quality.init) ?? .good
                report(outcome.batch, quality: quality, detail: outcome.failure?.description)
                performWrites(&slots, client: client)
                if device.poll.delayMs > 0 && slots.count > 1 {
                    _ = sleep(until: monotonicMs() + Int64(device.poll.delayMs))
                }
            }
        }
        client?.close()
    }

    /// Runs the queued writes on the loop's link. Each write is answered: written, or why not. A
    /// written device is polled again at once, so the platform sees the new value.
    private func performWrites(_ slots: inout [Slot], client: ModbusClient?) {
        for write in takeWrites() {
            guard let index = slots.firstIndex(where: { $0.poller.device.name == write.device }) else {
                write.completion(.failed("device '\(write.device)' is not polled by this agent"))
                continue
            }
            let device = slots[index].poller.device
            guard let link = client, link.isConnected else {
                write.completion(.failed("no connection to the device (offline); the write was not sent"))
                continue
            }
            if monotonicMs() < slots[index].retryAt {
                write.completion(.failed("the device is not answering (\(slots[index].lastFailure.code)); the write was not sent"))
                continue
            }
            link.setResponseTimeout(milliseconds: device.poll.timeoutMs)
            do throws(ModbusError) {
                try link.setUnit(device.unit)
                switch write.operation {
                case .registers(let address, let words):
                    try link.writeRegisters(address: address, values: words)
                case .coil(let address, let value):
                    try link.writeCoil(address: address, value: value)
                case .registerBit(let address, let bit, let value):
                    let word = try link.readRegisters(.holdingRegisters, address: address, count: 1).first ?? 0
                    let mask = UInt16(1) << UInt16(bit & 15)
                    try link.writeRegisters(address: address, values: [value ? word | mask : word & ~mask])
                }
                // Read it back with the next poll, now.
                let now = monotonicMs()
                for g in slots[index].groups.indices where slots[index].groups[g].requests.contains(where: { $0.covers(write.operation) }) {
                    slots[index].nextDue[g] = min(slots[index].nextDue[g], now)
                }
                write.completion(.written)
            } catch {
                switch error {
                case .timeout:
                    link.flush()
                    write.completion(.failed("no answer within \(device.poll.timeoutMs) ms: the write may or may not have been applied; the next poll shows the value"))
                case .exception(let code):
                    write.completion(.failed("the device refused the write: exception \(code) (\(ModbusError.exceptionName(code)))"))
                default:
                    write.completion(.failed(error.description))
                }
            }
        }
    }

    private func report(_ batch: PollBatch, quality: Quality, detail: String?) {
        if health.record(device: batch.device, quality: quality, detail: detail, at: batch.timestamp) {
            onEvent(.deviceState(device: batch.device, quality: quality, detail: detail))
        }
        onBatch(batch)
    }

    /// The next due time after `previous`: one interval on, or realigned to now when polls fell behind
    /// (missed polls are skipped, not bunched).
    static func advance(_ previous: Int64, interval: Int64, now: Int64) -> Int64 {
        let next = previous + interval
        if next > now { return next }
        let missed = (now - previous) / interval
        return previous + (missed + 1) * interval
    }

    /// Exponential backoff from the poll interval (at least 1 s), capped at 30 s.
    static func backoff(failures: Int, base: Int64) -> Int64 {
        let floor = max(base, 1000)
        let shift = min(max(failures - 1, 0), 5)
        return min(floor << Int64(shift), max(maxBackoffMs, floor))
    }
}
