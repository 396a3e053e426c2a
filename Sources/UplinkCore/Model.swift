/// The four Modbus data areas.
public enum Area: String, Sendable, Hashable, CaseIterable, Comparable {
    case coil = "coil"
    case discreteInput = "discrete_input"
    case holdingRegister = "holding_register"
    case inputRegister = "input_register"

    /// Coils and discrete inputs are read as bits, the other two as 16-bit registers.
    public var isBitArea: Bool { self == .coil || self == .discreteInput }

    /// Most units one read request can carry for this area (Modbus application protocol v1.1b3).
    public var protocolLimit: Int { isBitArea ? 2000 : 125 }

    /// The leading digit of the 1-based Modicon notation (0xxxxx coils, 1xxxxx discrete inputs,
    /// 3xxxxx input registers, 4xxxxx holding registers).
    public var modiconPrefix: Int {
        switch self {
        case .coil: 0
        case .discreteInput: 1
        case .inputRegister: 3
        case .holdingRegister: 4
        }
    }

    /// Names accepted in configs and on the command line, short forms included.
    public static func named(_ name: String) -> Area? {
        switch name.lowercased() {
        case "coil", "coils": .coil
        case "discrete", "discrete_input", "discrete_inputs": .discreteInput
        case "holding", "holding_register", "holding_registers": .holdingRegister
        case "input", "input_register", "input_registers": .inputRegister
        default: nil
        }
    }

    public static func < (lhs: Area, rhs: Area) -> Bool { lhs.modiconPrefix < rhs.modiconPrefix }
}

/// How a signal's bits are laid out and what value they mean.
public enum DataType: Sendable, Hashable {
    /// One coil or discrete input.
    case bool
    /// One bit (0 = least significant) of a holding or input register.
    case bit(Int)
    case int16, uint16, int32, uint32, int64, uint64, float32, float64
    /// ASCII text packed two characters per register over this many registers.
    case string(registers: Int)

    /// Registers (or bits, for `.bool`) the value occupies.
    public var width: Int {
        switch self {
        case .bool, .bit, .int16, .uint16: 1
        case .int32, .uint32, .float32: 2
        case .int64, .uint64, .float64: 4
        case .string(let registers): registers
        }
    }

    /// The name used in configs, e.g. `float32`.
    public var name: String {
        switch self {
        case .bool: "bool"
        case .bit: "bit"
        case .int16: "int16"
        case .uint16: "uint16"
        case .int32: "int32"
        case .uint32: "uint32"
        case .int64: "int64"
        case .uint64: "uint64"
        case .float32: "float32"
        case .float64: "float64"
        case .string: "string"
        }
    }

    public static let names = ["bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]

    /// Types whose layout `bit` and `registers` do not complete; nil for `bit` and `string`.
    public static func fixed(_ name: String) -> DataType? {
        switch name {
        case "bool": .bool
        case "int16": .int16
        case "uint16": .uint16
        case "int32": .int32
        case "uint32": .uint32
        case "int64": .int64
        case "uint64": .uint64
        case "float32": .float32
        case "float64": .float64
        default: nil
        }
    }

    /// Whether the type can live in the area: bools in the bit areas, everything else in registers.
    public func fits(_ area: Area) -> Bool {
        if case .bool = self { return area.isBitArea }
        return !area.isBitArea
    }

    /// Whether the byte order setting changes how this type is read.
    public var isMultiByte: Bool {
        switch self {
        case .bool, .bit: false
        default: true
        }
    }
}

/// Byte and word order of multi-register values, named after a 32-bit value's bytes A (most
/// significant) to D as they arrive on the wire. 16-bit types use only the byte half (AB or BA);
/// 64-bit types extend the same rule (CDAB reverses all four words).
public enum ByteOrder: String, Sendable, Hashable, CaseIterable {
    case abcd = "ABCD"
    case badc = "BADC"
    case cdab = "CDAB"
    case dcba = "DCBA"

    /// The most significant word comes first.
    public var highWordFirst: Bool { self == .abcd || self == .badc }
    /// The bytes inside each register are swapped.
    public var bytesSwapped: Bool { self == .badc || self == .dcba }
}

/// One value to read from a device, as validated from the config.
public struct Signal: Sendable, Hashable {
    public var name: String
    public var area: Area
    /// 0-based PDU address.
    public var address: Int
    public var type: DataType
    public var order: ByteOrder
    public var scale: Double
    public var offset: Double
    public var unit: String?
    /// Poll interval in milliseconds; the device's when not set per signal.
    public var intervalMs: Int
    /// Whether (and within what bounds) the platform may write it; nil: read-only.
    public var writable: WriteAccess?
    /// Report by exception (deadband, heartbeat); `.everyPoll` by default.
    public var report: ReportPolicy
    /// A device attribute rather than telemetry (ThingsBoard `v1/gateway/attributes`), e.g. a serial number.
    public var attribute: Bool

