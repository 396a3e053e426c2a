import Testing
@testable import UplinkCore

/// A planning case: signals as (area, address, type), device limits, and the expected requests
/// as (area, first address, count).
struct PlanCase: CustomTestStringConvertible, Sendable {
    var name: String
    var signals: [(Area, Int, DataType)]
    var poll = PollSettings()
    var expected: [(Area, Int, Int)]
    var testDescription: String { name }
}

let planCases: [PlanCase] = [
    PlanCase(name: "adjacent registers merge", signals: [(.holdingRegister, 0, .uint16), (.holdingRegister, 1, .uint32), (.holdingRegister, 3, .float32)],
             expected: [(.holdingRegister, 0, 5)]),
    PlanCase(name: "gap within max_gap is read", signals: [(.holdingRegister, 0, .uint16), (.holdingRegister, 11, .uint16)],
             poll: PollSettings(maxGap: 10), expected: [(.holdingRegister, 0, 12)]),
    PlanCase(name: "gap over max_gap splits", signals: [(.holdingRegister, 0, .uint16), (.holdingRegister, 12, .uint16)],
             poll: PollSettings(maxGap: 10), expected: [(.holdingRegister, 0, 1), (.holdingRegister, 12, 1)]),
    PlanCase(name: "max_gap 0 merges only touching", signals: [(.inputRegister, 5, .int16), (.inputRegister, 6, .int16), (.inputRegister, 8, .int16)],
             poll: PollSettings(maxGap: 0), expected: [(.inputRegister, 5, 2), (.inputRegister, 8, 1)]),
    PlanCase(name: "125-register protocol limit", signals: (0..<130).map { (.holdingRegister, $0, .uint16) },
             expected: [(.holdingRegister, 0, 125), (.holdingRegister, 125, 5)]),
    PlanCase(name: "device limit lower than protocol", signals: (0..<10).map { (.holdingRegister, $0 * 2, .uint32) },
             poll: PollSettings(maxRegistersPerRequest: 8), expected: [(.holdingRegister, 0, 8), (.holdingRegister, 8, 8), (.holdingRegister, 16, 4)]),
    PlanCase(name: "a value never straddles two requests", signals: [(.holdingRegister, 0, .uint16), (.holdingRegister, 123, .float32)],
             poll: PollSettings(maxGap: 200), expected: [(.holdingRegister, 0, 125)]),
    PlanCase(name: "a value that would straddle the limit starts a new request", signals: [(.holdingRegister, 0, .uint16), (.holdingRegister, 124, .float32)],
             poll: PollSettings(maxGap: 200), expected: [(.holdingRegister, 0, 1), (.holdingRegister, 124, 2)]),
    PlanCase(name: "areas never merge", signals: [(.holdingRegister, 0, .uint16), (.inputRegister, 1, .uint16), (.coil, 0, .bool), (.discreteInput, 0, .bool)],
             expected: [(.coil, 0, 1), (.discreteInput, 0, 1), (.inputRegister, 1, 1), (.holdingRegister, 0, 1)]),
    PlanCase(name: "2000-bit limit for coils", signals: (0..<2001).map { (.coil, $0, .bool) },
             expected: [(.coil, 0, 2000), (.coil, 2000, 1)]),
    PlanCase(name: "bits of one register share it", signals: [(.holdingRegister, 4, .bit(0)), (.holdingRegister, 4, .bit(7)), (.holdingRegister, 4, .bit(15))],
             expected: [(.holdingRegister, 4, 1)]),
    PlanCase(name: "overlapping signals", signals: [(.holdingRegister, 0, .uint32), (.holdingRegister, 1, .uint16), (.holdingRegister, 0, .float64)],
             expected: [(.holdingRegister, 0, 4)]),
    PlanCase(name: "unsorted input", signals: [(.holdingRegister, 40, .uint16), (.holdingRegister, 0, .uint16), (.holdingRegister, 20, .uint16)],
             poll: PollSettings(maxGap: 5), expected: [(.holdingRegister, 0, 1), (.holdingRegister, 20, 1), (.holdingRegister, 40, 1)]),
    PlanCase(name: "single reads", signals: [(.holdingRegister, 0, .uint16), (.holdingRegister, 1, .uint32), (.holdingRegister, 1, .bit(2))],
             poll: PollSettings(singleReads: true), expected: [(.holdingRegister, 0, 1), (.holdingRegister, 1, 1), (.holdingRegister, 1, 2)]),
    PlanCase(name: "string spans its registers", signals: [(.holdingRegister, 100, .string(registers: 10)), (.holdingRegister, 110, .uint16)],
             expected: [(.holdingRegister, 100, 11)]),
    PlanCase(name: "last address", signals: [(.holdingRegister, 65532, .uint64)],
             expected: [(.holdingRegister, 65532, 4)]),
]

