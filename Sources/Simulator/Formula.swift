// Small arithmetic expressions in profiles ("sqrt(3) * voltage * current * pf", "running &&
// temp > 250"). They keep derived values mutually consistent without a generator for every
// physical law. Booleans are numbers: comparisons give 1 or 0, anything non-zero is true.

/// A parse or name-resolution problem, with the character offset in the formula text.
public struct FormulaError: Error, Sendable, Equatable {
    public var message: String
    public var offset: Int
}

/// A parsed expression. Variables are resolved to slots of a value table before evaluation.
public struct Formula: Sendable {
    indirect enum Expr: Sendable {
        case number(Double)
        case variable(String, slot: Int, offset: Int)
        case unary(String, Expr)
        case binary(String, Expr, Expr)
        case call(String, [Expr], offset: Int)
    }

    public let source: String
    let root: Expr

    static let functions: [String: ClosedRange<Int>] = [
        "sqrt": 1...1, "abs": 1...1, "round": 1...1, "floor": 1...1, "ceil": 1...1, "exp": 1...1,
        "ln": 1...1, "sin": 1...1, "cos": 1...1, "acos": 1...1, "min": 2...8, "max": 2...8, "clamp": 3...3, "if": 3...3,
    ]
    static let constants: [String: Double] = ["pi": Double.pi, "true": 1, "false": 0]

    public init(_ source: String) throws(FormulaError) {
        var parser = Parser(source)
        self.source = source
        self.root = try parser.parseAll()
    }

    init(uncheckedSource source: String, root: Expr) {
        self.source = source
        self.root = root
    }

    /// A constant (built without parsing).
    public init(constant: Double) {
        self.init(uncheckedSource: String(constant), root: .number(constant))
    }

    /// The variable names the formula reads.
    public var variableNames: [String] {
        var names: [String] = []
        func walk(_ expr: Expr) {
            switch expr {
            case .number: break
            case .variable(let name, _, _): if !names.contains(name) { names.append(name) }
            case .unary(_, let operand): walk(operand)
            case .binary(_, let lhs, let rhs): walk(lhs); walk(rhs)
            case .call(_, let arguments, _): arguments.forEach(walk)
            }
        }
        walk(root)
        return names
    }

    /// The same formula with every variable bound to a slot; unknown names are an error.
    public func resolved(_ slot: (String) -> Int?) throws(FormulaError) -> Formula {
        func bind(_ expr: Expr) throws(FormulaError) -> Expr {
            switch expr {
            case .number: return expr
            case .variable(let name, _, let offset):
                guard let index = slot(name) else {
                    throw FormulaError(message: "unknown name '\(name)' in formula '\(source)'", offset: offset)
                }
                return .variable(name, slot: index, offset: offset)
            case .unary(let op, let operand): return .unary(op, try bind(operand))
            case .binary(let op, let lhs, let rhs): return .binary(op, try bind(lhs), try bind(rhs))
            case .call(let name, let arguments, let offset):
                var bound: [Expr] = []
                for argument in arguments { bound.append(try bind(argument)) }
                return .call(name, bound, offset: offset)
            }
        }
        return Formula(uncheckedSource: source, root: try bind(root))
    }

    /// The value, reading variables from `values` by slot (a slot out of range reads 0).
    public func evaluate(_ values: [Double]) -> Double {
        Self.evaluate(root, values)
    }

