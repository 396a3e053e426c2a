/// One Modbus read: a contiguous range of one area, covering one or more signals.
public struct ReadRequest: Sendable, Hashable {
    public var area: Area
    /// 0-based PDU address of the first register or bit.
    public var address: Int
    public var count: Int
    /// Indices into the device's `signals` that this request carries.
    public var signalIndices: [Int]

    public init(area: Area, address: Int, count: Int, signalIndices: [Int]) {
        self.area = area
        self.address = address
        self.count = count
        self.signalIndices = signalIndices
    }

    public var end: Int { address + count }
}

/// The requests read together every `intervalMs`.
public struct PollGroup: Sendable, Hashable {
    public var intervalMs: Int
    public var requests: [ReadRequest]
}

/// A device's whole plan: its signals and the groups of requests that read them.
public struct PollPlan: Sendable, Hashable {
    public var device: Device
    /// Sorted by interval, shortest first.
    public var groups: [PollGroup]

    public var requestsPerCycle: Int { groups.reduce(0) { $0 + $1.requests.count } }
}

/// Why a device cannot be planned.
public enum PlanError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The signal alone is wider than one request may be.
    case signalTooWide(signal: String, width: Int, limit: Int, area: Area)

    public var description: String {
        switch self {
        case .signalTooWide(let signal, let width, let limit, let area):
            "signal '\(signal)' needs \(width) \(area.isBitArea ? "bits" : "registers") but one request to this device may read at most \(limit); expected a narrower signal or a higher max_\(area.isBitArea ? "bits" : "registers")_per_request (the protocol allows \(area.protocolLimit))"
        }
    }
}

/// Merges the signals of one device, area and interval into the fewest read requests.
///
/// Within one (interval, area) group the signals are sorted by address and merged greedily
/// from the left: a request grows to take the next signal while the whole span stays within the
/// limit and the hole before the signal is at most `maxGap`. For ranges on a line with a maximum
/// span this greedy cover is minimal; holes over `maxGap` must split in any plan.
public enum Planner {
    public static func plan(_ device: Device) -> Result<PollPlan, PlanError> {
        var keys: [GroupKey: [Int]] = [:]
        for (index, signal) in device.signals.enumerated() {
            let limit = device.poll.limit(for: signal.area)
            if signal.type.width > limit {
                return .failure(.signalTooWide(signal: signal.name, width: signal.type.width, limit: limit, area: signal.area))
            }
            keys[GroupKey(intervalMs: signal.intervalMs, area: signal.area), default: []].append(index)
        }
        var byInterval: [Int: [ReadRequest]] = [:]
        for key in keys.keys.sorted() {
            let indices = keys[key] ?? []
            byInterval[key.intervalMs, default: []] += merge(indices, of: device.signals, area: key.area,
                                                              limit: device.poll.limit(for: key.area),
                                                              maxGap: device.poll.maxGap,
                                                              single: device.poll.singleReads)
        }
        let groups = byInterval.keys.sorted().map { PollGroup(intervalMs: $0, requests: byInterval[$0] ?? []) }
        return .success(PollPlan(device: device, groups: groups))
    }

    static func merge(_ indices: [Int], of signals: [Signal], area: Area, limit: Int, maxGap: Int, single: Bool) -> [ReadRequest] {
        let sorted = indices.sorted { (signals[$0].address, signals[$0].end, $0) < (signals[$1].address, signals[$1].end, $1) }
        var requests: [ReadRequest] = []
        var current: ReadRequest?
        for index in sorted {
            let signal = signals[index]
            if !single, var open = current {
                let newEnd = max(open.end, signal.end)
                let gap = signal.address - open.end
                if newEnd - open.address <= limit && gap <= maxGap {
                    open.count = newEnd - open.address
                    open.signalIndices.append(index)
                    current = open
                    continue
                }
            }
            if let open = current { requests.append(open) }
            current = ReadRequest(area: area, address: signal.address, count: signal.type.width, signalIndices: [index])
        }
        if let open = current { requests.append(open) }
        return requests
    }

    struct GroupKey: Hashable, Comparable {
        var intervalMs: Int
        var area: Area
        static func < (lhs: GroupKey, rhs: GroupKey) -> Bool {
            (lhs.intervalMs, lhs.area.modiconPrefix) < (rhs.intervalMs, rhs.area.modiconPrefix)
        }
    }
}
