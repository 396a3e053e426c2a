/// The inverse of `Decoder`: turns a value the platform asked for into what is written to the
/// device, checking that the signal may be written, the configured bounds, and that the register
/// type can hold the value after scale and offset are undone. Pure; never traps on any input.

/// One Modbus write.
public enum WriteOperation: Sendable, Hashable {
    /// Holding registers from `address` (function code 16).
    case registers(address: Int, words: [UInt16])
    /// One coil (function code 5).
    case coil(address: Int, value: Bool)
    /// One bit of a holding register: read, change the bit, write back (function codes 3 and 16).
    case registerBit(address: Int, bit: Int, value: Bool)

    /// `registers 1: [0x0258]`, `coil 0: true`, `bit 2 of register 17: true`, for logs.
    public var summary: String {
        switch self {
        case .registers(let address, let words):
            "holding \(address): [\(words.map { "0x" + String($0, radix: 16) }.joined(separator: ", "))]"
        case .coil(let address, let value): "coil \(address): \(value)"
        case .registerBit(let address, let bit, let value): "bit \(bit) of holding \(address): \(value)"
        }
    }
}

/// Why a value cannot be written. Each description says what would be accepted.
public enum EncodeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The config does not allow writing this signal.
    case notWritable(signal: String)
    /// Discrete inputs and input registers cannot be written by any Modbus function.
    case readOnlyArea(signal: String, area: Area)
    /// A number was expected and something else came (or the reverse).
    case wrongKind(signal: String, expected: String, got: String)
    /// Outside the configured `writable: { min, max }`.
    case outOfBounds(signal: String, value: String, min: Double?, max: Double?)
    /// The register type cannot hold the value once scale and offset are undone.
    case notRepresentable(signal: String, value: String, type: String, range: String)
    /// A whole number was expected (an integer register without scale).
    case notWhole(signal: String, value: String, type: String)
    /// NaN or an infinity for a register that cannot hold one.
    case notFinite(signal: String)
    /// More characters than the registers hold, or characters that are not printable ASCII.
    case badText(signal: String, reason: String)

    public var description: String {
        switch self {
        case .notWritable(let s):
            "signal '\(s)' is not writable; the config must allow it with writable: true or writable: { min, max }"
        case .readOnlyArea(let s, let area):
            "signal '\(s)' is \(area == .inputRegister ? "an input register" : "a discrete input"), which Modbus cannot write"
        case .wrongKind(let s, let expected, let got):
            "signal '\(s)' takes \(expected), got \(got)"
        case .outOfBounds(let s, let value, let min, let max):
            "\(value) is outside the allowed range of '\(s)' (\(Self.bound(min)) to \(Self.bound(max)))"
        case .notRepresentable(let s, let value, let type, let range):
            "\(value) does not fit signal '\(s)' (a \(type) register holds \(range))"
        case .notWhole(let s, let value, let type):
            "\(value) is not a whole number; signal '\(s)' is a \(type) without scale"
        case .notFinite(let s):
            "signal '\(s)' cannot take NaN or an infinity"
        case .badText(let s, let reason):
            "text for signal '\(s)' \(reason)"
        }
    }

    static func bound(_ value: Double?) -> String {
        guard let value else { return "unbounded" }
        var out = ""
        JSONText.appendDouble(value, to: &out)
        return out
    }
}

