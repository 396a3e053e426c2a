// The Modbus application layer (PDU) as a server sees it: parse a request, answer it from a data
// model, or answer with an exception. Pure and total: any byte sequence gives a response or a
// typed error, never a trap, because masters on a plant network send anything (and this code is
// fuzzed).

/// The function codes the simulator serves (Modbus Application Protocol v1.1b3, section 6).
public enum FunctionCode: UInt8, Sendable, CaseIterable {
    case readCoils = 1
    case readDiscreteInputs = 2
    case readHoldingRegisters = 3
    case readInputRegisters = 4
    case writeSingleCoil = 5
    case writeSingleRegister = 6
    case writeMultipleCoils = 15
    case writeMultipleRegisters = 16
}

/// Modbus exception codes a server answers with (function code | 0x80, then this code).
public enum ExceptionCode: UInt8, Error, Sendable, CaseIterable, Hashable {
    case illegalFunction = 1
    case illegalDataAddress = 2
    case illegalDataValue = 3
    case serverDeviceFailure = 4
    case acknowledge = 5
    case serverDeviceBusy = 6
    case gatewayPathUnavailable = 0x0A
    case gatewayTargetFailedToRespond = 0x0B

    /// Names accepted in profiles and on the control interface.
    public var name: String {
        switch self {
        case .illegalFunction: "illegal_function"
        case .illegalDataAddress: "illegal_address"
        case .illegalDataValue: "illegal_value"
        case .serverDeviceFailure: "device_failure"
        case .acknowledge: "acknowledge"
        case .serverDeviceBusy: "busy"
        case .gatewayPathUnavailable: "gateway_path_unavailable"
        case .gatewayTargetFailedToRespond: "gateway_target_failed"
        }
    }

    public static func named(_ name: String) -> ExceptionCode? {
        if let number = UInt8(name) { return ExceptionCode(rawValue: number) }
        return allCases.first { $0.name == name }
    }
}

/// The four Modbus data areas.
public enum DataArea: String, Sendable, CaseIterable, Hashable {
    case coil = "coil"
    case discreteInput = "discrete"
    case holding = "holding"
    case input = "input"

    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    public var holdsBits: Bool { self == .coil || self == .discreteInput }

    /// Accepts the short and long names the agent config also accepts.
    public static func named(_ name: String) -> DataArea? {
        switch name.lowercased() {
        case "coil", "coils": .coil
        case "discrete", "discrete_input", "discrete_inputs": .discreteInput
        case "holding", "holding_register", "holding_registers": .holding
        case "input", "input_register", "input_registers": .input
        default: nil
        }
    }

    public static let acceptedNames = "coil, discrete, holding, input"
}

/// A parsed request PDU.
public struct ModbusRequest: Sendable, Equatable {
    public enum Operation: Sendable, Equatable {
        case read(DataArea, address: Int, count: Int)
        case writeBits(address: Int, values: [Bool])
        case writeRegisters(address: Int, values: [UInt16])
    }

    public var function: FunctionCode
    public var operation: Operation

    public init(function: FunctionCode, operation: Operation) {
        self.function = function
        self.operation = operation
    }
}

/// Why a request PDU was refused: the function code byte to echo (with 0x80 set) and the code.
public struct ModbusRequestError: Error, Sendable, Equatable {
    public var functionByte: UInt8
    public var code: ExceptionCode

    public init(functionByte: UInt8, code: ExceptionCode) {
        self.functionByte = functionByte
        self.code = code
    }

    /// The exception response PDU.
    public var responsePDU: [UInt8] { ModbusPDU.exception(functionByte: functionByte, code: code) }
}

/// Where the registers and bits come from when answering requests.
public protocol ModbusDataModel {
    /// Bits of a coil or discrete-input range, or an exception (usually illegal data address).
    func readBits(_ area: DataArea, address: Int, count: Int) throws(ExceptionCode) -> [Bool]
    /// Registers of a holding or input range.
    func readRegisters(_ area: DataArea, address: Int, count: Int) throws(ExceptionCode) -> [UInt16]
    /// Writes coils; all or nothing.
    mutating func writeCoils(address: Int, values: [Bool]) throws(ExceptionCode)
    /// Writes holding registers; all or nothing.
    mutating func writeHoldingRegisters(address: Int, values: [UInt16]) throws(ExceptionCode)
}

/// Encoding and decoding of request and response PDUs.
public enum ModbusPDU {
    /// Protocol limits on quantities (Modbus Application Protocol v1.1b3).
    public static let maxReadBits = 2000
    public static let maxReadRegisters = 125
    public static let maxWriteBits = 1968
    public static let maxWriteRegisters = 123
    /// A PDU is at most 253 bytes (256-byte RTU ADU less address and CRC).
    public static let maxLength = 253

