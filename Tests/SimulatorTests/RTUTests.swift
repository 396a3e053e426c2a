// Modbus RTU end to end on the pseudo-terminal uplink-sim opens: mbpoll -m rtu reads and writes
// several unit ids on one line, faults behave as on a real RS-485 bus, the framer recovers from
// line noise, and timing emulation makes bytes take their time.

import Foundation
import Testing
import TestSupport
@testable import Simulator

@Suite("Modbus RTU on a pseudo-terminal", .enabled(if: MBPoll.path != nil))
struct RTUTests {
    /// Two machines on one line (a temperature controller at unit 1, an energy meter at unit 2),
    /// and a meter alone on a second line with timing emulation.
    func start() throws -> (sim: SimProcess, line: String, timed: String) {
        // The links live in the scenario's own temporary directory, removed when the sim stops.
        let directory = TestSupport.temporaryDirectory("uplink-sim-rtu")
        let line = directory.appendingPathComponent("line1").path
        let timed = directory.appendingPathComponent("line2").path
        let sim = try SimProcess(directory: directory, scenario: """
        speed: 0
        control: 0
        serial_buses:
          line1: { link: \(line), baud: 9600 }
          line2: { link: \(timed), baud: 9600, timing: true }
        machines:
          - { include: \(Paths.simulator("temperature-controller.yaml")), name: oven, rtu: { bus: line1, unit: 1 } }
          - { include: \(Paths.simulator("energy-meter.yaml")), name: meter, rtu: { bus: line1, unit: 2 } }
          - { include: \(Paths.simulator("energy-meter.yaml")), name: slow-meter, rtu: { bus: line2, unit: 1 } }
        """)
        return (sim, line, timed)
    }

    @Test("mbpoll -m rtu reads two unit ids on one line, writes a set point, and gets no answer from an absent unit")
    func readAndWrite() throws {
        let (sim, line, _) = try start()
        defer { sim.stop() }
        #expect(sim.endpoints["oven"]?.serialPath == line)
        #expect(FileManager.default.fileExists(atPath: line))

        let oven = try MBPoll.rtu(path: line, unit: 1, address: 0, count: 5)
        #expect(oven.status == 0, "\(oven.output)")
        #expect((1700...1900).contains(oven.values[0] ?? 0) && oven.values[1] == 1800)

        let meter = try MBPoll.rtu(path: line, unit: 2, type: "3:float", address: 52, count: 1, extra: ["-B"])
        #expect(meter.status == 0, "\(meter.output)")
        #expect((10_000...100_000).contains(meter.values[52] ?? 0), "\(meter.output)")

        let write = try MBPoll.rtu(path: line, unit: 1, address: 1, count: 1, write: ["1234"])
        #expect(write.status == 0, "\(write.output)")
        #expect(try MBPoll.rtu(path: line, unit: 1, address: 1, count: 1).values[1] == 1234)

        let absent = try MBPoll.rtu(path: line, unit: 7, address: 0, count: 1, timeout: "0.3")
        #expect(absent.status != 0 && absent.output.contains("timed out"), "\(absent.output)")
        #expect(try MBPoll.rtu(path: line, unit: 1, address: 0, count: 1).status == 0)
    }

    @Test("faults on a serial line: what libmodbus reports", arguments: [
        ("garbled: true", "Invalid CRC"),
        ("wrong_unit: true", "Response not from requested slave"),
        ("short: true", "Invalid data"),
        ("exception: busy", "Slave device or server is busy"),
        ("no_response: true", "Connection timed out"),
        ("offline: 1h", "Connection timed out"),
    ])
    func faults(faults: String, error: String) throws {
        let (sim, line, _) = try start()
        defer { sim.stop() }
        try sim.setFaults("oven", faults)
        let result = try MBPoll.rtu(path: line, unit: 1, address: 0, count: 4, timeout: error.contains("timed out") ? "0.5" : "3")
        #expect(result.status != 0 && result.output.contains(error), "\(result.output)")
        // The other unit on the same line is unaffected.
        #expect(try MBPoll.rtu(path: line, unit: 2, type: "3", address: 0, count: 2).status == 0)
        #expect(try sim.control("DELETE", "/machines/oven/faults").status == 200)
        #expect(try MBPoll.rtu(path: line, unit: 1, address: 0, count: 4).status == 0)
    }

