// The uplink-sim executable: clean errors with exit codes (no stack traces), signals, the --rtu
// profile mode, the bench subcommand, and the demo scenario as shipped.

import Foundation
import Testing
import TestSupport
@testable import Simulator

@Suite("uplink-sim command line")
struct CLITests {
    var binary: String { TestSupport.product("uplink-sim") }

    @Test("a broken profile exits 1 with file:line:column: key: message, and no stack trace")
    func brokenProfile() throws {
        let path = "\(Paths.testcases)/unknown-type.yaml"
        let result = try ChildProcess.run(binary, [path, "--port", "0"])
        #expect(result.status == 1)
        #expect(result.output == "uplink-sim: \(path):8:11: registers[1].type: unknown type 'int17'; expected one of int16, uint16, int32, uint32, int64, uint64, float32, float64, bool, bit, string\n")
        let check = try ChildProcess.run(binary, ["check", path])
        #expect(check.status == 1 && !check.output.contains("Fatal") && !check.output.contains("Stack"))
        let missing = try ChildProcess.run(binary, ["/nonexistent/profile.yaml"])
        #expect(missing.status == 1 && missing.output.contains("/nonexistent/profile.yaml:1:1: no such file"))
    }

    @Test("check accepts every shipped file", arguments: Paths.profiles + ["demo"])
    func check(name: String) throws {
        let result = try ChildProcess.run(binary, ["check", Paths.simulator("\(name).yaml")])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains(": ok, "))
    }

    @Test("a port in use is an error that says what to do")
    func portInUse() throws {
        let first = try SimProcess(file: Paths.simulator("temperature-controller.yaml"), arguments: ["--port", "0"])
        defer { first.stop() }
        let port = try first.port("temperature-controller")
        let second = try ChildProcess.run(binary, [Paths.simulator("temperature-controller.yaml"), "--port", String(port)])
        #expect(second.status == 1)
        #expect(second.output.contains("can't listen on 127.0.0.1:\(port): Address already in use; stop whatever uses that port or choose another one"))
        let misuse = try ChildProcess.run(binary, [Paths.simulator("demo.yaml"), "--port", "5999"])
        #expect(misuse.status == 64 && misuse.output.contains("apply to a single machine profile"))
    }

    @Test("SIGTERM stops it cleanly and removes the pty symlink; --rtu serves a profile on a pty")
    func rtuProfileAndSignal() throws {
        let directory = TestSupport.temporaryDirectory("uplink-sim-cli")
        let link = directory.appendingPathComponent("meter").path
        let sim = try SimProcess(file: Paths.simulator("energy-meter.yaml"), arguments: ["--rtu", "--link", link, "--unit", "3"],
                                 directory: directory)
        #expect(sim.endpoints["energy-meter"]?.unit == 3)
        #expect(sim.child.outputText.contains("rtu \(link) -> /dev/pts/"))
        if MBPoll.path != nil {
            let read = try MBPoll.rtu(path: link, unit: 3, type: "3:float", address: 70, count: 1, extra: ["-B"])
            #expect(read.status == 0 && (49.9...50.1).contains(read.values[70] ?? 0), "\(read.output)")
        }
        sim.child.signal(SIGTERM)
        #expect(sim.child.waitForExit(timeout: 10) == 0)
        #expect(sim.child.outputText.contains("stopped (signal 15)"))
        #expect(!FileManager.default.fileExists(atPath: link))
    }

    @Test("--duration ends the run by itself")
    func duration() throws {
        let result = try ChildProcess.run(binary, [Paths.simulator("cnc-machining-centre.yaml"), "--port", "0", "--duration", "300ms"])
        #expect(result.status == 0 && result.output.contains("ready") && result.output.contains("stopped after 300ms"))
    }

    @Test("bench prints the requests/s it served")
    func bench() throws {
        let result = try ChildProcess.run(binary, ["bench", "--machines", "4", "--registers", "200", "--seconds", "0.5"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("requests/s") && result.output.contains(" 0 bad, 0 connection failures"))
    }

    static var demoPortsFree: Bool {
        let ports = [5020, 5021, 5022, 5023, 5024, 5025, 5026, 8502]
        return ports.allSatisfy { port in (try? RawSocket(port: port, timeout: 1)) == nil }
            && !FileManager.default.fileExists(atPath: "/tmp/uplink-sim-line1")
    }

    @Test("the demo as shipped: prints every machine where Configs/demo.yaml polls it", .enabled(if: CLITests.demoPortsFree))
    func demo() throws {
        let sim = try SimProcess(file: Paths.simulator("demo.yaml"))
        defer { sim.stop() }
        let expected: [String: SimProcess.Endpoint] = [
            "imm-01": .init(port: 5020, unit: 1), "imm-02": .init(port: 5021, unit: 1), "imm-03": .init(port: 5022, unit: 1),
            "cnc-01": .init(port: 5023, unit: 1), "cnc-02": .init(port: 5024, unit: 1), "compressor-01": .init(port: 5025, unit: 1),
            "meter-01": .init(port: 5026, unit: 1), "meter-02": .init(port: 5026, unit: 2),
            "tc-01": .init(unit: 1, serialPath: "/tmp/uplink-sim-line1"), "tc-02": .init(unit: 2, serialPath: "/tmp/uplink-sim-line1"),
            "tc-03": .init(unit: 3, serialPath: "/tmp/uplink-sim-line1"),
        ]
        #expect(sim.endpoints == expected)
        #expect(sim.controlPort == 8502)
        #expect(try sim.control("GET", "/machines").body.contains("\"name\":\"tc-03\""))
        if MBPoll.path != nil {
            #expect(try MBPoll.tcp(port: 5026, unit: 2, type: "3", address: 0, count: 10).status == 0)
            #expect(try MBPoll.rtu(path: "/tmp/uplink-sim-line1", unit: 3, address: 0, count: 5).status == 0)
        }
        sim.stop()
        #expect(!FileManager.default.fileExists(atPath: "/tmp/uplink-sim-line1"))
    }
}
