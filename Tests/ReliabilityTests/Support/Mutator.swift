import Foundation

/// A small structure-aware mutator for text inputs (configs, profiles, control request bodies):
/// byte flips, line edits, splices and insertions of tokens that matter to YAML and to our loaders.
/// Seeded, so a failing case is repeated with `UPLINK_SEED`.
struct Mutator {
    var random: SeededGenerator

    static let tokens: [String] = [
        "devices:", "signals:", "mqtt:", "buffer:", "agent:", "defaults:", "serial_buses:", "tls:", "machines:", "registers:",
        "faults:", "state_machine:", "- ", ": ", "{", "}", "[", "]", ",", "\"", "'", "#", "&a ", "*a", "<<: *a", "!!str ", "!!binary ",
        "!!int ", "? ", "|\n", ">\n", "---\n", "...\n", "%YAML 1.1\n", "\t", "\r\n", "\u{0}", "\u{FEFF}", "é", "设备", "🙂",
        "${X}", "${X:-5}", "${", "${UNSET}", "${X:-}", "$${X}", "0", "-1", "65535", "65536", "400001", "4x0001", "99999999999999999999",
        "1e309", "-0", "0x10", "0o7", ".inf", "-.inf", ".nan", "NaN", "true", "no", "null", "~", "1ms", "0s", "10ms", "1d", "367d",
        "500MB", "1TB", "0KB", "-5s", "1.5.5s", "holding", "coil", "discrete", "input", "float32", "float64", "string", "bit",
        "uint64", "int16", "ABCD", "DCBA", "CDAB", "BADC", "mqtts://", "mqtt://[::1]:1883", "mqtt://h:0", "tcp://h:99999",
        "slow: 2s", "no_response: 2", "exception: 99", "offline: { every: 0s }", "probability: -1", "probability: 2",
        "formula: \"1/0\"", "formula: \"((((((((((1))))))))))\"", "counter: { every: 0s }", "sine: { period: 0s }",
        "address: 65535", "registers: 200", "count: 1000000", "scale: 0", "tick: 0s", "speed: -1",
    ]

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &random) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &random) < p }

    /// One to eight random edits of `text`, sometimes spliced with `other`.
    mutating func mutate(_ text: String, splice other: String? = nil) -> String {
        var bytes = Array(text.utf8)
        for _ in 0..<int(1..<9) {
            switch int(0..<9) {
            case 0 where !bytes.isEmpty:  // flip a byte
                bytes[int(0..<bytes.count)] = UInt8(truncatingIfNeeded: int(0..<256))
            case 1 where !bytes.isEmpty:  // delete a run
                let start = int(0..<bytes.count)
                bytes.removeSubrange(start..<min(bytes.count, start + int(1..<16)))
            case 2:  // insert a token
                let token = Array(Self.tokens[int(0..<Self.tokens.count)].utf8)
                bytes.insert(contentsOf: token, at: bytes.isEmpty ? 0 : int(0..<bytes.count + 1))
            case 3, 4:  // line edits: delete, duplicate, swap, re-indent
                var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                guard !lines.isEmpty else { break }
                let i = int(0..<lines.count), j = int(0..<lines.count)
                switch int(0..<4) {
                case 0: lines.remove(at: i)
                case 1: lines.insert(lines[i], at: j)
                case 2: lines.swapAt(i, j)
                default: lines[i] = String(repeating: " ", count: int(0..<9)) + lines[i].drop { $0 == " " }
                }
                bytes = Array(lines.joined(separator: "\n").utf8)
            case 5 where other != nil:  // splice
                let tail = Array(other?.utf8 ?? "".utf8)
                let cut = bytes.isEmpty ? 0 : int(0..<bytes.count)
                let from = tail.isEmpty ? 0 : int(0..<tail.count)
                bytes = Array(bytes[..<cut]) + Array(tail[from...])
            case 6:  // repeat a run (long scalars, deep nesting)
                guard !bytes.isEmpty else { break }
                let start = int(0..<bytes.count)
                let run = Array(bytes[start..<min(bytes.count, start + int(1..<8))])
                let times = int(1..<200)
                bytes.insert(contentsOf: Array(repeating: run, count: times).flatMap { $0 }, at: start)
            case 7:  // replace a number with an extreme one
                var text = String(decoding: bytes, as: UTF8.self)
                let numbers = ["0", "-1", "65535", "65536", "2147483648", "18446744073709551616", "1e400", "0.0000001", "-0.0"]
                let start = text.index(text.startIndex, offsetBy: int(0..<max(1, text.count)), limitedBy: text.endIndex) ?? text.endIndex
                if let range = text.range(of: "[0-9]+", options: .regularExpression, range: start..<text.endIndex) {
                    text.replaceSubrange(range, with: numbers[int(0..<numbers.count)])
                    bytes = Array(text.utf8)
                }
            default:  // random bytes
                let count = int(1..<32)
                bytes.insert(contentsOf: (0..<count).map { _ in UInt8(truncatingIfNeeded: int(0..<256)) }, at: bytes.isEmpty ? 0 : int(0..<bytes.count + 1))
            }
        }
        if bytes.count > 200_000 { bytes = Array(bytes.prefix(200_000)) }
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func bytes(_ count: Range<Int>) -> [UInt8] {
        (0..<int(count)).map { _ in UInt8(truncatingIfNeeded: int(0..<256)) }
    }
}

/// How long a bounded property run lasts: `UPLINK_FUZZ_SECONDS`, else `ci` seconds.
func fuzzBudget(ci: Double) -> Double {
    Environment.fuzzSeconds.map(Double.init) ?? ci
}
