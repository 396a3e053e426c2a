/// Report by exception, between the poll and the disk buffer: a reading that did not change (within
/// its signal's deadband) since it was last reported is dropped before it costs disk or bandwidth,
/// unless its heartbeat is due. Quality changes always pass. Signals with the default
/// `ReportPolicy.everyPoll` pass every time, so configs without deadband or heartbeat behave as before.
///
/// A value type: the caller owns one per agent (under a lock when several poll threads share it).
public struct ExceptionFilter: Sendable {
    /// What was last reported for one signal.
    public struct Reported: Sendable, Hashable {
        public var value: Value?
        public var quality: Quality
        public var timestamp: Int64
    }

    struct Key: Hashable {
        var device: String
        var signal: String
    }

    private var policies: [Key: ReportPolicy] = [:]
    private var last: [Key: Reported] = [:]

    /// A filter for `devices`; only signals with a deadband or heartbeat are tracked.
    public init(devices: [Device]) {
        for device in devices {
            for signal in device.signals where !signal.report.reportsEveryPoll {
                policies[Key(device: device.name, signal: signal.name)] = signal.report
            }
        }
    }

    /// Whether any signal is filtered at all (when not, `filter` returns its input).
    public var isActive: Bool { !policies.isEmpty }

    /// The records of `batch` that are reported; remembers them as the last reported values.
    public mutating func filter(_ batch: PollBatch) -> PollBatch {
        guard isActive else { return batch }
        var out = batch
        out.records.removeAll(keepingCapacity: true)
        for record in batch.records {
            let key = Key(device: record.device, signal: record.signal)
            guard let policy = policies[key] else {
                out.records.append(record)
                continue
            }
            if Self.shouldReport(record, last: last[key], policy: policy) {
                last[key] = Reported(value: record.value, quality: record.quality, timestamp: record.timestamp)
                out.records.append(record)
            }
        }
        return out
    }

    /// The decision for one reading: report it when nothing was reported yet, when the quality
    /// changed, when the heartbeat is due (or the clock went back), or when a good value moved by
    /// more than the deadband (any change without a deadband). A bad quality that stays the same is
    /// not repeated until the heartbeat.
    public static func shouldReport(_ record: Record, last: Reported?, policy: ReportPolicy) -> Bool {
        guard let last else { return true }
        if record.quality != last.quality { return true }
        if let heartbeat = policy.heartbeatMs {
            let elapsed = record.timestamp - last.timestamp
            if elapsed >= Int64(heartbeat) || elapsed < 0 { return true }
        }
        guard record.quality.isGood else { return false }
        return changed(from: last.value, to: record.value, deadband: policy.deadband)
    }

    /// Whether `new` differs from `old` by more than `deadband` (numbers), or at all (anything else,
    /// or no deadband). NaN to NaN is no change.
    public static func changed(from old: Value?, to new: Value?, deadband: ReportPolicy.Deadband?) -> Bool {
        if old == new { return false }
        guard let a = old?.asDouble, let b = new?.asDouble else { return true }
        if a.isNaN && b.isNaN { return false }
        // Without a deadband any difference counts, compared exactly (64-bit counters stay exact).
        guard a.isFinite && b.isFinite, let deadband else { return true }
        let delta = abs(b - a)
        switch deadband {
        case .absolute(let band):
            return band <= 0 || delta > band
        case .percent(let percent):
            return a == 0 || percent <= 0 || delta > abs(a) * percent / 100
        }
    }
}
