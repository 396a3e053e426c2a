import Foundation
import Modbus
import Testing
import TestSupport

/// Our libmodbus wrapper against a third-party server (pymodbus, Tests/peers/pymodbus_server.py).
@Suite("Modbus client against pymodbus", .serialized)
final class ClientAgainstPymodbusTests {
    let server: PymodbusServer
    let client: ModbusClient

    init() throws {
        server = try PymodbusServer()
        client = try ModbusClient(host: "127.0.0.1", port: server.port)
        client.setResponseTimeout(milliseconds: 2000)
        try client.connect()
    }

    deinit {
        client.close()
        server.stop()
    }

    @Test func holdingRegisters() throws {
        try client.setUnit(1)
        #expect(try client.readRegisters(.holdingRegisters, address: 0, count: 5) == [1000, 1001, 1002, 1003, 1004])
        #expect(try client.readRegisters(.holdingRegisters, address: 95, count: 3) == [1095, 1096, 1097])
    }

    @Test func inputRegistersCoilsAndDiscreteInputs() throws {
        try client.setUnit(1)
        #expect(try client.readRegisters(.inputRegisters, address: 2, count: 3) == [2002, 2003, 2004])
        #expect(try client.readBits(.coils, address: 0, count: 7) == [true, false, false, true, false, false, true])
        #expect(try client.readBits(.discreteInputs, address: 0, count: 4) == [false, true, false, true])
    }

    @Test func unitIdSelectsTheSlave() throws {
        try client.setUnit(2)
        #expect(try client.readRegisters(.holdingRegisters, address: 0, count: 2) == [5000, 5001])
    }

    @Test func exceptionIsClassified() throws {
        try client.setUnit(1)
        #expect(throws: ModbusError.exception(code: 2)) { try client.readRegisters(.holdingRegisters, address: 500, count: 2) }
        // The connection survives an exception answer.
        #expect(try client.readRegisters(.holdingRegisters, address: 1, count: 1) == [1001])
    }

    @Test func writeThenRead() throws {
        try client.setUnit(2)
        try client.writeRegisters(address: 3, values: [42])
        try client.writeRegisters(address: 4, values: [7, 8])
        #expect(try client.readRegisters(.holdingRegisters, address: 3, count: 3) == [42, 7, 8])
        try client.setUnit(1)
        try client.writeCoil(address: 1, value: true)
        #expect(try client.readBits(.coils, address: 1, count: 1) == [true])
    }

    @Test func argumentsOutsideTheProtocolAreRefusedBeforeSending() {
        #expect(throws: ModbusError.self) { try client.readRegisters(.holdingRegisters, address: 0, count: 126) }
        #expect(throws: ModbusError.self) { try client.readRegisters(.coils, address: 0, count: 1) }
        #expect(throws: ModbusError.self) { try client.readBits(.coils, address: 65535, count: 2) }
    }
}

@Suite("Modbus client faults")
struct ClientFaultTests {
    @Test func refusedConnection() throws {
        let port = TestSupport.freeTCPPort()
        let client = try ModbusClient(host: "127.0.0.1", port: port)
        client.setResponseTimeout(milliseconds: 500)
        #expect(throws: ModbusError.self) { try client.connect() }
        #expect(!client.isConnected)
        #expect(throws: ModbusError.connection("127.0.0.1:\(port): not connected")) { try client.readRegisters(.holdingRegisters, address: 0, count: 1) }
    }

    @Test func silentServerTimesOut() throws {
        let server = try RawTCPServer(.silent)
        defer { server.stop() }
        let client = try ModbusClient(host: "127.0.0.1", port: server.port)
        client.setResponseTimeout(milliseconds: 200)
        try client.connect()
        #expect(throws: ModbusError.timeout) { try client.readRegisters(.holdingRegisters, address: 0, count: 1) }
    }

    @Test func garbageIsABadResponse() throws {
        // A well-formed MBAP header with a wrong transaction id and function code, then junk.
        let server = try RawTCPServer(.reply([0x99, 0x99, 0, 0, 0, 5, 1, 0x2B, 0xDE, 0xAD, 0xBE]))
        defer { server.stop() }
        let client = try ModbusClient(host: "127.0.0.1", port: server.port)
        client.setResponseTimeout(milliseconds: 300)
        try client.connect()
        let error = try #require(throws: ModbusError.self) { try client.readRegisters(.holdingRegisters, address: 0, count: 1) }
        guard case .badResponse = error else {
            Issue.record("expected badResponse, got \(error)")
            return
        }
    }

    @Test func hangUpIsAConnectionError() throws {
        let server = try RawTCPServer(.hangUp)
        defer { server.stop() }
        let client = try ModbusClient(host: "127.0.0.1", port: server.port)
        client.setResponseTimeout(milliseconds: 500)
        try client.connect()
        let error = try #require(throws: ModbusError.self) { try client.readRegisters(.holdingRegisters, address: 0, count: 1) }
        guard case .connection = error else {
            Issue.record("expected a connection error, got \(error)")
            return
        }
        #expect(!client.isConnected, "the client closes a broken link so the poller reconnects")
    }
}
