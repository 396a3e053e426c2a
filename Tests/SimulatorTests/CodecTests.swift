// The pure codec: PDUs, MBAP and RTU framing, CRC. Byte-exact expectations from the Modbus
// specification, plus a seeded fuzz run proving no input traps.

import Testing
@testable import Simulator

@Suite("Modbus PDU codec and framing")
struct CodecTests {
    func bank() -> RegisterBank {
        var bank = RegisterBank(coils: 20, discreteInputs: 20, holding: 200, input: 200)
        for index in 0..<200 {
            bank.holding[index] = UInt16(index * 3)
            bank.input[index] = UInt16(1000 + index)
        }
        bank.coils[0] = true
        bank.coils[2] = true
        bank.coils[9] = true
        bank.discreteInputs[1] = true
        return bank
    }

    @Test("FC3 reads holding registers, big-endian, with the right byte count")
    func readHolding() {
        var model = bank()
        let response = ModbusPDU.handle([0x03, 0x00, 0x02, 0x00, 0x03], model: &model)
        #expect(response == [0x03, 0x06, 0x00, 0x06, 0x00, 0x09, 0x00, 0x0C])
    }

    @Test("FC4 reads input registers")
    func readInput() {
        var model = bank()
        #expect(ModbusPDU.handle([0x04, 0x00, 0x00, 0x00, 0x01], model: &model) == [0x04, 0x02, 0x03, 0xE8])
    }

    @Test("FC1 and FC2 pack bits least significant first")
    func readBits() {
        var model = bank()
        // Coils 0, 2 and 9 set: first byte 0b0000_0101, second 0b0000_0010.
        #expect(ModbusPDU.handle([0x01, 0x00, 0x00, 0x00, 0x0A], model: &model) == [0x01, 0x02, 0x05, 0x02])
        #expect(ModbusPDU.handle([0x02, 0x00, 0x00, 0x00, 0x03], model: &model) == [0x02, 0x01, 0x02])
    }

