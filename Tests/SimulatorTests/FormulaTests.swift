import Testing
@testable import Simulator

@Suite("Formulas")
struct FormulaTests {
    func value(_ text: String, _ variables: [String: Double] = [:]) throws -> Double {
        let names = Array(variables.keys)
        let formula = try Formula(text).resolved { names.firstIndex(of: $0) }
        return formula.evaluate(names.map { variables[$0] ?? 0 })
    }

    @Test("Precedence, associativity and functions")
    func arithmetic() throws {
        #expect(try value("1 + 2 * 3") == 7)
        #expect(try value("(1 + 2) * 3") == 9)
        #expect(try value("10 - 4 - 3") == 3)
        #expect(try value("2 ^ 3 ^ 2") == 512)
        #expect(try value("-2 ^ 2") == -4)
        #expect(try value("7 % 4") == 3)
        #expect(try value("sqrt(16) + abs(-2) + max(1, 5, 3) + min(4, 2)") == 13)
        #expect(try value("clamp(120, 0, 100)") == 100)
        #expect(abs(try value("acos(0.5) * 180 / pi") - 60) < 1e-9)
        #expect(try value("1.5e3 + 1_000") == 2500)
    }

    @Test("Comparisons and logic give 1 or 0; division by zero gives 0")
    func logic() throws {
        #expect(try value("a > 2 && b <= 1", ["a": 3, "b": 1]) == 1)
        #expect(try value("a > 2 and not b", ["a": 3, "b": 1]) == 0)
        #expect(try value("a == 1 || a != 1", ["a": 7]) == 1)
        #expect(try value("if(a >= 5, 10, 20)", ["a": 5]) == 10)
        #expect(try value("!a", ["a": 0]) == 1)
        #expect(try value("x / 0", ["x": 5]) == 0)
    }

    @Test("Names are resolved: an unknown name is an error that points at it")
    func unknownName() {
        #expect(throws: FormulaError(message: "unknown name 'temprature' in formula 'temprature * 2'", offset: 0)) {
            _ = try Formula("temprature * 2").resolved { _ in nil }
        }
        #expect(throws: FormulaError(message: "unexpected '* 2' in formula 'a + * 2'", offset: 4)) {
            _ = try Formula("a + * 2")
        }
        #expect(throws: FormulaError.self) { _ = try Formula("max(1)") }
        #expect(throws: FormulaError.self) { _ = try Formula("frobnicate(1)") }
        #expect(throws: FormulaError.self) { _ = try Formula("(1 + 2") }
        #expect(throws: FormulaError.self) { _ = try Formula("") }
    }

    @Test("Words are not taken apart: 'order' is a name, not 'or' + 'der'")
    func wordBoundaries() throws {
        #expect(try value("order + android", ["order": 2, "android": 3]) == 5)
        #expect(try Formula("notch and origin").variableNames == ["notch", "origin"])
    }
}
