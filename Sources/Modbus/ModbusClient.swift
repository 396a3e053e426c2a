/// Modbus: a thin Swift layer over libmodbus' client (master) side, TCP and RTU.
///
/// Guarantees: no libmodbus type, pointer or errno escapes this module; every failure is a typed
/// `ModbusError` classified at the failing call (errno is read right there, PITFALLS G8); a
/// `ModbusClient` owns its context and frees it exactly once. Every call blocks up to the
/// response timeout, so a client belongs to one dedicated thread (it is deliberately not
/// `Sendable`) and must never run on the Swift cooperative pool (PITFALLS G15).
import CModbus
#if canImport(Glibc)
import Glibc
#endif

/// The four tables a Modbus server exposes.
public enum ModbusTable: Sendable, Hashable {
    case coils, discreteInputs, holdingRegisters, inputRegisters
}

/// Why a Modbus call failed, classified for the poller's quality and retry decisions.
public enum ModbusError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No answer within the response timeout.
    case timeout
    /// The server answered with exception `code` (1 illegal function, 2 illegal data address, ...).
    case exception(code: UInt8)
    /// The answer was malformed (bad CRC, length, unit id, function or transaction id).
    case badResponse(String)
    /// The link is down or could not be opened; reconnect (with backoff) before the next request.
    case connection(String)
    /// The arguments can never work (bad address, count, serial settings).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .timeout: "no response within the timeout"
        case .exception(let code): "exception \(code) (\(Self.exceptionName(code)))"
        case .badResponse(let why): "invalid response: \(why)"
        case .connection(let why): "connection failed: \(why)"
        case .invalidArgument(let why): "invalid request: \(why)"
        }
    }

    /// The standard names of the Modbus exception codes.
    public static func exceptionName(_ code: UInt8) -> String {
        switch code {
        case 1: "illegal function"
        case 2: "illegal data address"
        case 3: "illegal data value"
        case 4: "server device failure"
        case 5: "acknowledge"
        case 6: "server device busy"
        case 8: "memory parity error"
        case 10: "gateway path unavailable"
        case 11: "gateway target device failed to respond"
        default: "unknown exception"
        }
    }

    /// Classifies an errno captured right after a failing libmodbus call.
    static func from(errno code: Int32) -> ModbusError {
        let text = String(cString: modbus_strerror(code))
        let base = Int32(MODBUS_ENOBASE)
        if code > base && code <= base + 11 { return .exception(code: UInt8(code - base)) }
        switch code {
        case ETIMEDOUT: return .timeout
        case uplink_embbadcrc, uplink_embbaddata, uplink_embbadexc, uplink_embmdata, uplink_embbadslave, uplink_embunkexc:
            return .badResponse(text)
        case EINVAL: return .invalidArgument(text)
        default: return .connection(text)
        }
    }
}

/// Serial line parity.
public enum SerialParity: Sendable, Hashable {
    case none, even, odd
    var letter: CChar {
        switch self {
        case .none: CChar(UInt8(ascii: "N"))
        case .even: CChar(UInt8(ascii: "E"))
        case .odd: CChar(UInt8(ascii: "O"))
        }
    }
}

/// A Modbus master connection to one TCP server or one serial line.
///
/// On a serial line one client serves every slave on the bus: set `unit` before each request.
public final class ModbusClient {
    private let context: OpaquePointer
    /// `host:port` or the serial device path, for messages.
    public let endpoint: String
    private let isTCP: Bool
    public private(set) var isConnected = false

    /// A client for Modbus TCP. Nothing is sent until `connect()`.
    public init(host: String, port: Int) throws(ModbusError) {
        guard (1...65535).contains(port) else { throw .invalidArgument("port \(port) is outside 1...65535") }
        guard let ctx = modbus_new_tcp_pi(host, String(port)) else {
            throw .invalidArgument("cannot create a TCP context for \(host):\(port): \(String(cString: modbus_strerror(uplink_errno())))")
        }
        context = ctx
        endpoint = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        isTCP = true
    }

    /// A client for Modbus RTU on a serial device (or pseudo-terminal).
    public init(serialPort: String, baud: Int, parity: SerialParity, dataBits: Int, stopBits: Int) throws(ModbusError) {
        guard let ctx = modbus_new_rtu(serialPort, Int32(baud), parity.letter, Int32(dataBits), Int32(stopBits)) else {
            throw .invalidArgument("cannot use serial settings \(baud) \(dataBits)\(parity) \(stopBits) on \(serialPort): \(String(cString: modbus_strerror(uplink_errno())))")
        }
        context = ctx
        endpoint = serialPort
        isTCP = false
    }

    deinit {
        if isConnected { modbus_close(context) }
        modbus_free(context)
    }

    /// Opens the TCP connection or the serial port (the TCP connect waits up to the response timeout).
    public func connect() throws(ModbusError) {
        if isConnected { return }
        if modbus_connect(context) != 0 {
            let code = uplink_errno()
            throw .connection("\(endpoint): \(String(cString: modbus_strerror(code)))")
        }
        isConnected = true
    }