@Suite("Request planner")
struct PlannerTests {
    func device(_ c: PlanCase) -> Device {
        Device(name: "d", transport: .tcp(host: "h", port: 502), poll: c.poll,
               signals: c.signals.enumerated().map { Signal(name: "s\($0.offset)", area: $0.element.0, address: $0.element.1, type: $0.element.2) })
    }

    @Test(arguments: planCases)
    func plan(_ c: PlanCase) throws {
        let plan = try Planner.plan(device(c)).get()
        let got = plan.groups.flatMap(\.requests).map { "\($0.area.rawValue)@\($0.address)x\($0.count)" }
        let want = c.expected.map { "\($0.0.rawValue)@\($0.1)x\($0.2)" }
        #expect(got == want)
    }

    @Test(arguments: planCases)
    func everySignalIsCoveredExactlyOnceAndFits(_ c: PlanCase) throws {
        let d = device(c)
        let plan = try Planner.plan(d).get()
        var covered: [Int] = []
        for request in plan.groups.flatMap(\.requests) {
            #expect(request.count <= d.poll.limit(for: request.area))
            for index in request.signalIndices {
                let s = d.signals[index]
                #expect(s.area == request.area)
                #expect(s.address >= request.address && s.end <= request.end)
                covered.append(index)
            }
        }
        #expect(covered.sorted() == Array(d.signals.indices))
    }

    @Test func intervalsAreSeparateGroups() throws {
        var fast = Signal(name: "fast", area: .holdingRegister, address: 0, type: .uint16)
        fast.intervalMs = 100
        let slow = Signal(name: "slow", area: .holdingRegister, address: 1, type: .uint16, intervalMs: 5000)
        let plan = try Planner.plan(Device(name: "d", transport: .tcp(host: "h", port: 1), signals: [slow, fast])).get()
        #expect(plan.groups.map(\.intervalMs) == [100, 5000])
        #expect(plan.requestsPerCycle == 2)
    }

    @Test func signalWiderThanTheDeviceLimitIsRefused() {
        let d = Device(name: "d", transport: .tcp(host: "h", port: 1), poll: PollSettings(maxRegistersPerRequest: 2),
                       signals: [Signal(name: "big", area: .holdingRegister, address: 0, type: .float64)])
        #expect(throws: PlanError.signalTooWide(signal: "big", width: 4, limit: 2, area: .holdingRegister)) { try Planner.plan(d).get() }
    }

    /// Brute force over small random maps: the greedy plan is never longer than the best split found
    /// by exhaustive search over contiguous partitions (which contain an optimal plan).
    @Test func greedyIsMinimalOnRandomMaps() throws {
        var rng = SplitMix(seed: 42)
        for _ in 0..<300 {
            let count = Int(rng.next() % 7) + 1
            let limit = Int(rng.next() % 12) + 4
            let gap = Int(rng.next() % 4)
            let signals = (0..<count).map { i in
                Signal(name: "s\(i)", area: .holdingRegister, address: Int(rng.next() % 30), type: [.uint16, .uint32, .float64][Int(rng.next() % 3)])
            }
            let d = Device(name: "d", transport: .tcp(host: "h", port: 1), poll: PollSettings(maxRegistersPerRequest: limit, maxGap: gap), signals: signals)
            let plan = try Planner.plan(d).get()
            let sorted = signals.sorted { ($0.address, $0.end) < ($1.address, $1.end) }
            #expect(plan.requestsPerCycle == Self.optimal(sorted, limit: limit, gap: gap), "\(signals.map { ($0.address, $0.type.width) }) limit \(limit) gap \(gap)")
        }
    }

    /// Fewest contiguous groups where each group's span fits `limit` and no internal hole exceeds `gap`.
    static func optimal(_ s: [Signal], limit: Int, gap: Int) -> Int {
        var best = [Int](repeating: Int.max, count: s.count + 1)
        best[0] = 0
        for end in 1...s.count {
            for start in 0..<end where best[start] != Int.max {
                let group = s[start..<end]
                let lo = group.map(\.address).min() ?? 0
                let hi = group.map(\.end).max() ?? 0
                var reach = lo, ok = hi - lo <= limit
                for sig in group {
                    if sig.address - reach > gap { ok = false }
                    reach = max(reach, sig.end)
                }
                if ok { best[end] = min(best[end], best[start] + 1) }
            }
        }
        return best[s.count]
    }
}

/// A tiny deterministic generator for property tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
