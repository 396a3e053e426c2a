import Yams

/// A position in the document: the node, its key path and where it was written.
struct Cursor {
    var node: Node
    var path: String
    var line: Int { node.mark?.line ?? 0 }
    var column: Int { node.mark?.column ?? 0 }

    func child(_ key: String, _ node: Node) -> Cursor {
        Cursor(node: node, path: path.isEmpty ? key : "\(path).\(key)")
    }

    func element(_ index: Int, _ node: Node) -> Cursor {
        Cursor(node: node, path: "\(path)[\(index)]")
    }
}

/// Reads typed values out of YAML nodes, collecting issues instead of stopping at the first.
/// Scalars are interpreted here, after `${VAR}` substitution, rather than through YAML's own
/// tag resolution, so that `port: ${PORT:-5020}` is an integer like `port: 5020`.
final class YAMLReader {
    let file: String
    let environment: [String: String]
    private(set) var issues: [ConfigIssue] = []

    init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
    }

    func fail(_ at: Cursor, _ message: String) {
        issues.append(ConfigIssue(file: file, line: at.line, column: at.column, path: at.path, message: message))
    }

    /// The pairs of a mapping, with YAML merge keys (`<<: *anchor`) folded in; nil (and an issue) if not a mapping.
    func mapping(_ at: Cursor, what: String) -> [(key: String, cursor: Cursor)]? {
        guard case .mapping(let yamlMapping) = at.node else {
            fail(at, "expected \(what) (a mapping of key: value), found \(describe(at.node))")
            return nil
        }
        var pairs: [(key: String, cursor: Cursor)] = []
        var seen: Set<String> = []
        for (keyNode, valueNode) in yamlMapping {
            guard case .scalar(let key) = keyNode else {
                fail(at, "keys must be plain names, found \(describe(keyNode))")
                continue
            }
            if key.string == "<<" {
                let merged = mapping(Cursor(node: valueNode, path: at.path), what: "a mapping to merge") ?? []
                for pair in merged where !seen.contains(pair.key) {
                    seen.insert(pair.key)
                    pairs.append(pair)
                }
                continue
            }
            if let index = pairs.firstIndex(where: { $0.key == key.string }) {
                if seen.contains(key.string) {
                    // A merged value is overridden by an explicit key.
                    pairs.remove(at: index)
                } else {
                    fail(at.child(key.string, valueNode), "key '\(key.string)' appears twice")
                    continue
                }
            }
            seen.insert(key.string)
            pairs.append((key.string, at.child(key.string, valueNode)))
        }
        return pairs
    }

    /// Reads a mapping whose keys must all be in `allowed`; unknown keys are issues that list the allowed ones.
    func fields(_ at: Cursor, what: String, allowed: [String]) -> Fields? {
        guard let pairs = mapping(at, what: what) else { return nil }
        var values: [String: Cursor] = [:]
        for (key, cursor) in pairs {
            if allowed.contains(key) {
                values[key] = cursor
            } else {
                let suggestion = allowed.min { editDistance($0, key) < editDistance($1, key) }
                    .flatMap { editDistance($0, key) <= 2 ? " (did you mean '\($0)'?)" : nil } ?? ""
                fail(cursor, "unknown key '\(key)'\(suggestion); expected one of \(allowed.joined(separator: ", "))")
            }
        }
        return Fields(at: at, values: values)
    }

    func sequence(_ at: Cursor, what: String) -> [Cursor]? {
        guard case .sequence(let sequence) = at.node else {
            fail(at, "expected \(what) (a list), found \(describe(at.node))")
            return nil
        }
        return sequence.enumerated().map { at.element($0.offset, $0.element) }
    }

    /// A scalar's text after `${VAR}` / `${VAR:-default}` substitution.
    func text(_ at: Cursor, what: String) -> String? {
        guard case .scalar(let scalar) = at.node else {
            fail(at, "expected \(what), found \(describe(at.node))")
            return nil
        }
        return substitute(scalar.string, at)
    }

    /// Whether the scalar was written without quotes (so `"40001"` and `40001` can mean different things).
    func isPlain(_ at: Cursor) -> Bool {
        // A value that comes from the environment is taken as written there: "${ADDR}" holding 7 is address 7.
        if case .scalar(let scalar) = at.node { return scalar.style == .plain || scalar.style == .any || scalar.string.contains("${") }
        return false
    }

    func string(_ at: Cursor, what: String = "a string") -> String? {
        text(at, what: what)
    }

    func int(_ at: Cursor, in range: ClosedRange<Int>, what: String = "an integer") -> Int? {
        guard let text = text(at, what: "\(what) from \(range.lowerBound) to \(range.upperBound)") else { return nil }
        guard let value = Int(text) else {
            fail(at, "expected \(what) from \(range.lowerBound) to \(range.upperBound), found '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            fail(at, "\(value) is out of range; expected \(what) from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    func double(_ at: Cursor, what: String = "a number") -> Double? {
        guard let text = text(at, what: what) else { return nil }
        guard let value = Double(text), value.isFinite else {
            fail(at, "expected \(what), found '\(text)'")
            return nil
        }
        return value
    }

    func bool(_ at: Cursor) -> Bool? {
        guard let text = text(at, what: "true or false") else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(at, "expected true or false, found '\(text)'")
            return nil
        }
    }

    /// A duration with a unit (`250ms`, `1s`, `1.5s`, `2m`, `1h`), in milliseconds.
    func duration(_ at: Cursor, in range: ClosedRange<Int>) -> Int? {
        let expected = "a duration with a unit, like 500ms, 1s or 2m, from \(Self.format(range.lowerBound)) to \(Self.format(range.upperBound))"
        guard let text = text(at, what: expected) else { return nil }
        guard let ms = Self.parseDuration(text) else {
            fail(at, "expected \(expected), found '\(text)'")
            return nil
        }
        guard range.contains(ms) else {
            fail(at, "\(text) is out of range; expected \(expected)")
            return nil
        }
        return ms
    }

    static func parseDuration(_ text: String) -> Int? {
        let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            // "5m" must not be read as "5" + "m" when the text is "5ms": ms is tried first.
            guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
            let ms = value * factor
            guard ms <= 1e12 else { return nil }
            return Int(ms.rounded())
        }
        return nil
    }

    static func format(_ ms: Int) -> String {
        if ms % 86_400_000 == 0 { return "\(ms / 86_400_000)d" }
        if ms % 3_600_000 == 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    private func substitute(_ raw: String, _ at: Cursor) -> String? {
        guard raw.contains("${") else { return raw }
        var result = ""
        var rest = Substring(raw)
        while let open = rest.range(of: "${") {
            result += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                fail(at, "unclosed '${' in '\(raw)'; expected ${NAME} or ${NAME:-default}")
                return nil
            }
            let body = rest[open.upperBound..<close]
            let name: Substring, fallback: Substring?
            if let sep = body.range(of: ":-") {
                name = body[..<sep.lowerBound]
                fallback = body[sep.upperBound...]
            } else {
                name = body
                fallback = nil
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                fail(at, "'${\(body)}' is not a variable reference; expected ${NAME} or ${NAME:-default}")
                return nil
            }
            if let value = environment[String(name)], !(value.isEmpty && fallback != nil) {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                fail(at, "environment variable \(name) is not set; expected it in the environment, or write ${\(name):-default}")
                return nil
            }
            rest = rest[rest.index(after: close)...]
        }
        return result + rest
    }

    private func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): "'\(scalar.string)'"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }
}

/// The known keys of one mapping, read one by one.
struct Fields {
    let at: Cursor
    let values: [String: Cursor]
    subscript(_ key: String) -> Cursor? { values[key] }
}

/// Levenshtein distance, for "did you mean" hints on unknown keys.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
