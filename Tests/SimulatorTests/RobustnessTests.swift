// Bad masters: garbage, random PDUs, floods, masters that never read, too many connections. The
// simulator keeps serving everyone else. In-process servers on free ports (port 0).

import Foundation
import Synchronization
import Testing
@testable import Simulator

@Suite("Robustness against bad and greedy masters")
struct RobustnessTests {
    func server(_ extra: String = "") throws -> (SimulatorServer, Int) {
        let scenario = try ProfileLoader.load(yaml: """
        speed: 0
        machines:
          - include: \(Paths.simulator("temperature-controller.yaml"))
            name: oven
            tcp: { port: 0 }
            \(extra)
        """, file: "inline.yaml")
        let server = SimulatorServer(scenario: scenario)
        let endpoints = try server.start()
        return (server, endpoints.first?.port ?? 0)
    }

    /// One correct read of the set point, as a well-behaved master would do it.
    func readSetPoint(_ port: Int) throws -> Bool {
        let socket = try RawSocket(port: port, timeout: 10)
        return try socket.modbus([3, 0, 1, 0, 1])?.pdu == [3, 2, 0x07, 0x08]
    }

    @Test("a master sending garbage is disconnected; the others are served")
    func garbage() throws {
        let (server, port) = try server()
        defer { server.stop() }
        var random = SeededGenerator(seed: 11)
        let garbage = try RawSocket(port: port, timeout: 5)
        try garbage.send((0..<4096).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        #expect(garbage.isClosedByPeer())
        #expect(try readSetPoint(port))
    }

    @Test("random PDUs in valid frames: every one gets an answer or an exception, the connection stays up")
    func randomPDUs() throws {
        let (server, port) = try server()
        defer { server.stop() }
        let socket = try RawSocket(port: port, timeout: 5)
        var random = SeededGenerator(seed: 12)
        for transaction in 1...500 {
            let length = 1 + Int(random.next() % 40)
            var pdu = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if transaction % 2 == 0 { pdu[0] = [1, 2, 3, 4, 5, 6, 15, 16][Int(random.next() % 8)] }
            guard let answer = try socket.modbus(pdu, transaction: UInt16(transaction)) else {
                Issue.record("no answer to \(pdu)")
                return
            }
            #expect(answer.header.transactionID == UInt16(transaction))
            #expect(answer.pdu[0] == pdu[0] || answer.pdu[0] == pdu[0] | 0x80)
        }
        #expect(try readSetPoint(port))
    }

    @Test("a flood of pipelined requests from 8 connections does not starve a ninth master")
    func flood() throws {
        let (server, port) = try server()
        defer { server.stop() }
        let report = Mutex<LoadReport?>(nil)
        let flood = Thread {
            let result = LoadGenerator.run(targets: [LoadTarget(port: port)], connectionsPerTarget: 8, threads: 1,
                                           duration: 2, quantity: 5, registers: 5, depth: 16)
            report.withLock { $0 = result }
        }
        flood.start()
        usleep(200_000)
        let socket = try RawSocket(port: port, timeout: 10)
        for transaction in 1...50 {
            let answer = try socket.modbus([3, 0, 1, 0, 1], transaction: UInt16(transaction))
            #expect(answer?.pdu == [3, 2, 0x07, 0x08])
        }
        while report.withLock({ $0 }) == nil { usleep(20_000) }
        let flooded = try #require(report.withLock { $0 })
        #expect(flooded.responses > 500 && flooded.badResponses == 0 && flooded.connectionFailures == 0)
    }

    @Test("a master that sends without ever reading is throttled, not buffered without limit")
    func neverReads() throws {
        let (server, port) = try server()
        defer { server.stop() }
        let greedy = try RawSocket(port: port, timeout: 1, receiveBuffer: 4096)
        let request = MBAP.encode(transactionID: 1, unit: 1, pdu: [3, 0, 0, 0, 5])
        let burst = Array([[UInt8]](repeating: request, count: 10_000).joined())
        var sent = 0
        // Sends stall once the simulator stops reading (its output queue is full): the send
        // timeout ends the loop long before 200 MB.
        while sent < 200_000_000, (try? greedy.send(burst)) != nil { sent += burst.count }
        #expect(sent < 200_000_000)
        let answered = server.simulation.machine(named: "oven")?.statistics.requests ?? 0
        #expect(answered < sent / request.count)
        #expect(try readSetPoint(port))
    }

    @Test("300 masters at once are all answered")
    func manyConnections() throws {
        let (server, port) = try server()
        defer { server.stop() }
        let sockets = try (0..<300).map { _ in try RawSocket(port: port, timeout: 10) }
        for socket in sockets { try socket.send(MBAP.encode(transactionID: 7, unit: 1, pdu: [3, 0, 1, 0, 1])) }
        for socket in sockets { #expect(socket.readFrame()?.pdu == [3, 2, 0x07, 0x08]) }
    }

    @Test("max_connections: connections over the machine's limit are closed at once")
    func connectionLimit() throws {
        let (server, port) = try server("max_connections: 2")
        defer { server.stop() }
        let first = try RawSocket(port: port), second = try RawSocket(port: port)
        #expect(try first.modbus([3, 0, 1, 0, 1]) != nil && second.modbus([3, 0, 1, 0, 1]) != nil)
        let third = try RawSocket(port: port, timeout: 5)
        #expect(third.isClosedByPeer())
    }

    @Test("unit ids on a one-machine port: its own, 0 and 255 answer; others get exception 11")
    func unitIDs() throws {
        let (server, port) = try server()
        defer { server.stop() }
        let socket = try RawSocket(port: port)
        for unit: UInt8 in [1, 0, 255] { #expect(try socket.modbus([3, 0, 1, 0, 1], unit: unit)?.pdu == [3, 2, 0x07, 0x08]) }
        #expect(try socket.modbus([3, 0, 1, 0, 1], unit: 9)?.pdu == [0x83, 0x0B])
    }
}
