// One machine's simulated physics, advanced in fixed ticks of simulated time. A value type that
// lives inside its Machine's mutex: nothing here knows about threads, sockets or wall clocks, so
// the same seed and the same steps give the same registers, bit for bit.

/// A generator's memory between ticks (by_state keeps one per branch).
struct GeneratorState: Sendable {
    var value: Double = 0
    var accumulator: Double = 0
    var initialized = false
    var children: [GeneratorState] = []
}

public struct MachineModel: Sendable, ModbusDataModel {
    public let definition: MachineDefinition
    /// Variables by slot, then t, time_in_state, state, then one 0/1 per state.
    public private(set) var values: [Double]
    /// Resolved texts of string variables (placeholders filled in).
    public private(set) var texts: [String?]
    public private(set) var time: Double = 0
    public private(set) var stateIndex: Int
    private var stateEnteredAt: Double = 0
    private var dwellEnd: Double?
    private var enteredThisTick = false
    /// A state forced between ticks counts as entered in the next tick (so picks draw).
    private var forcedEntry = false
    private var started = false
    private var generatorStates: [GeneratorState]
    private var counterEvents: [Int]
    private var lastEncoded: [Double?]
    private var rng: SeededGenerator
    private(set) var bank: RegisterBank
    private var writableHolding: [Bool]
    private var writableCoils: [Bool]
    private let writableIndices: [Int]
    // Per-variable parts of the definition, unpacked once: each tick reads them for every
    // variable, and copying whole VariableDefinitions there costs more than the physics.
    private let generators: [Generator]
    private let placements: [Placement?]
    private let noise: [Double]
    private let clamps: [ClosedRange<Double>?]
    private let isWritable: [Bool]
    private let stateMachine: StateMachineDefinition?

    private var variableCount: Int { generators.count }
    private var stateSlotBase: Int { variableCount + Symbols.builtins.count }

    public init(definition: MachineDefinition, seed: UInt64) {
        self.definition = definition
        let stateCount = definition.stateMachine?.states.count ?? 0
        values = Array(repeating: 0, count: definition.variables.count + Symbols.builtins.count + stateCount)
        rng = SeededGenerator(seed: seed, stream: "values/" + definition.name)
        stateIndex = definition.stateMachine?.initial ?? 0
        generatorStates = Array(repeating: GeneratorState(), count: definition.variables.count)
        counterEvents = Array(repeating: 0, count: definition.variables.count)
        lastEncoded = Array(repeating: nil, count: definition.variables.count)
        // The loader guarantees the sizes cover every register; definitions built in code might
        // not, and a register past its area must not trap.
        var sizes = definition.areaSizes
        for placement in definition.variables.compactMap(\.placement) {
            sizes[placement.area] = max(sizes[placement.area] ?? 0, placement.end)
        }
        bank = RegisterBank(coils: sizes[.coil] ?? 0, discreteInputs: sizes[.discreteInput] ?? 0,
                            holding: sizes[.holding] ?? 0, input: sizes[.input] ?? 0)
        // A register (or coil) is writable when everything stored in it is writable.
        var holdingMask = Array(repeating: false, count: bank.holding.count)
        var coilMask = Array(repeating: false, count: bank.coils.count)
        var readOnlyHolding = Set<Int>()
        var writable: [Int] = []
        for (index, variable) in definition.variables.enumerated() {
            guard let placement = variable.placement else { continue }
            for address in placement.address..<placement.end {
                switch placement.area {
                case .holding:
                    if variable.writable != nil { holdingMask[address] = true } else { readOnlyHolding.insert(address) }
                case .coil:
                    coilMask[address] = variable.writable != nil
                default: break
                }
            }
            if variable.writable != nil { writable.append(index) }
        }
        for address in readOnlyHolding { holdingMask[address] = false }
        writableHolding = holdingMask
        writableCoils = coilMask
        writableIndices = writable
        generators = definition.variables.map(\.generator)
        placements = definition.variables.map(\.placement)
        noise = definition.variables.map(\.noise)
        clamps = definition.variables.map(\.clamp)
        isWritable = definition.variables.map { $0.writable != nil }
        stateMachine = definition.stateMachine

        var serialSource = SeededGenerator(seed: seed, stream: "serial/" + definition.name)
        let serial = String(serialSource.next() % 900_000 + 100_000)
        texts = definition.variables.map { variable in
            guard case .text(let text) = variable.generator else { return nil }
            return text.replacingAll("{machine}", with: definition.name)
                .replacingAll("{unit}", with: String(definition.endpoint.unit))
                .replacingAll("{serial}", with: serial)
        }
        advance(by: 0)
    }

