// Every fault mode against real masters over TCP, switched through the control interface of a
// running uplink-sim: what pymodbus and mbpoll (libmodbus, as the agent uses) see, and that the
// machine answers normally again once the fault is cleared.

import Foundation
import Testing
import TestSupport
@testable import Simulator

struct FaultCase: CustomTestStringConvertible, Sendable {
    var name: String
    /// The control request body (YAML or JSON).
    var faults: String
    /// What pymodbus sees reading 4 holding registers with a 0.5 s timeout.
    var pymodbus: PyModbusExpectation
    /// What mbpoll prints on failure, or nil if its read succeeds.
    var mbpollError: String?

    enum PyModbusExpectation: Sendable, Equatable {
        case values
        case fewerValues
        case exception(Int)
        case timeout
        case connection
        case badResponse
    }

    var testDescription: String { name }

    /// Masters wait 0.5 s where a timeout is the expected outcome (the fault guarantees it), and
    /// a generous 3 s where an answer is, so a busy machine can't turn a pass into a failure.
    var timeout: Double {
        pymodbus == .timeout || mbpollError == "Connection timed out" ? 0.5 : 3
    }
}

@Suite("Fault modes seen by real masters (TCP)", .enabled(if: requireTools()))
struct FaultInteropTests {
    static let cases: [FaultCase] = [
        FaultCase(name: "slow beyond the timeout", faults: #"{"slow": "1500ms"}"#, pymodbus: .timeout, mbpollError: "Connection timed out"),
        FaultCase(name: "slow within the timeout", faults: #"{"slow": "100ms"}"#, pymodbus: .values, mbpollError: nil),
        FaultCase(name: "no response", faults: "no_response: true", pymodbus: .timeout, mbpollError: "Connection timed out"),
        FaultCase(name: "exception: device busy", faults: "exception: busy", pymodbus: .exception(6), mbpollError: "Slave device or server is busy"),
        FaultCase(name: "exception: illegal address", faults: "exception: illegal_address", pymodbus: .exception(2), mbpollError: "Illegal data address"),
        FaultCase(name: "dropped connection", faults: "drop_connection: true", pymodbus: .connection, mbpollError: "Connection reset by peer"),
        FaultCase(name: "garbled frame", faults: "garbled: true", pymodbus: .badResponse, mbpollError: "Invalid data"),
        FaultCase(name: "short frame", faults: "short: true", pymodbus: .fewerValues, mbpollError: "Invalid data"),
        FaultCase(name: "truncated frame", faults: "truncated: true", pymodbus: .timeout, mbpollError: "Connection timed out"),
        // libmodbus 3.1.6 does not check the unit id of a TCP response (see docs/simulator.md).
        FaultCase(name: "wrong unit id", faults: "wrong_unit: true", pymodbus: .badResponse, mbpollError: nil),
    ]

    func start() throws -> (SimProcess, Int) {
        let sim = try SimProcess(file: Paths.simulator("temperature-controller.yaml"),
                                 arguments: ["--port", "0", "--speed", "0", "--control", "0"])
        return (sim, try sim.port("temperature-controller"))
    }

    func pymodbusOutcome(port: Int, timeout: Double = 3) throws -> FaultCase.PyModbusExpectation? {
        switch try PyModbus.read(port: port, address: 0, count: 4, timeout: timeout) {
        case .values(let values): return values.count == 4 ? .values : .fewerValues
        case .exception(let code): return .exception(code)
        case .timeout: return .timeout
        case .connection: return .connection
        case .badResponse: return .badResponse
        case .error: return nil
        }
    }

    @Test("each fault gives the documented behaviour, and clearing it restores normal answers", arguments: cases)
    func fault(_ fault: FaultCase) throws {
        let (sim, port) = try start()
        defer { sim.stop() }
        try sim.setFaults("temperature-controller", fault.faults)

        #expect(try pymodbusOutcome(port: port, timeout: fault.timeout) == fault.pymodbus)
        let mbpoll = try MBPoll.tcp(port: port, address: 0, count: 4, timeout: String(fault.timeout))
        if let error = fault.mbpollError {
            #expect(mbpoll.status != 0 && mbpoll.output.contains(error), "\(mbpoll.output)")
        } else {
            #expect(mbpoll.status == 0, "\(mbpoll.output)")
        }

        let status = try sim.control("GET", "/machines/temperature-controller")
        #expect(status.status == 200 && status.body.contains("\"faults\":{\""))
        #expect(try sim.control("DELETE", "/machines/temperature-controller/faults").status == 200)
        #expect(try pymodbusOutcome(port: port) == .values)
        #expect(try MBPoll.tcp(port: port, address: 0, count: 4, timeout: "3").status == 0)
    }

    @Test("a machine that goes offline refuses connections, then comes back by itself")
    func offline() throws {
        let (sim, port) = try start()
        defer { sim.stop() }
        try sim.setFaults("temperature-controller", #"{"offline": {"for": "2s"}}"#)
        // Within 2 s of setting it the port is closed (the loop notices within 50 ms).
        var refused = false
        for _ in 0..<20 where !refused {
            refused = (try? RawSocket(port: port)) == nil
            if !refused { usleep(20_000) }
        }
        #expect(refused, "the port still accepts connections while the machine is offline")
        #expect(try sim.control("GET", "/machines/temperature-controller").body.contains("\"online\":false"))
        let mbpoll = try MBPoll.tcp(port: port, address: 0, count: 4, timeout: "0.5")
        #expect(mbpoll.status != 0)
        // It comes back: wait (without a timed assertion) until a read succeeds again.
        var back = false
        let deadline = Date().addingTimeInterval(20)
        while !back, Date() < deadline {
            back = (try? PyModbus.read(port: port, address: 0, count: 4, timeout: 2)).map {
                if case .values = $0 { return true } else { return false }
            } ?? false
            if !back { usleep(200_000) }
        }
        #expect(back, "the machine did not come back")
    }

    @Test("a gateway port: absent unit ids get exception 11, an offline unit too, while its neighbour answers")
    func gateway() throws {
        let port = TestSupport.freeTCPPort()
        let sim = try SimProcess(scenario: """
        speed: 0
        control: 0
        machines:
          - { include: \(Paths.simulator("energy-meter.yaml")), name: "meter-{n}", count: 2, vary: unit, tcp: { port: \(port), unit: 1 } }
        """)
        defer { sim.stop() }
        #expect(sim.endpoints["meter-02"] == SimProcess.Endpoint(port: port, unit: 2))
        #expect(try PyModbus.read(port: port, unit: 2, area: "input", address: 0, count: 2, timeout: 3).isValues)
        #expect(try PyModbus.read(port: port, unit: 3, area: "input", address: 0, count: 2, timeout: 3) == .exception(11))
        let mbpoll = try MBPoll.tcp(port: port, unit: 3, type: "3", address: 0, count: 2)
        #expect(mbpoll.status != 0 && mbpoll.output.contains("Target device failed to respond"), "\(mbpoll.output)")

        try sim.setFaults("meter-02", "offline: 1h")
        #expect(try PyModbus.read(port: port, unit: 2, area: "input", address: 0, count: 2, timeout: 3) == .exception(11))
        #expect(try PyModbus.read(port: port, unit: 1, area: "input", address: 0, count: 2, timeout: 3).isValues)
    }

    @Test("faults set in the profile are active from the start")
    func profileFaults() throws {
        let sim = try SimProcess(scenario: """
        speed: 0
        control: 0
        machines:
          - include: \(Paths.simulator("temperature-controller.yaml"))
            name: flaky
            tcp: { port: 0 }
            faults: { exception: { code: busy } }
        """)
        defer { sim.stop() }
        #expect(try PyModbus.read(port: try sim.port("flaky"), address: 0, count: 4, timeout: 3) == .exception(6))
    }
}

extension PyModbus.Outcome {
    var isValues: Bool { if case .values = self { true } else { false } }
}
