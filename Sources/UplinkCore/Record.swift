/// A decoded reading.
public enum Value: Sendable, Hashable {
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
}

/// Whether a reading is good, and if not, why.
public enum Quality: Sendable, Hashable {
    case good
    /// The device did not answer within the response timeout (after the configured retries).
    case timeout
    /// The device answered with a Modbus exception (1 illegal function, 2 illegal data address,
    /// 3 illegal data value, 4 device failure, 6 busy, ...).
    case exception(UInt8)
    /// The answer was malformed: bad CRC, wrong length, wrong unit id or function, garbage.
    case badResponse
    /// No connection to the device (refused, reset, unreachable, or waiting to reconnect).
    case offline
    /// The registers arrived but do not form a value of the configured type.
    case decodeError

    public var isGood: Bool { self == .good }

    /// Stable text used in payloads, logs and `uplink read --json`.
    public var code: String {
        switch self {
        case .good: "good"
        case .timeout: "timeout"
        case .exception(let code): "exception_\(code)"
        case .badResponse: "bad_response"
        case .offline: "offline"
        case .decodeError: "decode_error"
        }
    }

    /// Parses `code` back (used by the buffer when it reads records from disk).
    public init?(code: String) {
        switch code {
        case "good": self = .good
        case "timeout": self = .timeout
        case "bad_response": self = .badResponse
        case "offline": self = .offline
        case "decode_error": self = .decodeError
        default:
            guard code.hasPrefix("exception_"), let value = UInt8(code.dropFirst("exception_".count)) else { return nil }
            self = .exception(value)
        }
    }
}

/// One reading of one signal, the unit that flows from the poller to the platform.
public struct Record: Sendable, Hashable {
    public var device: String
    public var signal: String
    /// UTC milliseconds since 1970, taken when the poll started.
    public var timestamp: Int64
    /// The decoded, scaled value; nil when the quality is not good.
    public var value: Value?
    public var unit: String?
    public var quality: Quality
    /// Unique and increasing per agent; 0 until assigned (the disk buffer assigns it on commit).
    public var seq: UInt64

    public init(device: String, signal: String, timestamp: Int64, value: Value?, unit: String? = nil,
                quality: Quality = .good, seq: UInt64 = 0) {
        self.device = device
        self.signal = signal
        self.timestamp = timestamp
        self.value = value
        self.unit = unit
        self.quality = quality
        self.seq = seq
    }
}

/// The records of one device from one poll: the unit of batching downstream.
public struct PollBatch: Sendable, Hashable {
    public var device: String
    public var timestamp: Int64
    public var records: [Record]
    public init(device: String, timestamp: Int64, records: [Record]) {
        self.device = device
        self.timestamp = timestamp
        self.records = records
    }
}
