// Value encoding: every type, byte order, scale/offset, saturation, strings and bits, checked
// against hand-computed register contents (the agent must decode exactly these).

import Testing
@testable import Simulator

@Suite("Value encoding into registers")
struct ValueCodecTests {
    @Test("32-bit byte orders: the bytes A..D of 0x11223344 as they arrive on the wire")
    func orders32() {
        let value = Double(0x1122_3344)
        #expect(ValueCodec.encode(value, as: .uint32, order: .abcd) == [0x1122, 0x3344])
        #expect(ValueCodec.encode(value, as: .uint32, order: .badc) == [0x2211, 0x4433])
        #expect(ValueCodec.encode(value, as: .uint32, order: .cdab) == [0x3344, 0x1122])
        #expect(ValueCodec.encode(value, as: .uint32, order: .dcba) == [0x4433, 0x2211])
    }

    @Test("64-bit orders extend the rule: CDAB reverses all four words")
    func orders64() {
        // Values are doubles in the simulator, exact up to 2^53: 0x0011223344556677 fits.
        let value = Double(0x0011_2233_4455_6677)
        #expect(ValueCodec.encode(value, as: .uint64, order: .abcd) == [0x0011, 0x2233, 0x4455, 0x6677])
        #expect(ValueCodec.encode(value, as: .uint64, order: .cdab) == [0x6677, 0x4455, 0x2233, 0x0011])
        #expect(ValueCodec.encode(value, as: .uint64, order: .badc) == [0x1100, 0x3322, 0x5544, 0x7766])
        #expect(ValueCodec.encode(value, as: .uint64, order: .dcba) == [0x7766, 0x5544, 0x3322, 0x1100])
    }

    @Test("16-bit values use only the byte half of the order")
    func orders16() {
        #expect(ValueCodec.encode(0x1234, as: .uint16, order: .abcd) == [0x1234])
        #expect(ValueCodec.encode(0x1234, as: .uint16, order: .cdab) == [0x1234])
        #expect(ValueCodec.encode(0x1234, as: .uint16, order: .badc) == [0x3412])
        #expect(ValueCodec.encode(-2, as: .int16) == [0xFFFE])
    }

    @Test("IEEE 754 floats")
    func floats() {
        #expect(ValueCodec.encode(1.5, as: .float32) == [0x3FC0, 0x0000])
        #expect(ValueCodec.encode(230.0, as: .float32, order: .cdab) == [0x0000, 0x4366])
        #expect(ValueCodec.encode(-2.0, as: .float64) == [0xC000, 0, 0, 0])
    }

    @Test("Scale and offset: register = (value - offset) / scale, rounded")
    func scaling() {
        #expect(ValueCodec.encode(23.46, as: .int16, scale: 0.1) == [235])
        #expect(ValueCodec.encode(-5.0, as: .int16, scale: 0.1) == [UInt16(bitPattern: -50)])
        #expect(ValueCodec.encode(20.0, as: .uint16, scale: 0.5, offset: -40) == [120])
        #expect(ValueCodec.decode([120], as: .uint16, scale: 0.5, offset: -40) == 20)
    }

    @Test("Integers saturate at the type's limits instead of wrapping")
    func saturation() {
        #expect(ValueCodec.encode(40000, as: .int16) == [0x7FFF])
        #expect(ValueCodec.encode(-1, as: .uint16) == [0])
        #expect(ValueCodec.encode(1e30, as: .uint64) == [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF])
        #expect(ValueCodec.encode(-1e30, as: .int64) == [0x8000, 0, 0, 0])
        #expect(ValueCodec.encode(.nan, as: .int32) == [0, 0])
    }

    @Test("Round trips through every type and order", arguments: ByteOrder.allCases)
    func roundTrips(order: ByteOrder) {
        let cases: [(ValueType, Double)] = [(.int16, -12345), (.uint16, 54321), (.int32, -2_000_000_001), (.uint32, 4_000_000_000),
                                            (.int64, -9_000_000_000_123), (.uint64, 18_000_000_000_000), (.float32, 3.25),
                                            (.float64, -1234.5678)]
        for (type, value) in cases {
            let registers = ValueCodec.encode(value, as: type, order: order)
            #expect(registers.count == type.width)
            #expect(ValueCodec.decode(registers, as: type, order: order) == value, "\(type.name) \(order.rawValue)")
        }
    }

    @Test("Strings: two ASCII characters per register, padded with NUL, byte-swapped orders swap them")
    func strings() {
        #expect(ValueCodec.encode(text: "IMM-1", registers: 4) == [0x494D, 0x4D2D, 0x3100, 0x0000])
        #expect(ValueCodec.encode(text: "AB", registers: 1, order: .badc) == [0x4241])
        #expect(ValueCodec.encode(text: "TOO LONG", registers: 2) == [0x544F, 0x4F20])
        #expect(ValueCodec.decodeText([0x494D, 0x4D2D, 0x3100, 0x0000]) == "IMM-1")
        #expect(ValueCodec.encode(text: "°C", registers: 1) == [0x3F43])
    }
}