    private static func evaluate(_ expr: Expr, _ values: [Double]) -> Double {
        switch expr {
        case .number(let value): return value
        case .variable(_, let slot, _): return values.indices.contains(slot) ? values[slot] : 0
        case .unary(let op, let operand):
            let value = evaluate(operand, values)
            return op == "-" ? -value : (value == 0 ? 1 : 0)
        case .binary(let op, let lhsExpr, let rhsExpr):
            let lhs = evaluate(lhsExpr, values)
            // Short-circuit so `if`-like guards (a != 0 && b / a > 1) behave as written.
            if op == "&&" { return lhs != 0 && evaluate(rhsExpr, values) != 0 ? 1 : 0 }
            if op == "||" { return lhs != 0 || evaluate(rhsExpr, values) != 0 ? 1 : 0 }
            let rhs = evaluate(rhsExpr, values)
            switch op {
            case "+": return lhs + rhs
            case "-": return lhs - rhs
            case "*": return lhs * rhs
            case "/": return rhs == 0 ? 0 : lhs / rhs
            case "%": return rhs == 0 ? 0 : lhs.truncatingRemainder(dividingBy: rhs)
            case "^": return pow(lhs, rhs)
            case "<": return lhs < rhs ? 1 : 0
            case "<=": return lhs <= rhs ? 1 : 0
            case ">": return lhs > rhs ? 1 : 0
            case ">=": return lhs >= rhs ? 1 : 0
            case "==": return lhs == rhs ? 1 : 0
            default: return lhs != rhs ? 1 : 0
            }
        case .call(let name, let arguments, _):
            let args = arguments.map { evaluate($0, values) }
            switch name {
            case "sqrt": return args[0] < 0 ? 0 : args[0].squareRoot()
            case "abs": return abs(args[0])
            case "round": return args[0].rounded()
            case "floor": return args[0].rounded(.down)
            case "ceil": return args[0].rounded(.up)
            case "exp": return exp(args[0])
            case "ln": return args[0] <= 0 ? 0 : log(args[0])
            case "sin": return sin(args[0])
            case "cos": return cos(args[0])
            case "acos": return acos(min(max(args[0], -1), 1))
            case "min": return args.min() ?? 0
            case "max": return args.max() ?? 0
            case "clamp": return min(max(args[0], args[1]), args[2])
            default: return args[0] != 0 ? args[1] : args[2]
            }
        }
    }

    // MARK: - Parser (recursive descent over the UTF-8 bytes)

    private struct Parser {
        let text: [UInt8]
        let source: String
        var position = 0
        /// Parentheses, calls and unary operators open so far: bounded, so that a hostile formula
        /// is a located error, not a stack overflow (in parsing, evaluating or freeing the tree).
        var depth = 0
        static let maxDepth = 1000
        static let maxLength = 1000

        init(_ source: String) {
            self.source = source
            self.text = Array(source.utf8)
        }

        mutating func parseAll() throws(FormulaError) -> Expr {
            skipSpace()
            guard position < text.count else { throw FormulaError(message: "empty formula", offset: 0) }
            guard text.count <= Self.maxLength else {
                throw FormulaError(message: "formula of \(text.count) characters; expected at most \(Self.maxLength) (split it over helper registers)", offset: 0)
            }
            let expr = try parseOr()
            skipSpace()
            guard position == text.count else { throw error("unexpected '\(rest)'") }
            return expr
        }

        var rest: String { String(decoding: text[position...].prefix(12), as: UTF8.self) }

        func error(_ message: String) -> FormulaError {
            FormulaError(message: "\(message) in formula '\(source)'", offset: position)
        }

        mutating func skipSpace() {
            while position < text.count, text[position] == 0x20 || text[position] == 0x09 { position += 1 }
        }

        /// Consumes an operator if it is next (and, for words, not a prefix of a longer name).
        mutating func take(_ token: String) -> Bool {
            skipSpace()
            let bytes = Array(token.utf8)
            guard position + bytes.count <= text.count, Array(text[position..<position + bytes.count]) == bytes else {
                return false
            }
            if let first = bytes.first, Self.isNameByte(first), position + bytes.count < text.count,
               Self.isNameByte(text[position + bytes.count]) {
                return false
            }
            // "<" must not eat the first half of "<=", nor "=" of "==".
            if bytes.count == 1, position + 1 < text.count, text[position + 1] == 0x3D, "<>!=".utf8.contains(bytes[0]) {
                return false
            }
            position += bytes.count
            return true
        }

        mutating func parseOr() throws(FormulaError) -> Expr {
            var lhs = try parseAnd()
            while take("||") || take("or") { lhs = .binary("||", lhs, try parseAnd()) }
            return lhs
        }

        mutating func parseAnd() throws(FormulaError) -> Expr {
            var lhs = try parseComparison()
            while take("&&") || take("and") { lhs = .binary("&&", lhs, try parseComparison()) }
            return lhs
        }

