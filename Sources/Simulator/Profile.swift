// The validated model of a scenario file: which machines, where they listen, how each value
// evolves, which faults they have. Everything here is a plain value checked by ProfileLoader, so
// the simulation never meets a dangling name or an impossible layout at run time.

/// A whole simulator run: machines, serial buses and global settings.
public struct ScenarioDefinition: Sendable {
    /// The file it came from (for messages).
    public var source: String
    public var seed: UInt64
    /// Simulated seconds per wall-clock second; 0 holds time still until stepped.
    public var speed: Double
    /// Simulated seconds per simulation step; values change in steps of this size.
    public var tick: Double
    /// Control interface port on 127.0.0.1, if asked for.
    public var controlPort: Int?
    public var serialBuses: [SerialBusDefinition]
    public var machines: [MachineDefinition]

    public init(source: String, seed: UInt64 = 1, speed: Double = 1, tick: Double = 0.1, controlPort: Int? = nil,
                serialBuses: [SerialBusDefinition] = [], machines: [MachineDefinition] = []) {
        self.source = source
        self.seed = seed
        self.speed = speed
        self.tick = tick
        self.controlPort = controlPort
        self.serialBuses = serialBuses
        self.machines = machines
    }
}

/// A serial line shared by RTU machines: a new pseudo-terminal (optionally symlinked to a fixed
/// path) or an existing device.
public struct SerialBusDefinition: Sendable, Equatable {
    public enum Parity: String, Sendable { case none = "N", even = "E", odd = "O" }

    public var name: String
    /// A serial device or pty slave to open instead of creating a pty.
    public var device: String?
    /// A symlink to create pointing at the pty's slave, so configs can name a fixed path.
    public var link: String?
    public var baud: Int
    public var parity: Parity
    public var dataBits: Int
    public var stopBits: Int
    /// Emulate line timing: frames take bytes x 11 bits / baud, one frame on the bus at a time.
    public var timing: Bool

    public init(name: String, device: String? = nil, link: String? = nil, baud: Int = 9600, parity: Parity = .none,
                dataBits: Int = 8, stopBits: Int = 1, timing: Bool = false) {
        self.name = name
        self.device = device
        self.link = link
        self.baud = baud
        self.parity = parity
        self.dataBits = dataBits
        self.stopBits = stopBits
        self.timing = timing
    }

    /// "9600 8N1".
    public var lineSettings: String { "\(baud) \(dataBits)\(parity.rawValue)\(stopBits)" }
}

/// Where a machine answers.
public enum Endpoint: Sendable, Equatable {
    case tcp(host: String, port: Int, unit: UInt8)
    case rtu(bus: String, unit: UInt8)

    public var unit: UInt8 {
        switch self {
        case .tcp(_, _, let unit), .rtu(_, let unit): unit
        }
    }
}

/// One simulated machine.
public struct MachineDefinition: Sendable {
    public var name: String
    /// What kind of machine (the profile's `kind`, e.g. "injection moulding machine").
    public var kind: String
    public var description: String
    public var endpoint: Endpoint
    /// Size of each data area; reads past it get exception 2 (illegal data address).
    public var areaSizes: [DataArea: Int]
    /// Most TCP connections the machine accepts at once (real controllers allow a handful).
    public var maxConnections: Int?
    public var stateMachine: StateMachineDefinition?
    public var variables: [VariableDefinition]
    public var faults: FaultSet

    public init(name: String, kind: String = "", description: String = "", endpoint: Endpoint,
                areaSizes: [DataArea: Int] = [:], maxConnections: Int? = nil,
                stateMachine: StateMachineDefinition? = nil, variables: [VariableDefinition], faults: FaultSet = FaultSet()) {
        self.name = name
        self.kind = kind
        self.description = description
        self.endpoint = endpoint
        self.areaSizes = areaSizes
        self.maxConnections = maxConnections
        self.stateMachine = stateMachine
        self.variables = variables
        self.faults = faults
    }
}

/// Where a variable lives in the data areas and how it is encoded.
public struct Placement: Sendable, Equatable {
    public var area: DataArea
    public var address: Int
    public var type: ValueType
    public var order: ByteOrder
    public var scale: Double
    public var offset: Double

    public init(area: DataArea, address: Int, type: ValueType, order: ByteOrder = .abcd, scale: Double = 1, offset: Double = 0) {
        self.area = area
        self.address = address
        self.type = type
        self.order = order
        self.scale = scale
        self.offset = offset
    }