public enum Encoder {
    /// The write that makes `signal` read `value` (an engineering value, as the platform sees it).
    public static func write(_ value: Value, to signal: Signal) -> Result<WriteOperation, EncodeError> {
        guard let access = signal.writable else { return .failure(.notWritable(signal: signal.name)) }
        switch signal.area {
        case .inputRegister, .discreteInput: return .failure(.readOnlyArea(signal: signal.name, area: signal.area))
        case .coil, .holdingRegister: break
        }
        switch signal.type {
        case .bool:
            return boolean(value, signal).map { .coil(address: signal.address, value: $0) }
        case .bit(let bit):
            return boolean(value, signal).map { .registerBit(address: signal.address, bit: bit, value: $0) }
        case .string(let registers):
            guard case .string(let text) = value else {
                return .failure(.wrongKind(signal: signal.name, expected: "text", got: kind(value)))
            }
            return stringWords(text, registers: registers, bytesSwapped: signal.order.bytesSwapped, signal: signal.name)
                .map { .registers(address: signal.address, words: $0) }
        default:
            guard let number = numeric(value) else {
                return .failure(.wrongKind(signal: signal.name, expected: "a number", got: kind(value)))
            }
            if case .double(let d) = number, !d.isFinite, !(signal.type == .float32 || signal.type == .float64) || access.min != nil || access.max != nil {
                return .failure(.notFinite(signal: signal.name))
            }
            if let d = number.asDouble, d.isFinite {
                if let min = access.min, d < min { return .failure(.outOfBounds(signal: signal.name, value: text(number), min: access.min, max: access.max)) }
                if let max = access.max, d > max { return .failure(.outOfBounds(signal: signal.name, value: text(number), min: access.min, max: access.max)) }
            }
            let raw: Value
            if signal.scale == 1 && signal.offset == 0 {
                raw = number
            } else {
                // Undo value = raw * scale + offset, like a person would: 65.1 at scale 0.1 is 651.
                guard let d = number.asDouble else { return .failure(.notFinite(signal: signal.name)) }
                let shifted = d - signal.offset
                let inverse = 1 / signal.scale
                var unscaled = abs(inverse) > 1 && inverse == inverse.rounded() ? shifted * inverse : shifted / signal.scale
                if signal.type.isInteger { unscaled = unscaled.rounded(.toNearestOrAwayFromZero) }
                raw = .double(unscaled)
            }
            return words(raw, type: signal.type, order: signal.order).mapError { error in
                switch error {
                case .notRepresentable(_, _, let type, let range):
                    return .notRepresentable(signal: signal.name, value: text(number), type: type, range: scaledRange(signal, range: range))
                case .notWhole(_, _, let type): return .notWhole(signal: signal.name, value: text(number), type: type)
                default: return error.renamed(signal.name)
                }
            }.map { .registers(address: signal.address, words: $0) }
        }
    }

    /// Register words holding the raw (unscaled) `value` as `type` in `order`: the exact inverse of
    /// `Decoder.decode` for every register type. Integers must be whole and in the type's range.
    public static func words(_ value: Value, type: DataType, order: ByteOrder) -> Result<[UInt16], EncodeError> {
        let name = "raw"
        switch type {
        case .bool, .bit:
            return .failure(.wrongKind(signal: name, expected: "a register type", got: type.name))
        case .string(let registers):
            guard case .string(let text) = value else { return .failure(.wrongKind(signal: name, expected: "text", got: kind(value))) }
            return stringWords(text, registers: registers, bytesSwapped: order.bytesSwapped, signal: name)
        case .int16:
            return integer(value, min: Int64(Int16.min), max: Int64(Int16.max), type: type).map { pack(UInt64(UInt16(truncatingIfNeeded: $0)), count: 1, order) }
        case .uint16:
            return unsigned(value, max: UInt64(UInt16.max), type: type).map { pack($0, count: 1, order) }
        case .int32:
            return integer(value, min: Int64(Int32.min), max: Int64(Int32.max), type: type).map { pack(UInt64(UInt32(truncatingIfNeeded: $0)), count: 2, order) }
        case .uint32:
            return unsigned(value, max: UInt64(UInt32.max), type: type).map { pack($0, count: 2, order) }
        case .int64:
            return integer(value, min: Int64.min, max: Int64.max, type: type).map { pack(UInt64(bitPattern: $0), count: 4, order) }
        case .uint64:
            return unsigned(value, max: UInt64.max, type: type).map { pack($0, count: 4, order) }
        case .float32:
            guard let d = numeric(value)?.asDouble else { return .failure(.wrongKind(signal: name, expected: "a number", got: kind(value))) }
            if d.isFinite && Float(d).isInfinite {
                return .failure(.notRepresentable(signal: name, value: text(.double(d)), type: "float32", range: "up to ±3.4028235e38"))
            }
            return .success(pack(UInt64(Float(d).bitPattern), count: 2, order))
        case .float64:
            guard let d = numeric(value)?.asDouble else { return .failure(.wrongKind(signal: name, expected: "a number", got: kind(value))) }
            return .success(pack(d.bitPattern, count: 4, order))
        }
    }