        mutating func parseComparison() throws(FormulaError) -> Expr {
            let lhs = try parseSum()
            for op in ["<=", ">=", "==", "!=", "<", ">"] where take(op) {
                return .binary(op, lhs, try parseSum())
            }
            return lhs
        }

        mutating func parseSum() throws(FormulaError) -> Expr {
            var lhs = try parseProduct()
            while true {
                if take("+") { lhs = .binary("+", lhs, try parseProduct()) }
                else if take("-") { lhs = .binary("-", lhs, try parseProduct()) }
                else { return lhs }
            }
        }

        mutating func parseProduct() throws(FormulaError) -> Expr {
            var lhs = try parseUnary()
            while true {
                if take("*") { lhs = .binary("*", lhs, try parseUnary()) }
                else if take("/") { lhs = .binary("/", lhs, try parseUnary()) }
                else if take("%") { lhs = .binary("%", lhs, try parseUnary()) }
                else { return lhs }
            }
        }

        mutating func nest() throws(FormulaError) {
            depth += 1
            if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth) levels") }
        }

        mutating func parseUnary() throws(FormulaError) -> Expr {
            try nest()
            defer { depth -= 1 }
            if take("-") { return .unary("-", try parseUnary()) }
            if take("!") || take("not") { return .unary("!", try parseUnary()) }
            let base = try parsePrimary()
            if take("^") { return .binary("^", base, try parseUnary()) }
            return base
        }

        mutating func parsePrimary() throws(FormulaError) -> Expr {
            skipSpace()
            guard position < text.count else { throw error("expected a number, name or '(' at the end") }
            let byte = text[position]
            if take("(") {
                try nest()
                defer { depth -= 1 }
                let inner = try parseOr()
                guard take(")") else { throw error("expected ')'") }
                return inner
            }
            if Self.isDigit(byte) || byte == 0x2E { return try parseNumber() }
            guard Self.isNameByte(byte), !Self.isDigit(byte) else { throw error("unexpected '\(rest)'") }
            let start = position
            while position < text.count, Self.isNameByte(text[position]) { position += 1 }
            let name = String(decoding: text[start..<position], as: UTF8.self)
            if take("(") {
                guard let arity = Formula.functions[name] else {
                    throw FormulaError(message: "unknown function '\(name)' in formula '\(source)'; expected one of "
                                       + Formula.functions.keys.sorted().joined(separator: ", "), offset: start)
                }
                var arguments: [Expr] = []
                if !take(")") {
                    repeat { arguments.append(try parseOr()) } while take(",")
                    guard take(")") else { throw error("expected ')' or ','") }
                }
                guard arity.contains(arguments.count) else {
                    throw FormulaError(message: "\(name)() takes \(arity.lowerBound == arity.upperBound ? "\(arity.lowerBound)" : "\(arity.lowerBound) to \(arity.upperBound)") arguments, not \(arguments.count), in formula '\(source)'", offset: start)
                }
                return .call(name, arguments, offset: start)
            }
            if let constant = Formula.constants[name] { return .number(constant) }
            return .variable(name, slot: -1, offset: start)
        }

        mutating func parseNumber() throws(FormulaError) -> Expr {
            let start = position
            while position < text.count, Self.isDigit(text[position]) || text[position] == 0x2E || text[position] == 0x5F {
                position += 1
            }
            if position < text.count, text[position] == 0x65 || text[position] == 0x45 {
                position += 1
                if position < text.count, text[position] == 0x2D || text[position] == 0x2B { position += 1 }
                while position < text.count, Self.isDigit(text[position]) { position += 1 }
            }
            let literal = String(decoding: text[start..<position], as: UTF8.self).replacingAll("_", with: "")
            guard let value = Double(literal) else {
                throw FormulaError(message: "bad number '\(literal)' in formula '\(source)'", offset: start)
            }
            return .number(value)
        }

        static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
        static func isNameByte(_ byte: UInt8) -> Bool {
            isDigit(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x5F
        }
    }
}

extension String {
    /// Every occurrence of `target` replaced (Foundation-free, so the codec stays portable).
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: Substring(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
