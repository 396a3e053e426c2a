// The two ways a PDU travels: the MBAP header on TCP, and address + CRC-16 on a serial line (RTU).
// Both are pure functions over byte buffers so the event loop stays a dumb byte pump and the
// framing can be tested (and fuzzed) without sockets.

/// The 7-byte Modbus TCP header.
public struct MBAPHeader: Sendable, Equatable {
    public var transactionID: UInt16
    public var protocolID: UInt16
    /// Bytes that follow the length field: the unit id plus the PDU.
    public var length: Int
    public var unit: UInt8

    public static let size = 7
}

public enum MBAP {
    /// What the front of a receive buffer holds.
    public enum Scan: Equatable, Sendable {
        /// A whole frame: its header, where its PDU lies in the buffer, and the bytes it spans.
        case frame(MBAPHeader, pdu: Range<Int>, consumed: Int)
        case needMore
        /// Not Modbus TCP; the stream can't be resynchronised, so the connection should close.
        case invalid(String)
    }

    /// Looks for one frame at `start` in `buffer`. Never traps.
    public static func scan(_ buffer: [UInt8], from start: Int = 0) -> Scan {
        let available = buffer.count - start
        guard start >= 0, available >= MBAPHeader.size else { return .needMore }
        let protocolID = UInt16(buffer[start + 2]) << 8 | UInt16(buffer[start + 3])
        let length = Int(buffer[start + 4]) << 8 | Int(buffer[start + 5])
        guard protocolID == 0 else { return .invalid("protocol id \(protocolID), expected 0") }
        guard (2...ModbusPDU.maxLength + 1).contains(length) else {
            return .invalid("MBAP length \(length), expected 2...\(ModbusPDU.maxLength + 1)")
        }
        guard available >= 6 + length else { return .needMore }
        let header = MBAPHeader(transactionID: UInt16(buffer[start]) << 8 | UInt16(buffer[start + 1]),
                                protocolID: protocolID, length: length, unit: buffer[start + 6])
        return .frame(header, pdu: (start + 7)..<(start + 6 + length), consumed: 6 + length)
    }

    /// A complete ADU: header with the right length, then the PDU.
    public static func encode(transactionID: UInt16, unit: UInt8, pdu: some Collection<UInt8>) -> [UInt8] {
        let length = pdu.count + 1
        var out: [UInt8] = [UInt8(transactionID >> 8), UInt8(transactionID & 0xFF), 0, 0,
                            UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF), unit]
        out.append(contentsOf: pdu)
        return out
    }
}

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
public enum CRC16 {
    private static let table: [UInt16] = (0..<256).map { index -> UInt16 in
        var crc = UInt16(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        return crc
    }

    public static func modbus(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0xFFFF
        for byte in bytes {
            crc = (crc >> 8) ^ table[Int((crc ^ UInt16(byte)) & 0xFF)]
        }
        return crc
    }
}

public enum RTUFraming {
    /// Smallest RTU frame: address, function, two CRC bytes.
    public static let minimumFrame = 4
    public static let maximumFrame = 256

    /// How long the request at the front of a buffer is, judged from its function code.
    public enum Length: Equatable, Sendable {
        case needMore
        case bytes(Int)
        /// A function code we can't size; only line silence can end this frame.
        case unknown
    }

    /// The length of the request frame starting at `start`. Never traps.
    public static func requestLength(_ buffer: [UInt8], from start: Int = 0) -> Length {
        let available = buffer.count - start
        guard start >= 0, available >= 2 else { return .needMore }
        switch buffer[start + 1] {
        case 1...6:
            return .bytes(8)
        case 15, 16:
            guard available >= 7 else { return .needMore }
            return .bytes(9 + Int(buffer[start + 6]))
        default:
            return .unknown
        }
    }

    /// The length of the response frame starting at `start` (for masters: tests and the benchmark).
    public static func responseLength(_ buffer: [UInt8], from start: Int = 0) -> Length {
        let available = buffer.count - start
        guard start >= 0, available >= 2 else { return .needMore }
        let function = buffer[start + 1]
        if function & 0x80 != 0 { return .bytes(5) }
        switch function {
        case 1...4:
            guard available >= 3 else { return .needMore }
            return .bytes(5 + Int(buffer[start + 2]))
        case 5, 6, 15, 16:
            return .bytes(8)
        default:
            return .unknown
        }
    }

    /// Whether a frame's last two bytes are the CRC of the rest.
    public static func hasValidCRC(_ frame: some Collection<UInt8>) -> Bool {
        let bytes = Array(frame)
        guard bytes.count >= minimumFrame else { return false }
        let crc = CRC16.modbus(bytes.dropLast(2))
        return bytes[bytes.count - 2] == UInt8(crc & 0xFF) && bytes[bytes.count - 1] == UInt8(crc >> 8)
    }

    /// Address, PDU, CRC.
    public static func encode(unit: UInt8, pdu: some Collection<UInt8>) -> [UInt8] {
        var out: [UInt8] = [unit]
        out.append(contentsOf: pdu)
        let crc = CRC16.modbus(out)
        out.append(UInt8(crc & 0xFF))
        out.append(UInt8(crc >> 8))
        return out
    }

    /// Seconds one character takes on the line: start bit, data bits, parity, stop bits.
    public static func characterTime(baud: Int, dataBits: Int = 8, parity: Bool = true, stopBits: Int = 1) -> Double {
        // Modbus over serial line v1.02: a character is 11 bits in RTU mode (8N2 or 8E1 / 8O1).
        // 8N1 lines really send 10, but masters and the spec budget 11, and so do we by default.
        let bits = 1 + dataBits + (parity ? 1 : 0) + stopBits
        return Double(bits) / Double(max(baud, 1))
    }

    /// The inter-frame silence (t3.5): 3.5 characters, fixed at 1.75 ms above 19200 baud.
    public static func frameSilence(baud: Int, characterTime: Double) -> Double {
        baud > 19200 ? 0.00175 : 3.5 * characterTime
    }
}