    /// The words whose big-endian integer is `raw` after the byte and word order: the inverse of `Decoder.raw`.
    static func pack(_ raw: UInt64, count: Int, _ order: ByteOrder) -> [UInt16] {
        var words = [UInt16](repeating: 0, count: count)
        for i in 0..<count {
            var chunk = UInt16(truncatingIfNeeded: raw >> (16 * UInt64(count - 1 - i)))
            if order.bytesSwapped { chunk = chunk.byteSwapped }
            words[order.highWordFirst ? i : count - 1 - i] = chunk
        }
        return words
    }

    /// Two ASCII characters per register, the first in the high byte (low when swapped), NUL padded.
    static func stringWords(_ text: String, registers: Int, bytesSwapped: Bool, signal: String) -> Result<[UInt16], EncodeError> {
        let bytes = Array(text.utf8)
        guard bytes.count <= registers * 2 else {
            return .failure(.badText(signal: signal, reason: "has \(bytes.count) characters; at most \(registers * 2) fit in \(registers) registers"))
        }
        if bytes.contains(where: { $0 < 0x20 || $0 > 0x7E }) {
            return .failure(.badText(signal: signal, reason: "must be printable ASCII"))
        }
        var words: [UInt16] = []
        words.reserveCapacity(registers)
        for i in 0..<registers {
            let first = 2 * i < bytes.count ? bytes[2 * i] : 0
            let second = 2 * i + 1 < bytes.count ? bytes[2 * i + 1] : 0
            let (high, low) = bytesSwapped ? (second, first) : (first, second)
            words.append(UInt16(high) << 8 | UInt16(low))
        }
        return .success(words)
    }

    private static func boolean(_ value: Value, _ signal: Signal) -> Result<Bool, EncodeError> {
        switch value {
        case .bool(let b): return .success(b)
        case .int(let i) where i == 0 || i == 1: return .success(i == 1)
        case .uint(let u) where u <= 1: return .success(u == 1)
        case .double(let d) where d == 0 || d == 1: return .success(d == 1)
        case .string(let s) where ["true", "false", "on", "off", "1", "0"].contains(s.lowercased()):
            return .success(["true", "on", "1"].contains(s.lowercased()))
        default: return .failure(.wrongKind(signal: signal.name, expected: "true or false", got: text(value)))
        }
    }

    /// Numbers (and numeric text, as some platforms' widgets send) as a number value.
    static func numeric(_ value: Value) -> Value? {
        switch value {
        case .int, .uint, .double: return value
        case .bool: return nil
        case .string(let s):
            let trimmed = s.trimmingSpaces
            if let i = Int64(trimmed) { return .int(i) }
            if let u = UInt64(trimmed) { return .uint(u) }
            if let d = Double(trimmed) { return .double(d) }
            return nil
        }
    }

    private static func integer(_ value: Value, min: Int64, max: Int64, type: DataType) -> Result<Int64, EncodeError> {
        let range = "\(min) to \(max)"
        switch numeric(value) {
        case .int(let i)?:
            guard i >= min && i <= max else { return .failure(.notRepresentable(signal: "raw", value: String(i), type: type.name, range: range)) }
            return .success(i)
        case .uint(let u)?:
            guard u <= UInt64(max) else { return .failure(.notRepresentable(signal: "raw", value: String(u), type: type.name, range: range)) }
            return .success(Int64(u))
        case .double(let d)?:
            guard d.isFinite else { return .failure(.notFinite(signal: "raw")) }
            guard d == d.rounded() else { return .failure(.notWhole(signal: "raw", value: text(.double(d)), type: type.name)) }
            // Double(Int64.max) rounds up to 2^63, so compare below it.
            guard d >= Double(min) && d < -Double(Int64.min) && d <= Double(max) else {
                return .failure(.notRepresentable(signal: "raw", value: text(.double(d)), type: type.name, range: range))
            }
            return .success(Int64(d))
        default:
            return .failure(.wrongKind(signal: "raw", expected: "a number", got: kind(value)))
        }
    }