    /// Parses a request PDU (function code first). Never traps: any input yields a request or an error.
    public static func parseRequest(_ pdu: some Collection<UInt8>) -> Result<ModbusRequest, ModbusRequestError> {
        let bytes = Array(pdu)
        guard let functionByte = bytes.first else {
            return .failure(ModbusRequestError(functionByte: 0, code: .illegalFunction))
        }
        guard let function = FunctionCode(rawValue: functionByte) else {
            return .failure(ModbusRequestError(functionByte: functionByte, code: .illegalFunction))
        }
        func fail(_ code: ExceptionCode) -> Result<ModbusRequest, ModbusRequestError> {
            .failure(ModbusRequestError(functionByte: functionByte, code: code))
        }
        func word(_ index: Int) -> Int { Int(bytes[index]) << 8 | Int(bytes[index + 1]) }

        switch function {
        case .readCoils, .readDiscreteInputs, .readHoldingRegisters, .readInputRegisters:
            guard bytes.count == 5 else { return fail(.illegalDataValue) }
            let address = word(1), count = word(3)
            let area: DataArea, limit: Int
            switch function {
            case .readCoils: (area, limit) = (.coil, maxReadBits)
            case .readDiscreteInputs: (area, limit) = (.discreteInput, maxReadBits)
            case .readHoldingRegisters: (area, limit) = (.holding, maxReadRegisters)
            default: (area, limit) = (.input, maxReadRegisters)
            }
            guard (1...limit).contains(count) else { return fail(.illegalDataValue) }
            guard address + count <= 0x10000 else { return fail(.illegalDataAddress) }
            return .success(ModbusRequest(function: function, operation: .read(area, address: address, count: count)))

        case .writeSingleCoil:
            guard bytes.count == 5 else { return fail(.illegalDataValue) }
            let value = word(3)
            guard value == 0xFF00 || value == 0x0000 else { return fail(.illegalDataValue) }
            return .success(ModbusRequest(function: function, operation: .writeBits(address: word(1), values: [value == 0xFF00])))

        case .writeSingleRegister:
            guard bytes.count == 5 else { return fail(.illegalDataValue) }
            return .success(ModbusRequest(function: function,
                                          operation: .writeRegisters(address: word(1), values: [UInt16(word(3))])))

        case .writeMultipleCoils:
            guard bytes.count >= 6 else { return fail(.illegalDataValue) }
            let address = word(1), count = word(3), byteCount = Int(bytes[5])
            guard (1...maxWriteBits).contains(count), byteCount == (count + 7) / 8,
                  bytes.count == 6 + byteCount else { return fail(.illegalDataValue) }
            guard address + count <= 0x10000 else { return fail(.illegalDataAddress) }
            let values = (0..<count).map { bytes[6 + $0 / 8] & (1 << UInt8($0 % 8)) != 0 }
            return .success(ModbusRequest(function: function, operation: .writeBits(address: address, values: values)))

        case .writeMultipleRegisters:
            guard bytes.count >= 6 else { return fail(.illegalDataValue) }
            let address = word(1), count = word(3), byteCount = Int(bytes[5])
            guard (1...maxWriteRegisters).contains(count), byteCount == count * 2,
                  bytes.count == 6 + byteCount else { return fail(.illegalDataValue) }
            guard address + count <= 0x10000 else { return fail(.illegalDataAddress) }
            let values = (0..<count).map { UInt16(word(6 + 2 * $0)) }
            return .success(ModbusRequest(function: function, operation: .writeRegisters(address: address, values: values)))
        }
    }

    /// Encodes a request PDU (used by the load generator and tests).
    public static func encode(_ request: ModbusRequest) -> [UInt8] {
        var out: [UInt8] = [request.function.rawValue]
        func put(_ value: Int) { out.append(UInt8((value >> 8) & 0xFF)); out.append(UInt8(value & 0xFF)) }
        switch (request.function, request.operation) {
        case (_, .read(_, let address, let count)):
            put(address); put(count)
        case (.writeSingleCoil, .writeBits(let address, let values)):
            put(address); put(values.first == true ? 0xFF00 : 0)
        case (.writeSingleRegister, .writeRegisters(let address, let values)):
            put(address); put(Int(values.first ?? 0))
        case (_, .writeBits(let address, let values)):
            put(address); put(values.count)
            out.append(UInt8(truncatingIfNeeded: (values.count + 7) / 8))
            out.append(contentsOf: packBits(values))
        case (_, .writeRegisters(let address, let values)):
            put(address); put(values.count)
            out.append(UInt8(truncatingIfNeeded: values.count * 2))
            for value in values { put(Int(value)) }
        }
        return out
    }

