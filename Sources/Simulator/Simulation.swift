// Simulated time for all machines: real time times a speed factor on a dedicated thread, or held
// still and stepped by tests and the control interface. Time always moves in whole ticks, so a
// run's values depend on the seed and the simulated time only, never on scheduling jitter.

import Foundation
import Synchronization

public final class Simulation: Sendable {
    public let machines: [Machine]
    public let seed: UInt64
    /// Simulated seconds per step.
    public let tick: Double
    public let speed: Double

    private struct Clock: Sendable {
        /// Whole ticks run; time is ticks x tick, so it never accumulates rounding.
        var ticks = 0
        var time: Double = 0
        /// Requested time not yet covered by a whole tick.
        var pending: Double = 0
    }

    /// Held while stepping, so the real-time thread and a control request never interleave ticks.
    private let clock = Mutex(Clock())
    private let stopRequested = Atomic<Bool>(false)
    private let running = Atomic<Bool>(false)
    private let lagWarning: Mutex<(@Sendable (String) -> Void)?>

    public init(scenario: ScenarioDefinition, now: Double = MonotonicClock.now()) {
        seed = scenario.seed
        tick = scenario.tick
        speed = scenario.speed
        machines = scenario.machines.map { Machine(definition: $0, seed: scenario.seed, now: now) }
        lagWarning = Mutex(nil)
    }

    public func machine(named name: String) -> Machine? { machines.first { $0.name == name } }

    /// Simulated seconds since the start.
    public var time: Double { clock.withLock { $0.time } }

    /// Advances every machine by `seconds` of simulated time, in whole ticks (a remainder is
    /// carried to the next call). Returns the new simulated time.
    @discardableResult
    public func step(by seconds: Double) -> Double {
        clock.withLock { clock in
            clock.pending += max(0, seconds)
            // The small epsilon keeps 0.1 + 0.2 style sums from losing a tick.
            let ticks = Int((clock.pending / tick + 1e-9).rounded(.down))
            guard ticks > 0 else { return clock.time }
            clock.pending = max(0, clock.pending - Double(ticks) * tick)
            for _ in 0..<ticks {
                for machine in machines { machine.advance(by: tick) }
                clock.ticks += 1
                clock.time = Double(clock.ticks) * tick
            }
            return clock.time
        }
    }

    /// Runs time at `speed` on a dedicated thread until `stop()`. Speed 0 starts nothing.
    public func start(onLag: (@Sendable (String) -> Void)? = nil) {
        guard speed > 0, !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        lagWarning.withLock { $0 = onLag }
        let thread = Thread { [self] in runRealTime() }
        thread.name = "uplink-sim.clock"
        thread.start()
    }

    public func stop() {
        stopRequested.store(true, ordering: .releasing)
    }

    private func runRealTime() {
        var wallStart = MonotonicClock.now()
        var simStart = time
        var warned = false
        while !stopRequested.load(ordering: .acquiring) {
            let target = simStart + speed * (MonotonicClock.now() - wallStart)
            let behind = target - time
            if behind > max(5, 50 * tick) {
                // The machines can't keep up with this speed: say so once, then drop the backlog
                // rather than spin forever trying to catch up.
                if !warned, let warn = lagWarning.withLock({ $0 }) {
                    warn("simulation can't keep up with speed \(speed)x; simulated time runs slower")
                    warned = true
                }
                wallStart = MonotonicClock.now()
                simStart = time
            } else if behind >= tick {
                step(by: (behind / tick).rounded(.down) * tick)
            }
            let sleepSeconds = min(tick / speed, 0.05)
            usleep(useconds_t(max(1000, sleepSeconds * 1_000_000)))
        }
    }
}