    // MARK: - Time

    /// Advances simulated time by `dt` seconds (one tick) and re-encodes changed registers.
    public mutating func advance(by dt: Double) {
        time += dt
        enteredThisTick = forcedEntry
        forcedEntry = false
        if let machine = stateMachine {
            if !started {
                enter(machine.initial, machine)
            } else {
                stepStateMachine(machine)
            }
        }
        started = true
        refreshBuiltins()
        for index in 0..<variableCount {
            counterEvents[index] = 0
            if isWritable[index], generatorStates[index].initialized { continue }
            // Moved out and back, not copied, so by_state's branch array isn't duplicated each tick.
            var generatorState = generatorStates[index]
            generatorStates[index] = GeneratorState()
            var output = step(generators[index], &generatorState, dt: dt, slot: index)
            generatorStates[index] = generatorState
            if noise[index] > 0 { output += noise[index] * rng.gaussian() }
            if let clamp = clamps[index] { output = min(max(output, clamp.lowerBound), clamp.upperBound) }
            values[index] = output
        }
        encodeChanged()
    }

    /// Moves to a state now, as if its dwell had ended (the control interface's override).
    public mutating func force(state index: Int) {
        guard let machine = definition.stateMachine, machine.states.indices.contains(index) else { return }
        enter(index, machine)
        forcedEntry = true
        refreshBuiltins()
    }

    public var stateName: String? { definition.stateMachine?.states[stateIndex].name }

    private mutating func enter(_ index: Int, _ machine: StateMachineDefinition) {
        stateIndex = index
        stateEnteredAt = time
        enteredThisTick = true
        if let dwell = machine.states[index].dwell {
            dwellEnd = time + rng.uniform(dwell.lowerBound, dwell.upperBound)
        } else {
            dwellEnd = nil
        }
    }

    private mutating func stepStateMachine(_ machine: StateMachineDefinition) {
        let current = machine.states[stateIndex]
        for transition in current.transitions where transition.when.evaluate(values) != 0 {
            enter(transition.state, machine)
            return
        }
        if let end = dwellEnd, time >= end, !current.next.isEmpty {
            let choice = rng.weightedIndex(current.next.map(\.weight))
            enter(current.next[choice].state, machine)
        }
    }

    private mutating func refreshBuiltins() {
        values[variableCount] = time
        values[variableCount + 1] = time - stateEnteredAt
        if let machine = stateMachine {
            values[variableCount + 2] = machine.states[stateIndex].code
            for index in machine.states.indices {
                values[stateSlotBase + index] = index == stateIndex ? 1 : 0
            }
        }
    }

    // MARK: - Generators

