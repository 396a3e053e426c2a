/// Why registers could not be turned into a value.
public enum DecodeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Fewer words (or bits) arrived than the type needs.
    case tooShort(needed: Int, got: Int)
    /// A string register held a byte that is not printable ASCII.
    case notASCII(byte: UInt8)

    public var description: String {
        switch self {
        case .tooShort(let needed, let got): "needs \(needed) words, got \(got)"
        case .notASCII(let byte): "byte 0x\(String(byte, radix: 16)) is not printable ASCII"
        }
    }
}

/// Turns register words and bits into values. Floats are assembled from the words here
/// (never with libmodbus' helpers, which know only some orders).
public enum Decoder {
    /// Decodes a register-area signal from the words starting at its address.
    public static func decode(_ type: DataType, order: ByteOrder, words: ArraySlice<UInt16>) -> Result<Value, DecodeError> {
        guard words.count >= type.width else { return .failure(.tooShort(needed: type.width, got: words.count)) }
        let start = words.startIndex
        switch type {
        case .bool:
            return .success(.bool(words[start] != 0))
        case .bit(let index):
            return .success(.bool((words[start] >> UInt16(index & 15)) & 1 == 1))
        case .int16:
            return .success(.int(Int64(Int16(bitPattern: UInt16(truncatingIfNeeded: raw(words, 1, order))))))
        case .uint16:
            return .success(.uint(raw(words, 1, order)))
        case .int32:
            return .success(.int(Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: raw(words, 2, order))))))
        case .uint32:
            return .success(.uint(raw(words, 2, order)))
        case .int64:
            return .success(.int(Int64(bitPattern: raw(words, 4, order))))
        case .uint64:
            return .success(.uint(raw(words, 4, order)))
        case .float32:
            return .success(.double(widen(Float(bitPattern: UInt32(truncatingIfNeeded: raw(words, 2, order))))))
        case .float64:
            return .success(.double(Double(bitPattern: raw(words, 4, order))))
        case .string(let registers):
            return decodeString(words.prefix(registers), bytesSwapped: order.bytesSwapped)
        }
    }

    /// A float32 as the Double of its shortest decimal form: 220.46788, not 220.46788024902344 (the
    /// float32 nearest to either is the same, so nothing is lost, and platforms see what the device meant).
    @inline(__always)
    static func widen(_ f: Float) -> Double {
        guard f.isFinite, f != 0 else { return Double(f) }
        return Double(f.description) ?? Double(f)
    }

    /// The big-endian integer formed by `count` words after applying the byte and word order.
    @inline(__always)
    static func raw(_ words: ArraySlice<UInt16>, _ count: Int, _ order: ByteOrder) -> UInt64 {
        var result: UInt64 = 0
        let base = words.startIndex
        for i in 0..<count {
            var word = words[base + (order.highWordFirst ? i : count - 1 - i)]
            if order.bytesSwapped { word = word.byteSwapped }
            result = result << 16 | UInt64(word)
        }
        return result
    }

    /// Two ASCII characters per register, the first in the high byte (low byte when swapped).
    /// Trailing NUL, space and 0xFF padding is dropped; text ends at the first NUL.
    static func decodeString(_ words: ArraySlice<UInt16>, bytesSwapped: Bool) -> Result<Value, DecodeError> {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(words.count * 2)
        for word in words {
            let high = UInt8(word >> 8), low = UInt8(word & 0xFF)
            if bytesSwapped { bytes.append(low); bytes.append(high) } else { bytes.append(high); bytes.append(low) }
        }
        if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
        while let last = bytes.last, last == 0x20 || last == 0xFF { bytes.removeLast() }
        if let bad = bytes.first(where: { $0 < 0x20 || $0 > 0x7E }) { return .failure(.notASCII(byte: bad)) }
        return .success(.string(String(decoding: bytes, as: UTF8.self)))
    }

    /// Applies `value * scale + offset`. Integers stay integers when the scaling is the identity.
    public static func scaled(_ value: Value, scale: Double, offset: Double) -> Value {
        guard scale != 1 || offset != 0 else { return value }
        switch value {
        case .int(let v): return .double(apply(Double(v), scale, offset))
        case .uint(let v): return .double(apply(Double(v), scale, offset))
        case .double(let v): return .double(apply(v, scale, offset))
        case .bool, .string: return value
        }
    }

    /// Scales like a person would: 2001 × 0.1 is 200.1, not 200.10000000000002. Dividing by the
    /// exact inverse of a decimal scale (10, 100, ...) gives the correctly rounded result.
    @inline(__always)
    static func apply(_ v: Double, _ scale: Double, _ offset: Double) -> Double {
        let inverse = 1 / scale
        let scaled = abs(inverse) > 1 && inverse == inverse.rounded() ? v / inverse : v * scale
        return scaled + offset
    }

    /// Decodes and scales one signal from the words (or bits) of the request that carried it.
    /// `base` is the first address of that request.
    public static func record(for signal: Signal, base: Int, words: [UInt16]) -> Result<Value, DecodeError> {
        let from = signal.address - base
        guard from >= 0, from <= words.count else { return .failure(.tooShort(needed: signal.type.width, got: 0)) }
        let slice = words[from..<min(words.count, from + signal.type.width)]
        return decode(signal.type, order: signal.order, words: slice).map {
            scaled($0, scale: signal.scale, offset: signal.offset)
        }
    }

    /// Reads one coil or discrete input from the bits of the request that carried it.
    public static func record(for signal: Signal, base: Int, bits: [Bool]) -> Result<Value, DecodeError> {
        let index = signal.address - base
        guard index >= 0, index < bits.count else { return .failure(.tooShort(needed: 1, got: 0)) }
        return .success(.bool(bits[index]))
    }
}
