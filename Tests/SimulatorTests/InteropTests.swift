// Third-party masters against a running uplink-sim: pymodbus and mbpoll read every register of
// every shipped profile, agree byte for byte, see plausible values that change as simulated time
// is stepped, and write set points.

import Foundation
import Testing
import TestSupport
@testable import Simulator

/// What a reading of each profile must look like. Returns the problems found.
func plausibilityProblems(_ profile: String, _ machine: DecodedMachine) -> [String] {
    var problems: [String] = []
    func check(_ name: String, _ range: ClosedRange<Double>) {
        let value = machine[name]
        if !range.contains(value) { problems.append("\(name) = \(value), expected \(range)") }
    }
    func expect(_ condition: Bool, _ message: String) { if !condition { problems.append(message) } }
    switch profile {
    case "injection-moulding":
        check("machine_state", 1...5)
        for zone in ["barrel_zone1_temp", "barrel_zone2_temp", "barrel_zone3_temp", "barrel_zone4_temp", "nozzle_temp"] { check(zone, 150...300) }
        check("mould_temp", 20...80)
        check("cycle_time", 30...36)
        check("hydraulic_oil_temp", 25...60)
        check("shot_count", 1_284_310...2_000_000)
        check("reject_count", 15_420...machine["shot_count"])
        expect(machine["injection_pressure"] == 0 || (780...950).contains(machine["injection_pressure"]), "injection_pressure \(machine["injection_pressure"])")
        expect(machine.texts["model"] == "IMM160-HYD", "model \(machine.texts["model"] ?? "-")")
        expect(machine.texts["serial_number"]?.hasPrefix("IM") == true, "serial \(machine.texts["serial_number"] ?? "-")")
        expect((machine["machine_state"] == 1) == (machine["is_running"] == 1), "running bit disagrees with the state")
    case "cnc-machining-centre":
        check("machine_state", 1...4)
        check("spindle_speed", 0...12_000)
        check("feed_rate", 0...4500)
        check("x_position", -400...400)
        check("part_cycle_time", 250...300)
        expect([1001, 1002, 2001, 3105, 4711].contains(machine["program_number"]), "program \(machine["program_number"])")
        expect((machine["machine_state"] == 1) == (machine["spindle_speed"] > 0), "spindle turns outside the cycle")
        expect(machine.texts["model"] == "VMC-850", "model \(machine.texts["model"] ?? "-")")
    case "air-compressor":
        check("machine_state", 1...4)
        check("discharge_pressure", 5...9)
        check("discharge_temp", 20...110)
        check("motor_current", 0...75)
        check("running_hours", 18_734...20_000)
        expect(machine["loaded_hours"] <= machine["running_hours"], "loaded hours exceed running hours")
    case "energy-meter":
        for phase in ["l1", "l2", "l3"] {
            check("\(phase)_voltage", 210...230)
            check("\(phase)_current", 30...125)
            let power = machine["\(phase)_voltage"] * machine["\(phase)_current"] * machine["\(phase)_power_factor"]
            expect(abs(machine["\(phase)_power"] - power) < 1, "\(phase) P != U I PF")
        }
        check("frequency", 49.9...50.1)
        check("import_active_energy", 48_213...60_000)
        let p = machine["total_power"]
        let expected = 3.0.squareRoot() * machine["average_line_voltage"] * machine["average_current"] * machine["total_power_factor"]
        expect(abs(p - expected) / p < 0.02, "total P \(p) vs sqrt(3) U I PF \(expected)")
    case "temperature-controller":
        check("process_value", 170...190)
        check("setpoint", 180...180)
        check("output", 0...100)
        expect(Int(machine["status"]) & 0b10000 != 0, "status bit 4 (running) is clear")
        expect(machine.texts["model"] == "TC-4896", "model \(machine.texts["model"] ?? "-")")
    default:
        problems.append("no plausibility rules for \(profile)")
    }
    return problems
}

/// Signals that must move in 120 simulated seconds from the start.
let changingSignals: [String: [String]] = [
    "injection-moulding": ["shot_count", "power_on_hours"],
    "cnc-machining-centre": ["x_position", "spindle_hours"],
    "air-compressor": ["running_hours", "loaded_hours"],
    "energy-meter": ["import_active_energy", "import_reactive_energy"],
    "temperature-controller": ["process_value"],
]