    /// One past the last register (or bit) it occupies.
    public var end: Int { address + type.width }
}

/// A named value of a machine: served at a placement, or internal (read by formulas only).
public struct VariableDefinition: Sendable {
    public var name: String
    public var placement: Placement?
    public var unit: String?
    public var description: String?
    public var generator: Generator
    /// Standard deviation of Gaussian noise added to the output (not to the generator's state).
    public var noise: Double
    /// Output limits (after noise).
    public var clamp: ClosedRange<Double>?
    /// Masters may write it; writes outside the limits get exception 3 (illegal data value).
    public var writable: ClosedRange<Double>?

    public init(name: String, placement: Placement?, unit: String? = nil, description: String? = nil,
                generator: Generator, noise: Double = 0, clamp: ClosedRange<Double>? = nil,
                writable: ClosedRange<Double>? = nil) {
        self.name = name
        self.placement = placement
        self.unit = unit
        self.description = description
        self.generator = generator
        self.noise = noise
        self.clamp = clamp
        self.writable = writable
    }
}

/// How a value evolves over simulated time. Formulas read other variables, the state names (1
/// in that state, else 0), `state` (the state's code), `t` (simulated seconds) and
/// `time_in_state` (seconds).
public indirect enum Generator: Sendable {
    case constant(Double)
    case text(String)
    /// Adds `step` per event; events come every `every` seconds, at `rate` per second, or with
    /// each increment of an earlier counter (`on`); each event counts with `probability`.
    case counter(Counter)
    case sine(min: Double, max: Double, period: Double, phase: Double)
    /// Sawtooth from `from` to `to` over `period`, repeating.
    case ramp(from: Double, to: Double, period: Double, phase: Double)
    /// Brownian motion reflected into [min, max]; `step` is the standard deviation per second^0.5.
    case randomWalk(start: Double, min: Double, max: Double, step: Double)
    /// Uniform noise in [min, max], drawn anew every tick.
    case random(min: Double, max: Double)
    /// First-order lag toward a target: the thermal behaviour of a heated zone. The time
    /// constant (seconds) may be a formula: a barrel cools slower than its heaters heat it.
    case track(target: Formula, timeConstant: Formula, start: Formula?)
    /// value += of x dt / per, while `condition` holds: energy from power, hours from a state.
    case integrate(of: Formula, per: Double, start: Double, condition: Formula?)
    case formula(Formula)
    /// On entering one of `states`, draws a value by weight; elsewhere `otherwise` (nil: keeps it).
    case pick(states: [Int], values: [Double], weights: [Double], otherwise: Double?, start: Double)
    /// A bit word: bit n is set while its formula is non-zero.
    case bits([(bit: Int, formula: Formula)])
    /// A different generator per state (index into the state machine); `fallback` for the others.
    case byState([Int: Generator], fallback: Generator?)

    public struct Counter: Sendable {
        public enum Source: Sendable {
            case every(Formula)
            case rate(Formula)
            /// Slot of an earlier counter variable.
            case on(Int)
        }

        public var source: Source
        public var start: Double
        public var step: Double
        public var probability: Double
        public var wrap: Double?
        public var condition: Formula?

        public init(source: Source, start: Double = 0, step: Double = 1, probability: Double = 1,
                    wrap: Double? = nil, condition: Formula? = nil) {
            self.source = source
            self.start = start
            self.step = step
            self.probability = probability
            self.wrap = wrap
            self.condition = condition
        }
    }

    /// The profile key naming this generator.
    public var keyName: String {
        switch self {
        case .constant: "value"
        case .text: "value"
        case .counter: "counter"
        case .sine: "sine"
        case .ramp: "ramp"
        case .randomWalk: "random_walk"
        case .random: "random"
        case .track: "track"
        case .integrate: "integrate"
        case .formula: "formula"
        case .pick: "pick"
        case .bits: "bits"
        case .byState: "by_state"
        }
    }
}

/// States a machine moves through, each with a dwell time and where it goes next.
public struct StateMachineDefinition: Sendable {
    public struct State: Sendable {
        public var name: String
        /// The number the `state` variable (and a state register) shows.
        public var code: Double
        /// How long the machine stays, drawn uniformly; nil: until a condition moves it.
        public var dwell: ClosedRange<Double>?
        /// Where it goes when the dwell ends (state index, weight).
        public var next: [(state: Int, weight: Double)]
        /// Checked every tick, first true wins, before the dwell ends.
        public var transitions: [(state: Int, when: Formula)]

