// How an engineering value becomes register contents and back: type, byte order, scale and
// offset, exactly as the agent will decode them. The simulator writes what a real device would,
// so a byte-order mistake on the agent's side shows up as a wrong value, not as a silent match.

/// The layout of one value in the data areas.
public enum ValueType: Sendable, Equatable {
    /// One coil or discrete input.
    case bool
    /// One bit (0 = least significant) of a holding or input register.
    case bit(Int)
    case int16, uint16, int32, uint32, int64, uint64, float32, float64
    /// ASCII text, two characters per register, padded with NULs.
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

    public var isNumericRegister: Bool {
        switch self {
        case .bool, .bit, .string: false
        default: true
        }
    }

    public var isInteger: Bool {
        switch self {
        case .int16, .uint16, .int32, .uint32, .int64, .uint64: true
        default: false
        }
    }

    /// Names accepted in profiles, in the order error messages list them.
    public static let names = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
                               "bool", "bit", "string"]

    /// The type for a name whose layout needs no further key (not `bit`, not `string`).
    public static func fixed(_ name: String) -> ValueType? {
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

    /// The raw integer range the type can carry, for integer types.
    var integerRange: ClosedRange<Double>? {
        switch self {
        case .int16: -32768...32767
        case .uint16: 0...65535
        case .int32: -2_147_483_648...2_147_483_647
        case .uint32: 0...4_294_967_295
        // 2^63 and 2^64: the nearest doubles (Int64.max and UInt64.max have no exact double).
        case .int64: -ValueCodec.twoTo63...ValueCodec.twoTo63
        case .uint64: 0...ValueCodec.twoTo64
        default: nil
        }
    }
}

/// Byte and word order, named after a 32-bit value's bytes A (most significant) to D as they
/// arrive on the wire. BADC swaps the bytes inside each register, CDAB the register order, DCBA
/// both. 16-bit values use only the byte half; 64-bit values extend the rule (CDAB reverses all
/// four registers).
public enum ByteOrder: String, Sendable, CaseIterable {
    case abcd = "ABCD"
    case badc = "BADC"
    case cdab = "CDAB"
    case dcba = "DCBA"

    public var highWordFirst: Bool { self == .abcd || self == .badc }
    public var bytesSwapped: Bool { self == .badc || self == .dcba }
}

public enum ValueCodec {
    /// Registers for a numeric value: raw = (value - offset) / scale, rounded and saturated for
    /// integer types (a real device clips, it doesn't wrap), NaN as 0.
    public static func encode(_ value: Double, as type: ValueType, order: ByteOrder = .abcd,
                              scale: Double = 1, offset: Double = 0) -> [UInt16] {
        let raw = scale == 0 ? 0 : (value - offset) / scale
        let bigEndian: [UInt8]
        switch type {
        case .int16: bigEndian = bytes(of: UInt16(bitPattern: Int16(saturating(raw, type))))
        case .uint16: bigEndian = bytes(of: UInt16(saturating(raw, type)))
        case .int32: bigEndian = bytes(of: UInt32(bitPattern: Int32(saturating(raw, type))))
        case .uint32: bigEndian = bytes(of: UInt32(saturating(raw, type)))
        case .int64: bigEndian = bytes(of: UInt64(bitPattern: int64Saturating(raw)))
        case .uint64: bigEndian = bytes(of: uint64Saturating(raw))
        case .float32: bigEndian = bytes(of: Float(raw).bitPattern)
        case .float64: bigEndian = bytes(of: raw.bitPattern)
        case .bool, .bit:
            return [raw != 0 && !raw.isNaN ? 1 : 0]
        case .string(let registers):
            return Array(repeating: 0, count: registers)
        }
        return arrange(bigEndian, order: order)
    }

    /// ASCII text over `registers` registers, two characters each, first character in the high
    /// byte (the byte-swapped orders put it in the low byte). Non-ASCII becomes '?'; text too long
    /// is cut, too short padded with NUL.
    public static func encode(text: String, registers: Int, order: ByteOrder = .abcd) -> [UInt16] {
        var chars: [UInt8] = text.unicodeScalars.prefix(registers * 2).map { $0.isASCII ? UInt8($0.value) : 0x3F }
        chars += Array(repeating: 0, count: registers * 2 - chars.count)
        return (0..<registers).map { index in
            let first = UInt16(chars[2 * index]), second = UInt16(chars[2 * index + 1])
            return order.bytesSwapped ? second << 8 | first : first << 8 | second
        }
    }

