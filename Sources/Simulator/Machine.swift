// A simulated machine as the network sees it: its model behind a lock, its faults, and the
// decision, per request, of what goes back on the wire. Transports (TCP, RTU) only frame bytes;
// everything a fault changes is decided here, so both transports misbehave the same way.

import Synchronization

/// What a transport does with one request.
public struct Reply: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Send this PDU.
        case respond([UInt8])
        /// Send nothing (no response, offline, or a broadcast).
        case silent
        /// Close the TCP connection without answering (on a serial line: send nothing).
        case close
    }

    /// Damage the transport does to the frame after building it.
    public enum Mutation: Sendable, Equatable {
        case none
        /// TCP: the PDU becomes noise under an unknown function code; RTU: a byte flips, so the CRC fails.
        case garbled(noise: UInt64)
        /// Only the first half of the frame is sent.
        case truncated
    }

    public var action: Action
    /// The unit id the response carries (differs from the request's under the wrong_unit fault).
    public var unit: UInt8
    /// Seconds to wait before sending.
    public var delay: Double = 0
    public var mutation: Mutation = .none
}

/// Counters the control interface reports.
public struct MachineStatistics: Sendable, Equatable {
    public var requests = 0
    public var responses = 0
    public var exceptions = 0
    public var writes = 0
    /// Requests a fault changed, by fault key.
    public var faults: [String: Int] = [:]
}

public final class Machine: Sendable {
    public let definition: MachineDefinition
    private let seed: UInt64
    private let runtime: Mutex<Runtime>

    struct Runtime: Sendable {
        var model: MachineModel
        var faults: FaultSet
        /// Monotonic time the faults were set (offline schedules count from it).
        var faultsSetAt: Double
        var faultRandom: SeededGenerator
        var statistics = MachineStatistics()
    }

    public init(definition: MachineDefinition, seed: UInt64, now: Double = MonotonicClock.now()) {
        self.definition = definition
        self.seed = seed
        runtime = Mutex(Runtime(model: MachineModel(definition: definition, seed: seed), faults: definition.faults,
                                faultsSetAt: now, faultRandom: SeededGenerator(seed: seed, stream: "faults/" + definition.name)))
    }

    public var name: String { definition.name }

    // MARK: - Simulation

    public func advance(by dt: Double) {
        runtime.withLock { $0.model.advance(by: dt) }
    }

    /// Forces the state machine into a state by name; false if there is no such state.
    @discardableResult
    public func force(state name: String) -> Bool {
        guard let index = definition.stateMachine?.index(of: name) else { return false }
        runtime.withLock { $0.model.force(state: index) }
        return true
    }

    /// A copy of the model (values, registers, state) at this moment.
    public var model: MachineModel { runtime.withLock { $0.model } }

    public var statistics: MachineStatistics { runtime.withLock { $0.statistics } }

    // MARK: - Faults

    public var faults: FaultSet { runtime.withLock { $0.faults } }

    /// Replaces the faults; offline schedules start counting now.
    public func setFaults(_ faults: FaultSet, now: Double = MonotonicClock.now()) {
        runtime.withLock {
            $0.faults = faults
            $0.faultsSetAt = now
        }
    }

    /// Adds faults to the ones set (same keys are replaced).
    public func addFaults(_ faults: FaultSet, now: Double = MonotonicClock.now()) {
        runtime.withLock {
            $0.faults = $0.faults.merging(faults)
            if faults.offline != nil { $0.faultsSetAt = now }
        }
    }

    public func isOffline(now: Double = MonotonicClock.now()) -> Bool {
        runtime.withLock { runtime in
            guard let offline = runtime.faults.offline else { return false }
            return offline.isOffline(elapsed: now - runtime.faultsSetAt)
        }
    }

    // MARK: - Requests