    private static func unsigned(_ value: Value, max: UInt64, type: DataType) -> Result<UInt64, EncodeError> {
        let range = "0 to \(max)"
        switch numeric(value) {
        case .int(let i)?:
            guard i >= 0, UInt64(i) <= max else { return .failure(.notRepresentable(signal: "raw", value: String(i), type: type.name, range: range)) }
            return .success(UInt64(i))
        case .uint(let u)?:
            guard u <= max else { return .failure(.notRepresentable(signal: "raw", value: String(u), type: type.name, range: range)) }
            return .success(u)
        case .double(let d)?:
            guard d.isFinite else { return .failure(.notFinite(signal: "raw")) }
            guard d == d.rounded() else { return .failure(.notWhole(signal: "raw", value: text(.double(d)), type: type.name)) }
            guard d >= 0 && d < 18_446_744_073_709_551_616.0 && d <= Double(max) else {
                return .failure(.notRepresentable(signal: "raw", value: text(.double(d)), type: type.name, range: range))
            }
            return .success(UInt64(d))
        default:
            return .failure(.wrongKind(signal: "raw", expected: "a number", got: kind(value)))
        }
    }

    /// The raw range as engineering values (`range` is the raw text, used when scaling is identity).
    private static func scaledRange(_ signal: Signal, range: String) -> String {
        guard signal.scale != 1 || signal.offset != 0, let limits = signal.type.rawLimits else { return range }
        let a = Decoder.apply(limits.min, signal.scale, signal.offset), b = Decoder.apply(limits.max, signal.scale, signal.offset)
        var out = ""
        JSONText.appendDouble(Swift.min(a, b), to: &out)
        out += " to "
        JSONText.appendDouble(Swift.max(a, b), to: &out)
        return out + " after scale \(signal.scale) and offset \(signal.offset)"
    }

    static func kind(_ value: Value) -> String {
        switch value {
        case .bool(let b): "the boolean \(b)"
        case .int, .uint, .double: "the number \(text(value))"
        case .string(let s): "the text \"\(s.prefix(40))\""
        }
    }

    static func text(_ value: Value) -> String {
        var out = ""
        switch value {
        case .double(let d): JSONText.appendDouble(d, to: &out)
        default: out = value.description
        }
        return out
    }
}

extension EncodeError {
    func renamed(_ signal: String) -> EncodeError {
        switch self {
        case .notWritable: .notWritable(signal: signal)
        case .readOnlyArea(_, let a): .readOnlyArea(signal: signal, area: a)
        case .wrongKind(_, let e, let g): .wrongKind(signal: signal, expected: e, got: g)
        case .outOfBounds(_, let v, let mn, let mx): .outOfBounds(signal: signal, value: v, min: mn, max: mx)
        case .notRepresentable(_, let v, let t, let r): .notRepresentable(signal: signal, value: v, type: t, range: r)
        case .notWhole(_, let v, let t): .notWhole(signal: signal, value: v, type: t)
        case .notFinite: .notFinite(signal: signal)
        case .badText(_, let r): .badText(signal: signal, reason: r)
        }
    }
}

extension Value {
    /// The value as a Double when it is a number.
    public var asDouble: Double? {
        switch self {
        case .int(let i): Double(i)
        case .uint(let u): Double(u)
        case .double(let d): d
        case .bool, .string: nil
        }
    }
}

extension DataType {
    /// Whole-number register types.
    public var isInteger: Bool {
        switch self {
        case .int16, .uint16, .int32, .uint32, .int64, .uint64: true
        default: false
        }
    }

    /// The raw range of integer types, as Doubles.
    var rawLimits: (min: Double, max: Double)? {
        switch self {
        case .int16: (Double(Int16.min), Double(Int16.max))
        case .uint16: (0, Double(UInt16.max))
        case .int32: (Double(Int32.min), Double(Int32.max))
        case .uint32: (0, Double(UInt32.max))
        case .int64: (Double(Int64.min), Double(Int64.max))
        case .uint64: (0, Double(UInt64.max))
        default: nil
        }
    }
}

extension String {
    var trimmingSpaces: Substring {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
