import Foundation

/// SplitMix64: a small seeded generator, so a failing random run can be repeated with
/// `UPLINK_SEED=N` (every test prints the seed it used).
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    let seed: UInt64

    init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    /// The seed from `UPLINK_SEED`, else a fresh one.
    static func fromEnvironment() -> SeededGenerator {
        let seed = ProcessInfo.processInfo.environment["UPLINK_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64(UInt32.max))
        return SeededGenerator(seed: seed)
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Environment {
    /// `UPLINK_SOAK=1`: the long versions of the attack tests.
    static let soak = ProcessInfo.processInfo.environment["UPLINK_SOAK"].map { $0 != "" && $0 != "0" } ?? false

    /// `UPLINK_FUZZ_SECONDS=N`: how long each fuzz target runs (default: a short CI run).
    static let fuzzSeconds: Int? = ProcessInfo.processInfo.environment["UPLINK_FUZZ_SECONDS"].flatMap(Int.init)
}