        public init(name: String, code: Double, dwell: ClosedRange<Double>? = nil,
                    next: [(state: Int, weight: Double)] = [], transitions: [(state: Int, when: Formula)] = []) {
            self.name = name
            self.code = code
            self.dwell = dwell
            self.next = next
            self.transitions = transitions
        }
    }

    public var initial: Int
    public var states: [State]

    public init(initial: Int, states: [State]) {
        self.initial = initial
        self.states = states
    }

    public func index(of name: String) -> Int? { states.firstIndex { $0.name == name } }
}

/// Faults a machine injects. Each fires with its probability per request; all timing is wall
/// clock, so faults keep their meaning at any simulation speed.
public struct FaultSet: Sendable, Equatable {
    public struct Slow: Sendable, Equatable {
        public var delay: Double
        public var jitter: Double
        public var probability: Double
        public init(delay: Double, jitter: Double = 0, probability: Double = 1) {
            self.delay = delay
            self.jitter = jitter
            self.probability = probability
        }
    }

    public struct Exception: Sendable, Equatable {
        public var code: ExceptionCode
        public var probability: Double
        public init(code: ExceptionCode, probability: Double = 1) {
            self.code = code
            self.probability = probability
        }
    }

    public struct WrongUnit: Sendable, Equatable {
        public var unit: UInt8?
        public var probability: Double
        public init(unit: UInt8? = nil, probability: Double = 1) {
            self.unit = unit
            self.probability = probability
        }
    }

    /// Offline for `duration`, first `after` seconds from when the fault was set, then every
    /// `every` seconds if given.
    public struct Offline: Sendable, Equatable {
        public var after: Double
        public var duration: Double
        public var every: Double?
        public init(after: Double = 0, duration: Double, every: Double? = nil) {
            self.after = after
            self.duration = duration
            self.every = every
        }

        public func isOffline(elapsed: Double) -> Bool {
            guard elapsed >= after else { return false }
            var since = elapsed - after
            if let every, every > 0 { since = since.truncatingRemainder(dividingBy: every) }
            return since < duration
        }
    }

    public var slow: Slow?
    public var noResponse: Double?
    public var exception: Exception?
    public var dropConnection: Double?
    public var garbled: Double?
    public var short: Double?
    public var truncated: Double?
    public var wrongUnit: WrongUnit?
    public var offline: Offline?

    public init(slow: Slow? = nil, noResponse: Double? = nil, exception: Exception? = nil, dropConnection: Double? = nil,
                garbled: Double? = nil, short: Double? = nil, truncated: Double? = nil, wrongUnit: WrongUnit? = nil,
                offline: Offline? = nil) {
        self.slow = slow
        self.noResponse = noResponse
        self.exception = exception
        self.dropConnection = dropConnection
        self.garbled = garbled
        self.short = short
        self.truncated = truncated
        self.wrongUnit = wrongUnit
        self.offline = offline
    }

    public var isEmpty: Bool { self == FaultSet() }

    /// The keys of the faults that are set, in the order the docs list them.
    public var activeNames: [String] {
        var names: [String] = []
        if slow != nil { names.append("slow") }
        if noResponse != nil { names.append("no_response") }
        if exception != nil { names.append("exception") }
        if dropConnection != nil { names.append("drop_connection") }
        if garbled != nil { names.append("garbled") }
        if short != nil { names.append("short") }
        if truncated != nil { names.append("truncated") }
        if wrongUnit != nil { names.append("wrong_unit") }
        if offline != nil { names.append("offline") }
        return names
    }

    public static let keys = ["slow", "no_response", "exception", "drop_connection", "garbled", "short", "truncated",
                              "wrong_unit", "offline"]

    /// `other`'s faults replace these where set.
    public func merging(_ other: FaultSet) -> FaultSet {
        var merged = self
        if let slow = other.slow { merged.slow = slow }
        if let value = other.noResponse { merged.noResponse = value }
        if let value = other.exception { merged.exception = value }
        if let value = other.dropConnection { merged.dropConnection = value }
        if let value = other.garbled { merged.garbled = value }
        if let value = other.short { merged.short = value }
        if let value = other.truncated { merged.truncated = value }
        if let value = other.wrongUnit { merged.wrongUnit = value }
        if let value = other.offline { merged.offline = value }
        return merged
    }
}
