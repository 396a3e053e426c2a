import Foundation
import Modbus
import Synchronization
import UplinkCore

/// What the collector reports besides batches: state changes, for logs and health.
public enum CollectorEvent: Sendable, Hashable {
    /// A device's state changed; `detail` says why (the Modbus error text) when it went bad.
    case deviceState(device: String, quality: Quality, detail: String?)
}

/// A write waiting for its poll loop.
struct PendingWrite: Sendable {
    var device: String
    var operation: WriteOperation
    var completion: @Sendable (WriteOutcome) -> Void
}

extension ReadRequest {
    /// Whether this read covers what `operation` writes (to read it back).
    func covers(_ operation: WriteOperation) -> Bool {
        switch operation {
        case .registers(let address, let words):
            area == .holdingRegister && address < end && address + words.count > self.address
        case .registerBit(let address, _, _):
            area == .holdingRegister && (self.address..<end).contains(address)
        case .coil(let address, _):
            area == .coil && (self.address..<end).contains(address)
        }
    }
}

/// A device's health as seen by its poll loop.
public struct DeviceHealth: Sendable, Hashable {
    public var device: String
    /// `good`, or the quality of the last failed poll; nil before the first poll.
    public var state: Quality?
    public var detail: String?
    public var lastPoll: Int64?
    public var lastGood: Int64?
    public var polls: Int
    public var failedPolls: Int
}

/// Runs the poll loops of a set of planned devices until stopped.
public final class Collector: Sendable {
    public typealias BatchHandler = @Sendable (PollBatch) -> Void
    public typealias EventHandler = @Sendable (CollectorEvent) -> Void

    private let loops: [PollLoop]
    private let loopOfDevice: [String: Int]
    private let healthTable: HealthTable

    /// Groups TCP devices into one loop each and RTU devices into one loop per bus.
    public init(plans: [PollPlan], onBatch: @escaping BatchHandler, onEvent: @escaping EventHandler = { _ in }) {
        let health = HealthTable(devices: plans.map(\.device.name))
        var loops: [PollLoop] = []
        var buses: [String: [PollPlan]] = [:]
        var busOrder: [String] = []
        for plan in plans {
            switch plan.device.transport {
            case .tcp:
                loops.append(PollLoop(name: plan.device.name, plans: [plan], onBatch: onBatch, onEvent: onEvent, health: health))
            case .rtu(let bus, _):
                if buses[bus] == nil { busOrder.append(bus) }
                buses[bus, default: []].append(plan)
            }
        }
        for bus in busOrder {
            loops.append(PollLoop(name: "bus \(bus)", plans: buses[bus] ?? [], onBatch: onBatch, onEvent: onEvent, health: health))
        }
        var loopOfDevice: [String: Int] = [:]
        for (index, loop) in loops.enumerated() {
            for name in loop.deviceNames { loopOfDevice[name] = index }
        }
        self.loops = loops
        self.loopOfDevice = loopOfDevice
        self.healthTable = health
    }

    /// Writes to a device between two of its loop's polls (on a serial bus: between two polls of
    /// any device on it). `completion` runs on the loop's thread once the device answered, or at
    /// once when the write cannot be queued; keep it short.
    public func write(device: String, operation: WriteOperation, completion: @escaping @Sendable (WriteOutcome) -> Void) {
        guard let index = loopOfDevice[device] else {
            completion(.failed("device '\(device)' is not polled by this agent"))
            return
        }
        if let refused = loops[index].enqueue(PendingWrite(device: device, operation: operation, completion: completion)) {
            completion(refused)
        }
    }

    /// Starts every loop on its own thread. The first poll of each device happens at once.
    public func start() {
        for loop in loops { loop.start() }
    }

    /// Asks every loop to stop after its current poll and waits until they have.
    public func stop() {
        for loop in loops { loop.requestStop() }
        for loop in loops { loop.waitUntilStopped() }
    }

    /// A snapshot of every device's health.
    public func health() -> [DeviceHealth] { healthTable.snapshot() }
}

/// Per-device health, written by the loops and read by status reporting.
final class HealthTable: Sendable {
    private let table: Mutex<[String: DeviceHealth]>
    private let order: [String]

    init(devices: [String]) {
        order = devices
        table = Mutex(Dictionary(uniqueKeysWithValues: devices.map {
            ($0, DeviceHealth(device: $0, state: nil, detail: nil, lastPoll: nil, lastGood: nil, polls: 0, failedPolls: 0))
        }))
    }

    /// Records a poll; returns true when the state changed.
    func record(device: String, quality: Quality, detail: String?, at timestamp: Int64) -> Bool {
        table.withLock { table in
            guard var entry = table[device] else { return false }
            let changed = entry.state != quality
            entry.state = quality
            entry.detail = detail
            entry.lastPoll = timestamp
            entry.polls += 1
            if quality.isGood { entry.lastGood = timestamp } else { entry.failedPolls += 1 }
            table[device] = entry
            return changed
        }
    }

    func snapshot() -> [DeviceHealth] {
        table.withLock { table in order.compactMap { table[$0] } }
    }
}

/// Wall-clock milliseconds, for record timestamps.
func wallClockMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Monotonic milliseconds, for schedules (immune to clock steps).
func monotonicMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