    @Test("FC5, FC6, FC15, FC16 write and echo as the spec says")
    func writes() {
        var model = bank()
        #expect(ModbusPDU.handle([0x05, 0x00, 0x03, 0xFF, 0x00], model: &model) == [0x05, 0x00, 0x03, 0xFF, 0x00])
        #expect(model.coils[3])
        #expect(ModbusPDU.handle([0x06, 0x00, 0x07, 0x12, 0x34], model: &model) == [0x06, 0x00, 0x07, 0x12, 0x34])
        #expect(model.holding[7] == 0x1234)
        #expect(ModbusPDU.handle([0x0F, 0x00, 0x0A, 0x00, 0x03, 0x01, 0x05], model: &model) == [0x0F, 0x00, 0x0A, 0x00, 0x03])
        #expect(model.coils[10] && !model.coils[11] && model.coils[12])
        #expect(ModbusPDU.handle([0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0xAB, 0xCD, 0x00, 0x01], model: &model)
                == [0x10, 0x00, 0x01, 0x00, 0x02])
        #expect(model.holding[1] == 0xABCD && model.holding[2] == 1)
    }

    @Test("Refusals: unknown function 01, bad quantity 03, out of range 02, bad coil value 03")
    func exceptions() {
        var model = bank()
        #expect(ModbusPDU.handle([0x2B, 0x0E, 0x01, 0x00], model: &model) == [0xAB, 0x01])
        #expect(ModbusPDU.handle([0x03, 0x00, 0x00, 0x00, 0x7E], model: &model) == [0x83, 0x03])  // 126 registers
        #expect(ModbusPDU.handle([0x03, 0x00, 0x00, 0x00, 0x00], model: &model) == [0x83, 0x03])  // 0 registers
        #expect(ModbusPDU.handle([0x03, 0x00, 0xC7, 0x00, 0x02], model: &model) == [0x83, 0x02])  // 199..200 past 200
        #expect(ModbusPDU.handle([0x04, 0xFF, 0xFF, 0x00, 0x02], model: &model) == [0x84, 0x02])  // past 65535
        #expect(ModbusPDU.handle([0x05, 0x00, 0x00, 0x12, 0x34], model: &model) == [0x85, 0x03])
        #expect(ModbusPDU.handle([0x10, 0x00, 0x00, 0x00, 0x02, 0x03, 0x00, 0x00, 0x00], model: &model) == [0x90, 0x03])
        #expect(ModbusPDU.handle([0x0F, 0x00, 0x00, 0x00, 0x09, 0x01, 0xFF], model: &model) == [0x8F, 0x03])
        #expect(ModbusPDU.handle([0x03, 0x00], model: &model) == [0x83, 0x03])  // truncated request
        #expect(ModbusPDU.handle([UInt8](), model: &model) == [0x80, 0x01])
    }

    @Test("encode and parse are inverse for every function", arguments: [
        ModbusRequest(function: .readCoils, operation: .read(.coil, address: 5, count: 17)),
        ModbusRequest(function: .readDiscreteInputs, operation: .read(.discreteInput, address: 0, count: 2000)),
        ModbusRequest(function: .readHoldingRegisters, operation: .read(.holding, address: 65410, count: 125)),
        ModbusRequest(function: .readInputRegisters, operation: .read(.input, address: 30, count: 2)),
        ModbusRequest(function: .writeSingleCoil, operation: .writeBits(address: 9, values: [true])),
        ModbusRequest(function: .writeSingleRegister, operation: .writeRegisters(address: 1, values: [0xBEEF])),
        ModbusRequest(function: .writeMultipleCoils, operation: .writeBits(address: 3, values: [true, false, true, true, false, false, false, true, true])),
        ModbusRequest(function: .writeMultipleRegisters, operation: .writeRegisters(address: 100, values: [1, 2, 3, 65535])),
    ])
    func roundTrip(request: ModbusRequest) throws {
        let parsed = try ModbusPDU.parseRequest(ModbusPDU.encode(request)).get()
        #expect(parsed == request)
    }

    @Test("CRC-16/MODBUS matches the spec's example frame 01 03 00 00 00 0A -> C5 CD")
    func crc() {
        let frame = RTUFraming.encode(unit: 1, pdu: [0x03, 0x00, 0x00, 0x00, 0x0A])
        #expect(frame == [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD])
        #expect(RTUFraming.hasValidCRC(frame))
        var damaged = frame
        damaged[3] ^= 0x01
        #expect(!RTUFraming.hasValidCRC(damaged))
    }

    @Test("RTU request and response lengths come from the function code")
    func rtuLengths() {
        #expect(RTUFraming.requestLength([0x01]) == .needMore)
        #expect(RTUFraming.requestLength([0x01, 0x03]) == .bytes(8))
        #expect(RTUFraming.requestLength([0x01, 0x10, 0, 0, 0, 2]) == .needMore)
        #expect(RTUFraming.requestLength([0x01, 0x10, 0, 0, 0, 2, 4]) == .bytes(13))
        #expect(RTUFraming.requestLength([0x01, 0x2B, 0x0E]) == .unknown)
        #expect(RTUFraming.responseLength([0x01, 0x83, 0x02]) == .bytes(5))
        #expect(RTUFraming.responseLength([0x01, 0x03, 0x06]) == .bytes(11))
    }

    @Test("MBAP: whole frames, partial frames, and streams that are not Modbus")
    func mbap() {
        let frame = MBAP.encode(transactionID: 0x1234, unit: 7, pdu: [0x03, 0x00, 0x00, 0x00, 0x01])
        #expect(frame == [0x12, 0x34, 0x00, 0x00, 0x00, 0x06, 0x07, 0x03, 0x00, 0x00, 0x00, 0x01])
        guard case .frame(let header, let pdu, let consumed) = MBAP.scan(frame + [0x00, 0x01]) else {
            Issue.record("no frame found")
            return
        }
        #expect(header.transactionID == 0x1234 && header.unit == 7 && pdu == 7..<12 && consumed == 12)
        #expect(MBAP.scan(Array(frame.prefix(9))) == .needMore)
        #expect(MBAP.scan([0, 1, 0, 9, 0, 6, 1, 3]) == .invalid("protocol id 9, expected 0"))
        #expect(MBAP.scan([0, 1, 0, 0, 0x10, 0, 1]) == .invalid("MBAP length 4096, expected 2...254"))
        #expect(MBAP.scan([0, 1, 0, 0, 0, 1, 1]) == .invalid("MBAP length 1, expected 2...254"))
    }

    @Test("10,000 random inputs: the codec and framers never trap and always answer sensibly")
    func fuzz() {
        var random = SeededGenerator(seed: 2024)
        var model = bank()
        for round in 0..<10_000 {
            let length = Int(random.next() % 300)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            // Half the rounds start with a real function code, so the deeper paths get exercised too.
            if round % 2 == 0, !bytes.isEmpty { bytes[0] = [1, 2, 3, 4, 5, 6, 15, 16][Int(random.next() % 8)] }
            let response = ModbusPDU.handle(bytes, model: &model)
            #expect(!response.isEmpty)
            if let first = bytes.first {
                #expect(response[0] == first || response[0] == first | 0x80)
            }
            _ = MBAP.scan(bytes, from: Int(random.next() % 4))
            _ = RTUFraming.requestLength(bytes)
            _ = RTUFraming.responseLength(bytes)
            _ = RTUFraming.hasValidCRC(bytes)
        }
    }
}
