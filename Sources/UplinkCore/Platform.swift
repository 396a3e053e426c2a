/// What platform profiles, report by exception and commands need from the model: which signals may
/// be written and within what bounds, how often unchanged values are resent, and the Sparkplug
/// identity. All plain values, validated by UplinkConfig.

/// A signal the platform may write (config `writable: true` or `writable: { min, max }`).
/// Bounds are in engineering units (after scale and offset), inclusive; nil means only the
/// register type's own range limits the value.
public struct WriteAccess: Sendable, Hashable {
    public var min: Double?
    public var max: Double?

    public init(min: Double? = nil, max: Double? = nil) {
        self.min = min
        self.max = max
    }

    /// `writable: true`: any value the register type can hold.
    public static let unbounded = WriteAccess()
}

/// Report by exception for one signal: a reading is stored and sent only when it changed by more
/// than the deadband, when its quality changed, or when `heartbeatMs` passed since it was last sent.
/// The default (no deadband, no heartbeat) reports every poll.
public struct ReportPolicy: Sendable, Hashable {
    public enum Deadband: Sendable, Hashable {
        /// Report when |new - last reported| > this, in engineering units (0: any change).
        case absolute(Double)
        /// Report when |new - last reported| > this percentage of |last reported| (any change
        /// when the last reported value was 0).
        case percent(Double)
    }

    public var deadband: Deadband?
    /// Resend an unchanged value at least this often (milliseconds); nil: never.
    public var heartbeatMs: Int?

    public init(deadband: Deadband? = nil, heartbeatMs: Int? = nil) {
        self.deadband = deadband
        self.heartbeatMs = heartbeatMs
    }

    /// Every poll is reported: no deadband and no heartbeat were configured.
    public static let everyPoll = ReportPolicy()

    public var reportsEveryPoll: Bool { deadband == nil && heartbeatMs == nil }
}

/// The Sparkplug B identity of this edge node (`mqtt.sparkplug`).
public struct SparkplugSettings: Sendable, Hashable {
    /// `group_id` in `spBv1.0/{group_id}/...`; defaults to the agent's site.
    public var groupID: String
    /// `edge_node_id`; defaults to the agent's name.
    public var edgeNodeID: String

    public init(groupID: String, edgeNodeID: String) {
        self.groupID = groupID
        self.edgeNodeID = edgeNodeID
    }
}

/// The payload profiles `mqtt.payload` can name.
public enum PayloadKind: String, Sendable, Hashable, CaseIterable {
    /// Uplink's own JSON, one message per device and poll (docs/payloads.md).
    case json
    /// The ThingsBoard gateway MQTT API (`v1/gateway/...`).
    case thingsboard
    /// Sparkplug B 3.0 edge node (`spBv1.0/...`, protobuf payloads).
    case sparkplug
}

extension Device {
    /// The device type platforms see: `type` when configured, else the name without its trailing
    /// number (`imm-01` -> `imm`, `press_2` -> `press`), else `modbus`.
    public var platformType: String {
        if let type { return type }
        var base = Substring(name)
        while let last = base.last, last.isASCII, last.isNumber { base = base.dropLast() }
        guard base.count < name.count, let separator = base.last, "-_.".contains(separator) else { return "modbus" }
        base = base.dropLast()
        return base.isEmpty ? "modbus" : String(base)
    }
}

/// How a write to a device ended.
public enum WriteOutcome: Sendable, Hashable {
    case written
    /// Not written, or not known to be: what happened, to log and to answer the platform.
    case failed(String)
}