    public init(name: String, area: Area, address: Int, type: DataType, order: ByteOrder = .abcd,
                scale: Double = 1, offset: Double = 0, unit: String? = nil, intervalMs: Int = 1000,
                writable: WriteAccess? = nil, report: ReportPolicy = .everyPoll, attribute: Bool = false) {
        self.name = name
        self.area = area
        self.address = address
        self.type = type
        self.order = order
        self.scale = scale
        self.offset = offset
        self.unit = unit
        self.intervalMs = intervalMs
        self.writable = writable
        self.report = report
        self.attribute = attribute
    }

    /// One past the last register (or bit) the signal occupies.
    public var end: Int { address + type.width }
}

/// Serial line settings for Modbus RTU.
public struct SerialSettings: Sendable, Hashable {
    public enum Parity: String, Sendable, Hashable, CaseIterable { case none = "N", even = "E", odd = "O" }
    public var port: String
    public var baud: Int
    public var parity: Parity
    public var dataBits: Int
    public var stopBits: Int

    public init(port: String, baud: Int = 9600, parity: Parity = .none, dataBits: Int = 8, stopBits: Int = 1) {
        self.port = port
        self.baud = baud
        self.parity = parity
        self.dataBits = dataBits
        self.stopBits = stopBits
    }
}

/// Where a device is reached.
public enum Transport: Sendable, Hashable {
    case tcp(host: String, port: Int)
    /// RTU on a named serial bus; devices naming the same bus share it one request at a time.
    case rtu(bus: String, settings: SerialSettings)
}

/// How a device is polled and what limits its requests obey.
public struct PollSettings: Sendable, Hashable {
    public var intervalMs: Int
    public var timeoutMs: Int
    public var retries: Int
    /// Pause between two requests to the device (some serial devices need one).
    public var delayMs: Int
    public var maxRegistersPerRequest: Int
    public var maxBitsPerRequest: Int
    /// Unused registers (or bits) the planner may read to merge two requests.
    public var maxGap: Int
    /// Read every signal with its own request (for devices that reject block reads).
    public var singleReads: Bool

    public init(intervalMs: Int = 1000, timeoutMs: Int = 1000, retries: Int = 1, delayMs: Int = 0,
                maxRegistersPerRequest: Int = 125, maxBitsPerRequest: Int = 2000, maxGap: Int = 10,
                singleReads: Bool = false) {
        self.intervalMs = intervalMs
        self.timeoutMs = timeoutMs
        self.retries = retries
        self.delayMs = delayMs
        self.maxRegistersPerRequest = maxRegistersPerRequest
        self.maxBitsPerRequest = maxBitsPerRequest
        self.maxGap = maxGap
        self.singleReads = singleReads
    }

    /// The per-request limit for an area: the device's own, never above the protocol's.
    public func limit(for area: Area) -> Int {
        min(area.isBitArea ? maxBitsPerRequest : maxRegistersPerRequest, area.protocolLimit)
    }
}

/// One machine to poll.
public struct Device: Sendable, Hashable {
    public var name: String
    public var transport: Transport
    public var unit: Int
    public var poll: PollSettings
    public var signals: [Signal]
    /// The platform's device type (ThingsBoard device profile); nil: derived from the name (see `platformType`).
    public var type: String?