    /// Decides the reply to one request PDU addressed to `unit`.
    public func handle(pdu: some Collection<UInt8>, unit: UInt8, now: Double = MonotonicClock.now()) -> Reply {
        runtime.withLock { runtime in
            runtime.statistics.requests += 1
            let faults = runtime.faults
            func count(_ key: String) { runtime.statistics.faults[key, default: 0] += 1 }
            func fires(_ probability: Double?) -> Bool {
                guard let probability else { return false }
                return runtime.faultRandom.chance(probability)
            }

            if let offline = faults.offline, offline.isOffline(elapsed: now - runtime.faultsSetAt) {
                count("offline")
                return Reply(action: .silent, unit: unit)
            }
            if fires(faults.noResponse) {
                count("no_response")
                return Reply(action: .silent, unit: unit)
            }
            if fires(faults.dropConnection) {
                count("drop_connection")
                return Reply(action: .close, unit: unit)
            }
            var delay = 0.0
            if let slow = faults.slow, runtime.faultRandom.chance(slow.probability) {
                count("slow")
                delay = max(0, slow.delay + (slow.jitter > 0 ? runtime.faultRandom.uniform(-slow.jitter, slow.jitter) : 0))
            }

            var response: [UInt8]
            if let exception = faults.exception, runtime.faultRandom.chance(exception.probability) {
                count("exception")
                response = ModbusPDU.exception(functionByte: pdu.first ?? 0, code: exception.code)
            } else {
                response = ModbusPDU.handle(pdu, model: &runtime.model)
                if let function = pdu.first, function == 5 || function == 6 || function == 15 || function == 16,
                   response.first == function {
                    runtime.statistics.writes += 1
                }
            }
            if (response.first ?? 0) & 0x80 != 0 { runtime.statistics.exceptions += 1 }

            if fires(faults.short) {
                count("short")
                response = Self.shortened(response)
            }
            var mutation = Reply.Mutation.none
            if fires(faults.garbled) {
                count("garbled")
                mutation = .garbled(noise: runtime.faultRandom.next())
            } else if fires(faults.truncated) {
                count("truncated")
                mutation = .truncated
            }
            var replyUnit = unit
            if let wrong = faults.wrongUnit, runtime.faultRandom.chance(wrong.probability) {
                count("wrong_unit")
                replyUnit = wrong.unit.flatMap { $0 == unit ? nil : $0 } ?? (unit == 247 || unit == 255 ? 1 : unit &+ 1)
            }
            runtime.statistics.responses += 1
            return Reply(action: .respond(response), unit: replyUnit, delay: delay, mutation: mutation)
        }
    }

    /// A broadcast (RTU unit 0): writes are applied, nothing is answered.
    public func handleBroadcast(pdu: some Collection<UInt8>) {
        runtime.withLock { runtime in
            guard case .success(let request) = ModbusPDU.parseRequest(pdu) else { return }
            if case .read = request.operation { return }
            _ = ModbusPDU.respond(to: request, model: &runtime.model)
        }
    }

    /// A well-framed read response carrying fewer values than asked: the byte count agrees with
    /// the data, so only a master that checks the count against its request notices. Other
    /// responses lose their last byte.
    static func shortened(_ response: [UInt8]) -> [UInt8] {
        guard let function = response.first, response.count >= 2 else { return response }
        if (1...4).contains(function), response.count > 2 {
            let byteCount = Int(response[1])
            let unitSize = function <= 2 ? 1 : 2
            let kept = max(0, (byteCount / unitSize) / 2) * unitSize
            return [function, UInt8(kept)] + response[2..<(2 + kept)]
        }
        return Array(response.dropLast())
    }

    /// Replaces a TCP response PDU with noise of the same length under function code 0x41-0x48
    /// (user-defined codes no read or write answers with, and not an exception).
    static func garbledPDU(_ pdu: [UInt8], noise: UInt64) -> [UInt8] {
        var generator = SeededGenerator(seed: noise)
        var out = pdu.map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        if !out.isEmpty { out[0] = 0x41 + UInt8(noise % 8) }
        return out
    }

    /// Flips one byte of an RTU frame's body so its CRC no longer matches.
    static func garbledRTU(_ frame: [UInt8], noise: UInt64) -> [UInt8] {
        guard frame.count > 3 else { return frame }
        var out = frame
        let index = 1 + Int(noise % UInt64(frame.count - 3))
        out[index] ^= UInt8(truncatingIfNeeded: noise >> 8) | 1
        return out
    }
}

/// Seconds on a clock that never jumps (CLOCK_MONOTONIC).
public enum MonotonicClock {
    public static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