    @Test("the framer drops noise and bad CRCs, skips frames for other units, and answers the next good frame")
    func lineNoise() throws {
        let (sim, line, _) = try start()
        defer { sim.stop() }
        let port = try SerialClient(path: line)
        port.write([0xFF, 0x00, 0x13, 0x37])                                   // noise
        var broken = RTUFraming.encode(unit: 1, pdu: [3, 0, 0, 0, 2])
        broken[broken.count - 1] ^= 0xFF
        usleep(150_000)                                                        // t3.5 of silence ends the noise
        port.write(broken)                                                     // a bad CRC: ignored
        #expect(port.readResponse(timeout: 0.3) == nil)
        // A request for unit 9 (absent) immediately followed by one for unit 1: both framed by
        // length, only unit 1 answers.
        port.write(RTUFraming.encode(unit: 9, pdu: [3, 0, 0, 0, 1]) + RTUFraming.encode(unit: 1, pdu: [3, 0, 1, 0, 1]))
        let response = try #require(port.readResponse(timeout: 2))
        #expect(RTUFraming.hasValidCRC(response))
        #expect(Array(response.prefix(5)) == [1, 3, 2, 0x07, 0x08])              // set point 180.0 = 0x0708
        // An unknown function code for a present unit: exception 01 once the line goes quiet.
        port.write(RTUFraming.encode(unit: 1, pdu: [0x2B, 0x0E, 0x01, 0x00]))
        let refused = try #require(port.readResponse(timeout: 2))
        #expect(Array(refused.prefix(3)) == [1, 0xAB, 0x01])
    }

    @Test("timing emulation: a 125-register answer at 9600 baud takes at least its 263 characters of line time")
    func timing() throws {
        let (sim, _, timed) = try start()
        defer { sim.stop() }
        let port = try SerialClient(path: timed)
        let started = Date()
        port.write(RTUFraming.encode(unit: 1, pdu: [4, 0, 0, 0, 125]))
        let response = try #require(port.readResponse(timeout: 5))
        let elapsed = Date().timeIntervalSince(started)
        #expect(response.count == 255 && RTUFraming.hasValidCRC(response))
        // (8 request + 255 response characters) x 11 bits / 9600 baud = 301 ms, plus t3.5. A
        // lower bound only: a busy machine may be slower, never faster.
        #expect(elapsed >= 0.30, "answered after \(elapsed) s")
    }

    @Test("--device: serves on a pty pair made by another program (socat), as on a given serial port",
          .enabled(if: TestSupport.which("socat") != nil))
    func givenDevice() throws {
        let directory = TestSupport.temporaryDirectory("uplink-sim-socat")
        let simSide = directory.appendingPathComponent("sim").path, masterSide = directory.appendingPathComponent("master").path
        let socat = try ChildProcess(try #require(TestSupport.which("socat")),
                                     ["pty,raw,echo=0,link=\(simSide)", "pty,raw,echo=0,link=\(masterSide)"])
        defer {
            socat.stop()
            try? FileManager.default.removeItem(at: directory)
        }
        let deadline = Date().addingTimeInterval(10)
        while !(FileManager.default.fileExists(atPath: simSide) && FileManager.default.fileExists(atPath: masterSide)),
              Date() < deadline { usleep(20_000) }
        let sim = try SimProcess(file: Paths.simulator("temperature-controller.yaml"), arguments: ["--rtu", "--device", simSide, "--unit", "4"])
        defer { sim.stop() }
        #expect(sim.endpoints["temperature-controller"] == SimProcess.Endpoint(unit: 4, serialPath: simSide))
        let read = try MBPoll.rtu(path: masterSide, unit: 4, address: 1, count: 1)
        #expect(read.status == 0 && read.values[1] == 1800, "\(read.output)")
    }
}