    public init(name: String, transport: Transport, unit: Int = 1, poll: PollSettings = PollSettings(), signals: [Signal],
                type: String? = nil) {
        self.name = name
        self.transport = transport
        self.unit = unit
        self.poll = poll
        self.signals = signals
        self.type = type
    }
}

/// Identity of this agent, used in topics and payloads.
public struct AgentIdentity: Sendable, Hashable {
    public var name: String
    public var site: String
    public init(name: String = "uplink", site: String = "default") {
        self.name = name
        self.site = site
    }
}

/// A whole validated configuration.
public struct UplinkConfiguration: Sendable, Hashable {
    public var agent: AgentIdentity
    public var devices: [Device]
    /// Where to publish; nil when the config has no `mqtt` section (then `uplink run` needs `--broker`).
    public var mqtt: MQTTSettings?
    public var buffer: BufferSettings
    public init(agent: AgentIdentity = AgentIdentity(), devices: [Device], mqtt: MQTTSettings? = nil, buffer: BufferSettings = BufferSettings()) {
        self.agent = agent
        self.devices = devices
        self.mqtt = mqtt
        self.buffer = buffer
    }
}

/// How to reach the platform broker and what to publish there.
public struct MQTTSettings: Sendable, Hashable {
    public enum ProtocolVersion: String, Sendable, Hashable, CaseIterable { case v311 = "3.1.1", v5 = "5" }
    public enum PasswordSource: Sendable, Hashable {
        /// Read from this file (trailing newline dropped) at start and on reload.
        case file(String)
        /// Read from this environment variable.
        case environment(String)
    }
    public struct TLS: Sendable, Hashable {
        public var caFile: String?
        public var caPath: String?
        public var certFile: String?
        public var keyFile: String?
        /// Skips server certificate verification (logged as a warning at every start).
        public var insecure: Bool
        public init(caFile: String? = nil, caPath: String? = nil, certFile: String? = nil, keyFile: String? = nil, insecure: Bool = false) {
            self.caFile = caFile
            self.caPath = caPath
            self.certFile = certFile
            self.keyFile = keyFile
            self.insecure = insecure
        }
    }

    public var host: String
    public var port: Int
    public var tls: TLS?
    public var clientID: String?
    public var protocolVersion: ProtocolVersion
    public var qos: Int
    public var username: String?
    public var password: PasswordSource?
    public var keepaliveSeconds: Int
    public var topicPrefix: String
    /// Template with {prefix}, {site}, {agent}, {device}.
    public var dataTopic: String
    public var statusTopic: String
    /// Messages published and not yet acknowledged, at most.
    public var maxInflight: Int
    /// Larger batches are split over several messages.
    public var maxMessageBytes: Int
    public var reconnectMinMs: Int
    public var reconnectMaxMs: Int
    /// Payload profile name: `json`, `thingsboard` or `sparkplug` (see `PayloadKind`).
    public var payload: String
    /// Where the username is read from instead of `username` (a ThingsBoard access token is the username).
    public var usernameSource: PasswordSource?
    /// The Sparkplug edge node identity; set when `payload` is `sparkplug`.
    public var sparkplug: SparkplugSettings?

    public init(host: String = "127.0.0.1", port: Int = 1883, tls: TLS? = nil, clientID: String? = nil,
                protocolVersion: ProtocolVersion = .v311, qos: Int = 1, username: String? = nil, password: PasswordSource? = nil,
                keepaliveSeconds: Int = 30, topicPrefix: String = "uplink", dataTopic: String = "{prefix}/{site}/{device}/data",
                statusTopic: String = "{prefix}/{site}/{agent}/status", maxInflight: Int = 64, maxMessageBytes: Int = 256 * 1024,
                reconnectMinMs: Int = 1000, reconnectMaxMs: Int = 60_000, payload: String = "json") {
        self.host = host
        self.port = port
        self.tls = tls
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.qos = qos
        self.username = username
        self.password = password
        self.keepaliveSeconds = keepaliveSeconds
        self.topicPrefix = topicPrefix
        self.dataTopic = dataTopic
        self.statusTopic = statusTopic
        self.maxInflight = maxInflight
        self.maxMessageBytes = maxMessageBytes
        self.reconnectMinMs = reconnectMinMs
        self.reconnectMaxMs = reconnectMaxMs
        self.payload = payload
    }
}

/// Bounds and policy of the disk buffer.
public struct BufferSettings: Sendable, Hashable {
    public enum WhenFull: String, Sendable, Hashable, CaseIterable {
        case dropOldest = "drop_oldest"
        case dropNewest = "drop_newest"
    }
    public var maxBytes: Int64
    /// Records older than this are dropped (counted) even if there is room.
    public var maxAgeMs: Int64
    public var whenFull: WhenFull
    /// Records waiting longer than this before they are sent are marked late.
    public var lateAfterMs: Int64

    public init(maxBytes: Int64 = 256 * 1024 * 1024, maxAgeMs: Int64 = 7 * 86_400_000, whenFull: WhenFull = .dropOldest, lateAfterMs: Int64 = 10_000) {
        self.maxBytes = maxBytes
        self.maxAgeMs = maxAgeMs
        self.whenFull = whenFull
        self.lateAfterMs = lateAfterMs
    }
}