    /// The engineering value of registers (value = raw * scale + offset); nil if the count is wrong.
    public static func decode(_ registers: [UInt16], as type: ValueType, order: ByteOrder = .abcd,
                              scale: Double = 1, offset: Double = 0) -> Double? {
        guard registers.count == type.width else { return nil }
        let raw: Double
        switch type {
        case .bool: raw = registers[0] != 0 ? 1 : 0
        case .bit(let index): raw = (registers[0] >> UInt16(index & 15)) & 1 == 1 ? 1 : 0
        case .string: return nil
        default:
            let wire = unarrange(registers, order: order)
            var bits: UInt64 = 0
            for byte in wire { bits = bits << 8 | UInt64(byte) }
            switch type {
            case .int16: raw = Double(Int16(bitPattern: UInt16(truncatingIfNeeded: bits)))
            case .uint16: raw = Double(UInt16(truncatingIfNeeded: bits))
            case .int32: raw = Double(Int32(bitPattern: UInt32(truncatingIfNeeded: bits)))
            case .uint32: raw = Double(UInt32(truncatingIfNeeded: bits))
            case .int64: raw = Double(Int64(bitPattern: bits))
            case .uint64: raw = Double(bits)
            case .float32: raw = Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits)))
            default: raw = Double(bitPattern: bits)
            }
        }
        return raw * scale + offset
    }

    /// The text of registers written as `encode(text:)` does, trailing NULs removed.
    public static func decodeText(_ registers: [UInt16], order: ByteOrder = .abcd) -> String {
        var chars: [UInt8] = []
        for register in registers {
            let high = UInt8(register >> 8), low = UInt8(register & 0xFF)
            chars += order.bytesSwapped ? [low, high] : [high, low]
        }
        while chars.last == 0 { chars.removeLast() }
        return String(decoding: chars, as: UTF8.self)
    }

    // MARK: - Helpers

    private static func saturating(_ raw: Double, _ type: ValueType) -> Int64 {
        guard !raw.isNaN, let range = type.integerRange else { return 0 }
        return Int64(min(max(raw.rounded(), range.lowerBound), range.upperBound))
    }

    static let twoTo63 = 9_223_372_036_854_775_808.0
    static let twoTo64 = 18_446_744_073_709_551_616.0

    private static func int64Saturating(_ raw: Double) -> Int64 {
        guard !raw.isNaN else { return 0 }
        let rounded = raw.rounded()
        if rounded >= twoTo63 { return .max }
        if rounded <= -twoTo63 { return .min }
        return Int64(rounded)
    }

    private static func uint64Saturating(_ raw: Double) -> UInt64 {
        guard !raw.isNaN else { return 0 }
        let rounded = raw.rounded()
        if rounded >= twoTo64 { return .max }
        if rounded <= 0 { return 0 }
        return UInt64(rounded)
    }

    private static func bytes<T: FixedWidthInteger>(of value: T) -> [UInt8] {
        (0..<T.bitWidth / 8).reversed().map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    /// Big-endian bytes (A first) into registers in the given order.
    static func arrange(_ bigEndian: [UInt8], order: ByteOrder) -> [UInt16] {
        var words = stride(from: 0, to: bigEndian.count, by: 2).map { (bigEndian[$0], bigEndian[$0 + 1]) }
        if !order.highWordFirst { words.reverse() }
        return words.map { high, low in
            order.bytesSwapped ? UInt16(low) << 8 | UInt16(high) : UInt16(high) << 8 | UInt16(low)
        }
    }

    /// Registers in the given order back to big-endian bytes.
    static func unarrange(_ registers: [UInt16], order: ByteOrder) -> [UInt8] {
        var words = registers.map { register -> (UInt8, UInt8) in
            let high = UInt8(register >> 8), low = UInt8(register & 0xFF)
            return order.bytesSwapped ? (low, high) : (high, low)
        }
        if !order.highWordFirst { words.reverse() }
        return words.flatMap { [$0.0, $0.1] }
    }
}