    /// Closes the connection; the next request needs `connect()` again.
    public func close() {
        guard isConnected else { return }
        modbus_close(context)
        isConnected = false
    }

    /// Drops any bytes still in flight (a late answer after a timeout must not be read as the next one).
    public func flush() {
        if isConnected { _ = modbus_flush(context) }
    }

    /// After a timeout or a malformed answer: makes sure the next answer read belongs to the next
    /// request. On TCP the connection is reopened (an answer arriving late, after any flush, would
    /// otherwise be read as the reply to the following request, and every later one, forever); on a
    /// serial line the input is flushed.
    public func resynchronize() throws(ModbusError) {
        guard isConnected else { return }
        if isTCP {
            close()
            try connect()
        } else {
            _ = modbus_flush(context)
        }
    }

    /// How long to wait for an answer. libmodbus rejects zero, so the minimum is 1 ms (PITFALLS G7).
    public func setResponseTimeout(milliseconds: Int) {
        let ms = max(1, milliseconds)
        _ = modbus_set_response_timeout(context, UInt32(ms / 1000), UInt32((ms % 1000) * 1000))
    }

    /// The unit (slave) id addressed by the following requests: 0...247 on RTU, 0...255 on TCP.
    public func setUnit(_ unit: Int) throws(ModbusError) {
        if modbus_set_slave(context, Int32(unit)) != 0 {
            throw .invalidArgument("unit id \(unit) is not valid on \(endpoint)")
        }
    }

    /// Reads `count` holding or input registers (function 3 or 4).
    public func readRegisters(_ table: ModbusTable, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        guard table == .holdingRegisters || table == .inputRegisters else {
            throw .invalidArgument("registers are read from holding or input registers")
        }
        guard (1...125).contains(count), address >= 0, address + count <= 65536 else {
            throw .invalidArgument("cannot read \(count) registers at \(address)")
        }
        try requireConnection()
        var words = [UInt16](repeating: 0, count: count)
        var failure: Int32 = 0
        let n = words.withUnsafeMutableBufferPointer { buffer -> Int32 in
            let rc = table == .holdingRegisters
                ? modbus_read_registers(context, Int32(address), Int32(count), buffer.baseAddress)
                : modbus_read_input_registers(context, Int32(address), Int32(count), buffer.baseAddress)
            if rc < 0 { failure = uplink_errno() }
            return rc
        }
        try check(n, expected: count, failure: failure)
        return words
    }

    /// Reads `count` coils or discrete inputs (function 1 or 2).
    public func readBits(_ table: ModbusTable, address: Int, count: Int) throws(ModbusError) -> [Bool] {
        guard table == .coils || table == .discreteInputs else {
            throw .invalidArgument("bits are read from coils or discrete inputs")
        }
        guard (1...2000).contains(count), address >= 0, address + count <= 65536 else {
            throw .invalidArgument("cannot read \(count) bits at \(address)")
        }
        try requireConnection()
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: Int32 = 0
        let n = bytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
            let rc = table == .coils
                ? modbus_read_bits(context, Int32(address), Int32(count), buffer.baseAddress)
                : modbus_read_input_bits(context, Int32(address), Int32(count), buffer.baseAddress)
            if rc < 0 { failure = uplink_errno() }
            return rc
        }
        try check(n, expected: count, failure: failure)
        return bytes.map { $0 != 0 }
    }

    /// Writes holding registers (function 6 for one, 16 for several).
    public func writeRegisters(address: Int, values: [UInt16]) throws(ModbusError) {
        guard (1...123).contains(values.count), address >= 0, address + values.count <= 65536 else {
            throw .invalidArgument("cannot write \(values.count) registers at \(address)")
        }
        try requireConnection()
        var failure: Int32 = 0
        let n = values.withUnsafeBufferPointer { buffer -> Int32 in
            let rc = values.count == 1
                ? modbus_write_register(context, Int32(address), buffer[0])
                : modbus_write_registers(context, Int32(address), Int32(values.count), buffer.baseAddress)
            if rc < 0 { failure = uplink_errno() }
            return rc
        }
        try check(n, expected: 1, failure: failure, countIsWritten: true)
    }

    /// Writes one coil (function 5).
    public func writeCoil(address: Int, value: Bool) throws(ModbusError) {
        guard (0...65535).contains(address) else { throw .invalidArgument("cannot write a coil at \(address)") }
        try requireConnection()
        let rc = modbus_write_bit(context, Int32(address), value ? 1 : 0)
        let failure = rc < 0 ? uplink_errno() : 0
        try check(rc, expected: 1, failure: failure, countIsWritten: true)
    }

    private func requireConnection() throws(ModbusError) {
        if !isConnected { throw .connection("\(endpoint): not connected") }
    }

    private func check(_ rc: Int32, expected: Int, failure: Int32, countIsWritten: Bool = false) throws(ModbusError) {
        if rc < 0 {
            let error = ModbusError.from(errno: failure)
            if case .connection = error { close() }
            throw error
        }
        if !countIsWritten && Int(rc) != expected {
            throw .badResponse("expected \(expected) values, got \(rc)")
        }
    }
}
