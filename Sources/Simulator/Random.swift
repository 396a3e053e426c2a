// Seeded randomness. Swift's SystemRandomNumberGenerator and Hasher are seeded per process, so a
// simulation built on them could never be replayed; these are fixed algorithms with fixed seeds.

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var splitMix = seed
        func next() -> UInt64 {
            splitMix &+= 0x9E37_79B9_7F4A_7C15
            var z = splitMix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (next(), next(), next(), next())
    }

    /// A generator for one named stream of a seed (a machine's values, its faults, ...).
    public init(seed: UInt64, stream: String) {
        self.init(seed: seed ^ StableHash.fnv1a(stream))
    }

    public mutating func next() -> UInt64 {
        let result = rotate(state.1 &* 5, 7) &* 9
        let shifted = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= shifted
        state.3 = rotate(state.3, 45)
        return result
    }

    private func rotate(_ value: UInt64, _ count: UInt64) -> UInt64 { (value << count) | (value >> (64 - count)) }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in [low, high].
    public mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * unit() }

    /// Standard normal (Box-Muller).
    public mutating func gaussian() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// True with probability p.
    public mutating func chance(_ probability: Double) -> Bool {
        probability >= 1 || (probability > 0 && unit() < probability)
    }

    /// An index drawn with the given weights (all zero: the first).
    public mutating func weightedIndex(_ weights: [Double]) -> Int {
        let total = weights.reduce(0) { $0 + max($1, 0) }
        guard total > 0 else { return 0 }
        var draw = unit() * total
        for (index, weight) in weights.enumerated() {
            draw -= max(weight, 0)
            if draw < 0 { return index }
        }
        return weights.count - 1
    }
}

public enum StableHash {
    /// FNV-1a 64: the same on every run and platform.
    public static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