@Suite("Third-party masters read the shipped profiles", .enabled(if: requireTools()))
struct InteropTests {
    /// Reads a machine's whole map with pymodbus.
    func readAll(_ definition: MachineDefinition, port: Int) throws -> [DataArea: [UInt16]] {
        let plan = definition.readPlan
        let ops: [[String: Any]] = plan.map { ["op": "read", "area": $0.area.rawValue, "address": $0.address, "count": $0.count] }
        let outcomes = try PyModbus.run(port: port, ops: ops)
        var registers: [DataArea: [UInt16]] = [:]
        for (step, outcome) in zip(plan, outcomes) {
            guard case .values(let values) = outcome, values.count == step.count else {
                throw TestError.failed("pymodbus read \(step) gave \(outcome)")
            }
            registers[step.area, default: []] += values.map { UInt16(truncatingIfNeeded: $0) }
        }
        return registers
    }

    /// Reads the same map with mbpoll.
    func readAllWithMBPoll(_ definition: MachineDefinition, port: Int) throws -> [DataArea: [UInt16]] {
        var registers: [DataArea: [UInt16]] = [:]
        for step in definition.readPlan {
            let type = ["coil": "0", "discrete": "1", "input": "3", "holding": "4"][step.area.rawValue] ?? "4"
            // mbpoll reads at most 125 values per run.
            var address = step.address
            while address < step.address + step.count {
                let count = min(125, step.address + step.count - address)
                let result = try MBPoll.tcp(port: port, type: type, address: address, count: count)
                guard result.status == 0 else { throw TestError.failed("mbpoll failed: \(result.output)") }
                let values = result.values
                registers[step.area, default: []] += (address..<address + count).map { UInt16(truncatingIfNeeded: Int(values[$0] ?? -1)) }
                address += count
            }
        }
        return registers
    }

    @Test("pymodbus and mbpoll read every register, agree, and see plausible values that change", arguments: Paths.profiles)
    func readProfile(profile: String) throws {
        let definition = try loadProfile(profile)
        let sim = try SimProcess(file: Paths.simulator("\(profile).yaml"), arguments: ["--port", "0", "--speed", "0", "--control", "0", "--seed", "9"])
        defer { sim.stop() }
        let port = try sim.port(definition.name)

        let first = try readAll(definition, port: port)
        #expect(try readAllWithMBPoll(definition, port: port) == first, "mbpoll and pymodbus disagree")
        let before = DecodedMachine(definition: definition, registers: first)
        let problems = plausibilityProblems(profile, before)
        #expect(problems.isEmpty, "\(problems)")

        try sim.step("120s")
        let after = DecodedMachine(definition: definition, registers: try readAll(definition, port: port))
        #expect(plausibilityProblems(profile, after).isEmpty, "\(plausibilityProblems(profile, after))")
        #expect(after.raw != before.raw, "no register changed in 120 simulated seconds")
        for name in changingSignals[profile] ?? [] where definition.variables.first(where: { $0.name == name })?.placement != nil {
            #expect(after[name] != before[name], "\(name) did not change")
        }
        if profile == "injection-moulding" { #expect(after["shot_count"] > before["shot_count"]) }
        if profile == "energy-meter" { #expect(after["import_active_energy"] > before["import_active_energy"]) }
    }

    @Test("masters write set points: pymodbus FC16, mbpoll FC6, a coil with FC5; the process follows")
    func writes() throws {
        let definition = try loadProfile("temperature-controller")
        let sim = try SimProcess(file: Paths.simulator("temperature-controller.yaml"), arguments: ["--port", "0", "--speed", "0", "--control", "0"])
        defer { sim.stop() }
        let port = try sim.port(definition.name)
        let outcomes = try PyModbus.run(port: port, ops: [
            ["op": "write", "address": 1, "values": [1500]],
            ["op": "read", "area": "holding", "address": 1, "count": 1],
            ["op": "write", "address": 1, "values": [9999]],
            ["op": "write", "address": 0, "values": [1]],
        ])
        #expect(outcomes == [.values([]), .values([1500]), .exception(3), .exception(2)])

        try sim.step("15m")
        let pv = try PyModbus.read(port: port, address: 0, count: 1)
        guard case .values(let raw) = pv, let tenths = raw.first else { Issue.record("read PV: \(pv)"); return }
        #expect(abs(Double(tenths) / 10 - 150) < 3)

        let write = try MBPoll.run(["-m", "tcp", "-p", String(port), "-a", "1", "-t", "4", "-r", "3", "127.0.0.1", "55"])
        #expect(write.status == 0, "\(write.output)")
        #expect(try PyModbus.read(port: port, address: 3, count: 1) == .values([55]))

        let coil = try PyModbus.run(port: port, ops: [["op": "write_coil", "address": 0, "value": 0],
                                                       ["op": "read", "area": "coil", "address": 0, "count": 1]])
        #expect(coil == [.values([]), .values([0])])
    }
}