    /// The exception response PDU for a function byte.
    public static func exception(functionByte: UInt8, code: ExceptionCode) -> [UInt8] {
        [functionByte | 0x80, code.rawValue]
    }

    /// Packs bits LSB first, as read responses and FC15 carry them.
    public static func packBits(_ bits: [Bool]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: (bits.count + 7) / 8)
        for (index, bit) in bits.enumerated() where bit {
            bytes[index / 8] |= 1 << UInt8(index % 8)
        }
        return bytes
    }

    /// Builds the normal response to a request from the data model, or the exception response.
    public static func respond(to request: ModbusRequest, model: inout some ModbusDataModel) -> [UInt8] {
        let functionByte = request.function.rawValue
        do {
            switch request.operation {
            case .read(let area, let address, let count):
                if area.holdsBits {
                    let bits = try model.readBits(area, address: address, count: count)
                    let packed = packBits(bits)
                    return [functionByte, UInt8(truncatingIfNeeded: packed.count)] + packed
                }
                let registers = try model.readRegisters(area, address: address, count: count)
                var out: [UInt8] = [functionByte, UInt8(truncatingIfNeeded: registers.count * 2)]
                out.reserveCapacity(2 + registers.count * 2)
                for register in registers {
                    out.append(UInt8(register >> 8))
                    out.append(UInt8(register & 0xFF))
                }
                return out
            case .writeBits(let address, let values):
                try model.writeCoils(address: address, values: values)
            case .writeRegisters(let address, let values):
                try model.writeHoldingRegisters(address: address, values: values)
            }
        } catch {
            return exception(functionByte: functionByte, code: error)
        }
        // Write responses echo the address and the value (single) or the quantity (multiple).
        return Array(encode(request).prefix(5))
    }

    /// Parses and answers a request PDU in one step: what a server does with every frame.
    public static func handle(_ pdu: some Collection<UInt8>, model: inout some ModbusDataModel) -> [UInt8] {
        switch parseRequest(pdu) {
        case .success(let request): respond(to: request, model: &model)
        case .failure(let error): error.responsePDU
        }
    }
}

/// A plain in-memory data model: every address below each area's size is readable and writable.
/// The simulated machines use their own model (with read-only registers); this one serves tests,
/// fuzzing and the synthetic benchmark machines.
public struct RegisterBank: ModbusDataModel, Sendable, Equatable {
    public var coils: [Bool]
    public var discreteInputs: [Bool]
    public var holding: [UInt16]
    public var input: [UInt16]

    public init(coils: Int = 0, discreteInputs: Int = 0, holding: Int = 0, input: Int = 0) {
        self.coils = Array(repeating: false, count: coils)
        self.discreteInputs = Array(repeating: false, count: discreteInputs)
        self.holding = Array(repeating: 0, count: holding)
        self.input = Array(repeating: 0, count: input)
    }

    public func size(of area: DataArea) -> Int {
        switch area {
        case .coil: coils.count
        case .discreteInput: discreteInputs.count
        case .holding: holding.count
        case .input: input.count
        }
    }

    /// Whether `count` units from `address` lie inside the area.
    public func contains(_ area: DataArea, address: Int, count: Int) -> Bool {
        address >= 0 && count >= 0 && address + count <= size(of: area)
    }

    public func readBits(_ area: DataArea, address: Int, count: Int) throws(ExceptionCode) -> [Bool] {
        guard area.holdsBits, contains(area, address: address, count: count) else { throw .illegalDataAddress }
        return Array((area == .coil ? coils : discreteInputs)[address..<address + count])
    }

    public func readRegisters(_ area: DataArea, address: Int, count: Int) throws(ExceptionCode) -> [UInt16] {
        guard !area.holdsBits, contains(area, address: address, count: count) else { throw .illegalDataAddress }
        return Array((area == .holding ? holding : input)[address..<address + count])
    }

    public mutating func writeCoils(address: Int, values: [Bool]) throws(ExceptionCode) {
        guard contains(.coil, address: address, count: values.count) else { throw .illegalDataAddress }
        coils.replaceSubrange(address..<address + values.count, with: values)
    }

    public mutating func writeHoldingRegisters(address: Int, values: [UInt16]) throws(ExceptionCode) {
        guard contains(.holding, address: address, count: values.count) else { throw .illegalDataAddress }
        holding.replaceSubrange(address..<address + values.count, with: values)
    }
}
