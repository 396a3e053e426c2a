import Foundation
import Testing
@testable import UplinkCore

/// The encoder is the decoder's inverse: checked against the independent decode vectors (made with
/// Python's struct and pymodbus), then the rules for writes: scale, bounds, types, areas.
@Suite("Encoding (value -> register words)")
struct EncoderVectorTests {
    @Test("every numeric vector encodes back to its words", arguments: try DecodeVector.all().filter { !$0.type.hasPrefix("string") })
    func numericVector(_ v: DecodeVector) throws {
        let order = try #require(ByteOrder(rawValue: v.order))
        let value = try Decoder.decode(v.dataType, order: order, words: v.words[...]).get()
        let words = try Encoder.words(value, type: v.dataType, order: order).get()
        if case .double(let d) = value, d.isNaN {
            // Any NaN payload reads back as NaN; the sign and quiet bit are the encoder's.
            let again = try Decoder.decode(v.dataType, order: order, words: words[...]).get()
            #expect(again.asDouble?.isNaN == true)
        } else {
            #expect(words == v.words, "\(value)")
        }
    }

    @Test("every string vector reads back as the same text", arguments: try DecodeVector.all().filter { $0.type.hasPrefix("string") })
    func stringVector(_ v: DecodeVector) throws {
        let order = try #require(ByteOrder(rawValue: v.order))
        let value = try Decoder.decode(v.dataType, order: order, words: v.words[...]).get()
        let words = try Encoder.words(value, type: v.dataType, order: order).get()
        #expect(words.count == v.dataType.width)
        #expect(try Decoder.decode(v.dataType, order: order, words: words[...]).get() == value)
    }

    @Test("integers from the expected text, not from the decoder", arguments: ["int16", "uint16", "int32", "uint32", "int64", "uint64"])
    func integersFromText(_ type: String) throws {
        for v in try DecodeVector.all() where v.type == type {
            let order = try #require(ByteOrder(rawValue: v.order))
            let value: Value = v.expected.hasPrefix("-") ? .int(try #require(Int64(v.expected))) : .uint(try #require(UInt64(v.expected)))
            #expect(try Encoder.words(value, type: v.dataType, order: order).get() == v.words, "\(v.testDescription)")
        }
    }
}

@Suite("Writes: what the platform may write and how")
struct EncoderWriteTests {
    func signal(_ type: DataType, area: Area = .holdingRegister, order: ByteOrder = .abcd, scale: Double = 1, offset: Double = 0,
                writable: WriteAccess? = .unbounded) -> Signal {
        Signal(name: "sp", area: area, address: 7, type: type, order: order, scale: scale, offset: offset, writable: writable)
    }

    @Test func scaledSetPointIsUnscaledAndRounded() throws {
        let setpoint = signal(.int16, scale: 0.1, writable: WriteAccess(min: 0, max: 400))
        #expect(try Encoder.write(.double(65.1), to: setpoint).get() == .registers(address: 7, words: [651]))
        #expect(try Encoder.write(.int(60), to: setpoint).get() == .registers(address: 7, words: [600]))
        #expect(try Encoder.write(.string("72.5"), to: setpoint).get() == .registers(address: 7, words: [725]))
        // Negative values in two's complement, offset undone first.
        let offsetSignal = signal(.int16, scale: 0.5, offset: -40)
        #expect(try Encoder.write(.double(-50), to: offsetSignal).get() == .registers(address: 7, words: [UInt16(bitPattern: -20)]))
        // Decoding what was written gives the value back.
        let words: [UInt16] = [651]
        #expect(Decoder.record(for: setpoint, base: 7, words: words) == .success(.double(65.1)))
    }

    @Test func boundsAreInclusiveAndSayWhy() throws {
        let setpoint = signal(.int16, scale: 0.1, writable: WriteAccess(min: 0, max: 400))
        #expect((try? Encoder.write(.double(400), to: setpoint).get()) != nil)
        #expect((try? Encoder.write(.double(0), to: setpoint).get()) != nil)
        let error = try #require(Encoder.write(.double(400.5), to: setpoint).failure)
        #expect(error == .outOfBounds(signal: "sp", value: "400.5", min: 0, max: 400))
        #expect(error.description.contains("outside the allowed range of 'sp' (0 to 400)"))
        #expect(Encoder.write(.int(-1), to: setpoint).failure == .outOfBounds(signal: "sp", value: "-1", min: 0, max: 400))
    }