    private mutating func step(_ generator: Generator, _ state: inout GeneratorState, dt: Double, slot: Int) -> Double {
        let first = !state.initialized
        state.initialized = true
        switch generator {
        case .constant(let value):
            return value

        case .text:
            return 0

        case .counter(let counter):
            if first { state.value = counter.start }
            let counting = counter.condition.map { $0.evaluate(values) != 0 } ?? true
            var events = 0
            switch counter.source {
            case .every(let period):
                let seconds = period.evaluate(values)
                if counting, seconds > 0 { state.accumulator += dt / seconds }
                events = Int(state.accumulator.rounded(.down))
                state.accumulator -= Double(events)
            case .rate(let rate):
                let perSecond = rate.evaluate(values)
                if counting, perSecond > 0 { state.accumulator += dt * perSecond }
                events = Int(state.accumulator.rounded(.down))
                state.accumulator -= Double(events)
            case .on(let source):
                events = counting ? counterEvents[source] : 0
            }
            let counted = draws(events, counter.probability)
            counterEvents[slot] = counted
            state.value += Double(counted) * counter.step
            if let wrap = counter.wrap, state.value >= wrap {
                state.value = state.value.truncatingRemainder(dividingBy: wrap)
            }
            return state.value

        case .sine(let low, let high, let period, let phase):
            let angle = 2 * Double.pi * (time + phase) / period
            return low + (high - low) * (1 + sin(angle)) / 2

        case .ramp(let from, let to, let period, let phase):
            let fraction = ((time + phase) / period).truncatingRemainder(dividingBy: 1)
            return from + (to - from) * fraction

        case .randomWalk(let start, let low, let high, let stepSize):
            if first { state.value = start; return start }
            var next = state.value + stepSize * dt.squareRoot() * rng.gaussian()
            // Reflect at the bounds so the walk keeps moving instead of sticking to a limit.
            if next > high { next = high - (next - high) }
            if next < low { next = low + (low - next) }
            state.value = min(max(next, low), high)
            return state.value

        case .random(let low, let high):
            return rng.uniform(low, high)

        case .track(let target, let timeConstant, let start):
            let goal = target.evaluate(values)
            if first {
                state.value = start?.evaluate(values) ?? goal
                return state.value
            }
            let tau = timeConstant.evaluate(values)
            state.value += tau > 0 ? (goal - state.value) * (1 - exp(-dt / tau)) : goal - state.value
            return state.value

        case .integrate(let of, let per, let start, let condition):
            if first { state.value = start }
            if condition.map({ $0.evaluate(values) != 0 }) ?? true {
                state.value += of.evaluate(values) * dt / per
            }
            return state.value

        case .formula(let formula):
            return formula.evaluate(values)

        case .pick(let states, let choices, let weights, let otherwise, let start):
            if first { state.value = start }
            if states.contains(stateIndex) {
                if enteredThisTick { state.value = choices[rng.weightedIndex(weights)] }
            } else if let otherwise {
                state.value = otherwise
            }
            return state.value

        case .bits(let bits):
            var word: Double = 0
            for (bit, formula) in bits where formula.evaluate(values) != 0 {
                word += pow(2, Double(bit))
            }
            return word

        case .byState(let branches, let fallback):
            let stateCount = stateMachine?.states.count ?? 0
            if state.children.count != stateCount + 1 {
                state.children = Array(repeating: GeneratorState(), count: stateCount + 1)
            }
            if let branch = branches[stateIndex] {
                return step(branch, &state.children[stateIndex], dt: dt, slot: slot)
            }
            if let fallback {
                return step(fallback, &state.children[stateCount], dt: dt, slot: slot)
            }
            return 0
        }
    }

    /// How many of `events` Bernoulli trials succeed (normal approximation for large counts).
    private mutating func draws(_ events: Int, _ probability: Double) -> Int {
        guard events > 0, probability < 1 else { return probability <= 0 ? 0 : events }
        if events <= 1000 {
            var count = 0
            for _ in 0..<events where rng.chance(probability) { count += 1 }
            return count
        }
        let mean = Double(events) * probability
        let spread = (mean * (1 - probability)).squareRoot()
        return Int(min(max((mean + spread * rng.gaussian()).rounded(), 0), Double(events)))
    }

    // MARK: - Registers

    private mutating func encodeChanged() {
        for index in 0..<variableCount {
            guard let placement = placements[index] else { continue }
            let value = values[index]
            if let last = lastEncoded[index], last == value || (last.isNaN && value.isNaN) { continue }
            lastEncoded[index] = value
            encode(index, placement, value)
        }
    }

