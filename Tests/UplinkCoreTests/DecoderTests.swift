import Foundation
import Testing
@testable import UplinkCore

/// One vector from Fixtures/decode_vectors.json (made by make_decode_vectors.py with Python's
/// struct and pymodbus, not with our own encoder).
struct DecodeVector: Decodable, CustomTestStringConvertible, Sendable {
    var type: String
    var order: String
    var words: [UInt16]
    var expected: String
    var testDescription: String { "\(type) \(order) \(words) -> \(expected)" }

    static func all() throws -> [DecodeVector] {
        let url = try #require(Bundle.module.url(forResource: "decode_vectors", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode([DecodeVector].self, from: Data(contentsOf: url))
    }

    var dataType: DataType {
        if type.hasPrefix("string:"), let n = Int(type.dropFirst(7)) { return .string(registers: n) }
        return DataType.fixed(type) ?? .uint16
    }
}

@Suite("Decoding against independent vectors")
struct DecoderVectorTests {
    @Test("every type and byte order", arguments: try DecodeVector.all())
    func vector(_ v: DecodeVector) throws {
        let order = try #require(ByteOrder(rawValue: v.order))
        let value = try Decoder.decode(v.dataType, order: order, words: v.words[...]).get()
        switch value {
        case .int(let i): #expect(String(i) == v.expected)
        case .uint(let u): #expect(String(u) == v.expected)
        case .string(let s): #expect(s == v.expected)
        case .double(let d):
            switch v.expected {
            case "NaN": #expect(d.isNaN)
            case "Infinity": #expect(d == .infinity)
            case "-Infinity": #expect(d == -.infinity)
            default:
                let expected = try #require(Double(v.expected))
                if v.type == "float32" {
                    // Carried as the shortest decimal of the float32: the same float32, exactly.
                    #expect(Float(d) == Float(expected))
                    #expect(Double(Float(expected).description) == d)
                } else {
                    #expect(d == expected)
                }
                #expect(d.sign == expected.sign, "sign of zero")
            }
        case .bool: Issue.record("a numeric vector decoded as bool")
        }
    }

    @Test func vectorsCoverEveryTypeAndOrder() throws {
        let all = try DecodeVector.all()
        for type in ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"] {
            for order in ByteOrder.allCases {
                #expect(all.contains { $0.type == type && $0.order == order.rawValue }, "\(type) \(order)")
            }
        }
    }
}

@Suite("Decoding rules")
struct DecoderRuleTests {
    @Test(arguments: [(0, true), (1, true), (2, false), (3, true), (15, true), (14, false)])
    func bitOfRegister(bit: Int, expected: Bool) throws {
        // 0x800B = bits 15, 3, 1, 0 set.
        let value = try Decoder.decode(.bit(bit), order: .abcd, words: [0x800B]).get()
        #expect(value == .bool(expected))
    }

    @Test func shortInputIsAnErrorNotATrap() {
        #expect(throws: DecodeError.tooShort(needed: 4, got: 2)) { try Decoder.decode(.float64, order: .abcd, words: [1, 2]).get() }
        #expect(throws: DecodeError.tooShort(needed: 1, got: 0)) { try Decoder.decode(.int16, order: .abcd, words: []).get() }
    }

    @Test func stringStopsAtNulAndDropsPadding() throws {
        // "AB", "C\0", "ZZ": text ends at the NUL.
        #expect(try Decoder.decode(.string(registers: 3), order: .abcd, words: [0x4142, 0x4300, 0x5A5A]).get() == .string("ABC"))
        // Space and 0xFF padding.
        #expect(try Decoder.decode(.string(registers: 3), order: .abcd, words: [0x4142, 0x2020, 0xFFFF]).get() == .string("AB"))
    }

    @Test func stringWithControlBytesIsADecodeError() {
        #expect(throws: DecodeError.notASCII(byte: 0x07)) { try Decoder.decode(.string(registers: 1), order: .abcd, words: [0x4107]).get() }
    }

    @Test func scaleAndOffset() {
        #expect(Decoder.scaled(.int(-123), scale: 0.1, offset: 0) == .double(-12.3))
        #expect(Decoder.scaled(.uint(1000), scale: 0.01, offset: -5) == .double(5))
        #expect(Decoder.scaled(.uint(7), scale: 1, offset: 0) == .uint(7), "identity keeps integers exact")
        #expect(Decoder.scaled(.uint(2001), scale: 0.1, offset: 0) == .double(200.1), "decimal scales round like a person expects")
        #expect(Decoder.scaled(.int(-12345), scale: 0.001, offset: 0) == .double(-12.345))
        #expect(Decoder.scaled(.uint(3), scale: 2.5, offset: 0.5) == .double(8))
        #expect(Decoder.scaled(.bool(true), scale: 10, offset: 1) == .bool(true))
    }

    @Test func float32IsCarriedAsItsShortestDecimal() throws {
        // 220.46788f = 0x435C77C7
        let value = try Decoder.decode(.float32, order: .abcd, words: [0x435C, 0x77C7]).get()
        #expect(value == .double(220.46788))
    }

    @Test func uint64ExtremeStaysExact() throws {
        let max = try Decoder.decode(.uint64, order: .abcd, words: [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]).get()
        #expect(max == .uint(UInt64.max))
        let min = try Decoder.decode(.int64, order: .dcba, words: [0x0000, 0x0000, 0x0000, 0x0080]).get()
        #expect(min == .int(Int64.min))
    }

    @Test func signalIsDecodedAtItsOffsetInTheRequest() throws {
        let signal = Signal(name: "t", area: .holdingRegister, address: 12, type: .int16, scale: 0.1, offset: 0)
        let value = try Decoder.record(for: signal, base: 10, words: [0, 0, 0xFF38, 0]).get()
        #expect(value == .double(-20))
        #expect(throws: DecodeError.self) { try Decoder.record(for: signal, base: 13, words: [1]).get() }
    }

    @Test func bitAreaSignalReadsItsBit() throws {
        let signal = Signal(name: "c", area: .coil, address: 7, type: .bool)
        #expect(try Decoder.record(for: signal, base: 5, bits: [false, false, true]).get() == .bool(true))
        #expect(throws: DecodeError.self) { try Decoder.record(for: signal, base: 8, bits: [true]).get() }
    }
}

@Suite("JSON text")
struct JSONTextTests {
    @Test(arguments: [
        (Value.int(-5), "-5"), (.uint(UInt64.max), "18446744073709551615"), (.bool(false), "false"),
        (.double(2.5), "2.5"), (.double(3), "3"), (.double(.nan), "\"NaN\""), (.double(-.infinity), "\"-Infinity\""),
        (.string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\""), (.string("温度"), "\"温度\""),
    ])
    func values(_ value: Value, _ expected: String) {
        var out = ""
        JSONText.appendValue(value, to: &out)
        #expect(out == expected)
    }

    @Test func controlCharactersAreEscaped() {
        var out = ""
        JSONText.appendString("a\u{01}b", to: &out)
        #expect(out == "\"a\\u0001b\"")
    }

    @Test func nullForMissingValue() {
        var out = ""
        JSONText.appendValue(nil, to: &out)
        #expect(out == "null")
    }
}

@Suite("Quality codes")
struct QualityTests {
    @Test(arguments: [Quality.good, .timeout, .exception(2), .exception(11), .badResponse, .offline, .decodeError])
    func roundTrip(_ quality: Quality) {
        #expect(Quality(code: quality.code) == quality)
    }

    @Test func unknownCode() {
        #expect(Quality(code: "exception_x") == nil)
        #expect(Quality(code: "fine") == nil)
    }
}