    @Test func typeRangeIsCheckedAfterScaling() throws {
        let tenths = signal(.int16, scale: 0.1)
        let error = try #require(Encoder.write(.double(3300), to: tenths).failure)
        guard case .notRepresentable(_, let value, let type, let range) = error else { Issue.record("\(error)"); return }
        #expect(value == "3300" && type == "int16")
        #expect(range.hasPrefix("-3276.8 to 3276.7"), "\(range)")
        #expect(Encoder.write(.int(65536), to: signal(.uint16)).failure != nil)
        #expect(Encoder.write(.int(-1), to: signal(.uint32)).failure != nil)
        #expect(try Encoder.write(.uint(UInt64.max), to: signal(.uint64)).get() == .registers(address: 7, words: [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]))
        #expect(Encoder.write(.double(1e40), to: signal(.float32)).failure != nil)
    }

    @Test func wholeNumbersForIntegersWithoutScale() throws {
        #expect(Encoder.write(.double(3.5), to: signal(.int16)).failure == .notWhole(signal: "sp", value: "3.5", type: "int16"))
        #expect(try Encoder.write(.double(3), to: signal(.int16)).get() == .registers(address: 7, words: [3]))
    }

    @Test func floatsInEveryOrder() throws {
        for order in ByteOrder.allCases {
            let s = signal(.float32, order: order)
            let op = try Encoder.write(.double(220.46788), to: s).get()
            guard case .registers(_, let words) = op else { Issue.record("\(op)"); continue }
            #expect(Decoder.record(for: s, base: 7, words: words) == .success(.double(220.46788)), "\(order)")
        }
        // NaN is a float value, unless bounds are set.
        #expect((try? Encoder.write(.double(.nan), to: signal(.float64)).get()) != nil)
        #expect(Encoder.write(.double(.nan), to: signal(.float64, writable: WriteAccess(min: 0, max: 1))).failure == .notFinite(signal: "sp"))
        #expect(Encoder.write(.double(.infinity), to: signal(.int32)).failure == .notFinite(signal: "sp"))
    }

    @Test func coilsBitsAndText() throws {
        #expect(try Encoder.write(.bool(true), to: signal(.bool, area: .coil)).get() == .coil(address: 7, value: true))
        #expect(try Encoder.write(.int(0), to: signal(.bool, area: .coil)).get() == .coil(address: 7, value: false))
        #expect(try Encoder.write(.string("on"), to: signal(.bool, area: .coil)).get() == .coil(address: 7, value: true))
        #expect(try Encoder.write(.bool(true), to: signal(.bit(3))).get() == .registerBit(address: 7, bit: 3, value: true))
        #expect(Encoder.write(.int(2), to: signal(.bool, area: .coil)).failure != nil)
        #expect(try Encoder.write(.string("AB C"), to: signal(.string(registers: 3))).get() == .registers(address: 7, words: [0x4142, 0x2043, 0]))
        #expect(try Encoder.write(.string("AB"), to: signal(.string(registers: 1), order: .badc)).get() == .registers(address: 7, words: [0x4241]))
        #expect(Encoder.write(.string("ABCDE"), to: signal(.string(registers: 2))).failure != nil)
        #expect(Encoder.write(.string("Ä"), to: signal(.string(registers: 2))).failure != nil)
        #expect(Encoder.write(.int(5), to: signal(.string(registers: 2))).failure == .wrongKind(signal: "sp", expected: "text", got: "the number 5"))
    }

    @Test func refusedWithoutPermissionOrOnReadOnlyAreas() throws {
        let readOnly = signal(.uint16, writable: nil)
        #expect(Encoder.write(.int(1), to: readOnly).failure == .notWritable(signal: "sp"))
        #expect(Encoder.write(.int(1), to: readOnly).failure?.description.contains("writable: true") == true)
        #expect(Encoder.write(.int(1), to: signal(.uint16, area: .inputRegister)).failure == .readOnlyArea(signal: "sp", area: .inputRegister))
        #expect(Encoder.write(.bool(true), to: signal(.bool, area: .discreteInput)).failure == .readOnlyArea(signal: "sp", area: .discreteInput))
        #expect(Encoder.write(.bool(true), to: signal(.uint16)).failure == .wrongKind(signal: "sp", expected: "a number", got: "the boolean true"))
    }

    @Test func packIsTheInverseOfRawForEveryOrder() {
        let raw: UInt64 = 0x0102_0304_0506_0708
        for order in ByteOrder.allCases {
            for count in [1, 2, 4] {
                let value = count == 4 ? raw : raw & ((1 << (16 * UInt64(count))) - 1)
                let words = Encoder.pack(value, count: count, order)
                #expect(Decoder.raw(words[...], count, order) == value, "\(order) \(count)")
            }
        }
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
