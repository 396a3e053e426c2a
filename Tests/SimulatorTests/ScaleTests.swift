// Scale: one process serves 100 machines x 1,000 registers. Counts, not rates (PITFALLS G20):
// every machine answers, every answer is right. The requests/s figure is `uplink-sim bench`'s job.

import Foundation
import Testing
@testable import Simulator

@Suite("Scale")
struct ScaleTests {
    @Test("100 machines x 1,000 registers in one process: every machine answers correct, full-size reads")
    func hundredMachines() throws {
        let scenario = BenchmarkScenario.make(machines: 100, registers: 1000)
        let server = SimulatorServer(scenario: scenario)
        SimulatorServer.raiseOpenFileLimit()
        let endpoints = try server.start()
        defer { server.stop() }
        #expect(endpoints.count == 100 && Set(endpoints.compactMap(\.port)).count == 100)

        let report = LoadGenerator.run(targets: endpoints.compactMap { $0.port.map { LoadTarget(port: $0) } },
                                       threads: 2, duration: 1.5, quantity: 125, registers: 1000)
        #expect(report.badResponses == 0 && report.connectionFailures == 0)
        #expect(report.responses >= 100)
        for machine in server.simulation.machines {
            #expect(machine.statistics.requests > 0, "\(machine.name) was never asked")
        }

        // The last machine's last registers hold what the synthetic profile says (constants there).
        let last = try #require(endpoints.last?.port)
        let socket = try RawSocket(port: last, timeout: 5)
        let answer = try #require(try socket.modbus([3, 0x03, 0xE5, 0, 3]))  // 997...999
        #expect(answer.pdu == [3, 6, 0x03, 0xE5, 0x03, 0xE6, 0x03, 0xE7])
        #expect(try socket.modbus([3, 0x03, 0xE8, 0, 1])?.pdu == [0x83, 0x02])  // 1000 is past the end
    }
}