    private mutating func encode(_ index: Int, _ placement: Placement, _ value: Double) {
        let address = placement.address
        switch placement.type {
        case .bool:
            let on = value != 0 && !value.isNaN
            if placement.area == .coil { bank.coils[address] = on } else { bank.discreteInputs[address] = on }
            return
        case .bit(let bit):
            let mask = UInt16(1) << UInt16(bit)
            let raw = placement.scale == 0 ? 0 : (value - placement.offset) / placement.scale
            let on = raw != 0 && !raw.isNaN
            if placement.area == .holding {
                bank.holding[address] = on ? bank.holding[address] | mask : bank.holding[address] & ~mask
            } else {
                bank.input[address] = on ? bank.input[address] | mask : bank.input[address] & ~mask
            }
            return
        case .string(let registers):
            store(placement, ValueCodec.encode(text: texts[index] ?? "", registers: registers, order: placement.order))
        default:
            store(placement, ValueCodec.encode(value, as: placement.type, order: placement.order,
                                               scale: placement.scale, offset: placement.offset))
        }
    }

    private mutating func store(_ placement: Placement, _ registers: [UInt16]) {
        let range = placement.address..<placement.address + registers.count
        if placement.area == .holding { bank.holding.replaceSubrange(range, with: registers) }
        else { bank.input.replaceSubrange(range, with: registers) }
    }

    // MARK: - ModbusDataModel

    public func readBits(_ area: DataArea, address: Int, count: Int) throws(ExceptionCode) -> [Bool] {
        try bank.readBits(area, address: address, count: count)
    }

    public func readRegisters(_ area: DataArea, address: Int, count: Int) throws(ExceptionCode) -> [UInt16] {
        try bank.readRegisters(area, address: address, count: count)
    }

    public mutating func writeCoils(address: Int, values written: [Bool]) throws(ExceptionCode) {
        guard bank.contains(.coil, address: address, count: written.count),
              writableCoils[address..<address + written.count].allSatisfy({ $0 }) else { throw .illegalDataAddress }
        let before = bank
        try bank.writeCoils(address: address, values: written)
        try acceptWrite(.coil, address..<address + written.count, restoring: before)
    }

    public mutating func writeHoldingRegisters(address: Int, values written: [UInt16]) throws(ExceptionCode) {
        guard bank.contains(.holding, address: address, count: written.count),
              writableHolding[address..<address + written.count].allSatisfy({ $0 }) else { throw .illegalDataAddress }
        let before = bank
        try bank.writeHoldingRegisters(address: address, values: written)
        try acceptWrite(.holding, address..<address + written.count, restoring: before)
    }

    /// Decodes the writable variables a write touched; out-of-limit values undo the whole write.
    private mutating func acceptWrite(_ area: DataArea, _ range: Range<Int>, restoring before: RegisterBank) throws(ExceptionCode) {
        var decoded: [(Int, Double)] = []
        for index in writableIndices {
            let variable = definition.variables[index]
            guard let placement = variable.placement, placement.area == area,
                  placement.address < range.upperBound, placement.end > range.lowerBound else { continue }
            let value: Double
            if area == .coil {
                value = bank.coils[placement.address] ? 1 : 0
            } else {
                let registers = Array(bank.holding[placement.address..<placement.end])
                guard let number = ValueCodec.decode(registers, as: placement.type, order: placement.order,
                                                     scale: placement.scale, offset: placement.offset) else { continue }
                value = number
            }
            guard let limits = variable.writable, limits.contains(value) else {
                bank = before
                throw .illegalDataValue
            }
            decoded.append((index, value))
        }
        for (index, value) in decoded {
            values[index] = value
            lastEncoded[index] = value
        }
    }

    // MARK: - Inspection

    /// A variable's current value by name (text variables give nil; see `text(of:)`).
    public func value(of name: String) -> Double? {
        definition.variables.firstIndex { $0.name == name }.map { values[$0] }
    }

    public func text(of name: String) -> String? {
        definition.variables.firstIndex { $0.name == name }.flatMap { texts[$0] }
    }

    /// The served registers, for comparing two runs.
    public var registers: RegisterBank { bank }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
