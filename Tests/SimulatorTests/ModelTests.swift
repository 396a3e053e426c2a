// The simulated physics of the shipped machines, stepped in simulated time (no clocks, no
// sockets): determinism, counters that count only while running, temperatures that follow set
// points, the energy meter's electrical consistency, the compressor's pressure band.

import Foundation
import Testing
@testable import Simulator

/// A one-machine simulation of a shipped profile, held still and stepped by the test. Long
/// horizons use a coarser tick: the behaviour checked holds at any tick, and debug builds are slow.
func steppedSimulation(_ profile: String, seed: UInt64 = 1, tick: Double = 0.1) throws -> (Simulation, Machine) {
    var scenario = try ProfileLoader.load(path: Paths.simulator("\(profile).yaml"))
    scenario.seed = seed
    scenario.speed = 0
    scenario.tick = tick
    let simulation = Simulation(scenario: scenario)
    guard let machine = simulation.machines.first else { throw TestError.failed("no machine") }
    return (simulation, machine)
}

extension Machine {
    func value(_ name: String) -> Double { model.value(of: name) ?? .nan }

    /// Sends one request PDU as a master would (no faults are set in these tests).
    func request(_ pdu: [UInt8]) -> [UInt8] {
        guard case .respond(let response) = handle(pdu: pdu, unit: definition.endpoint.unit).action else { return [] }
        return response
    }

    func writeRegister(_ address: Int, _ raw: Int) -> [UInt8] {
        request([6, UInt8(address >> 8), UInt8(address & 0xFF), UInt8((raw >> 8) & 0xFF), UInt8(raw & 0xFF)])
    }

    /// Decodes a variable from the served registers (what a master sees), not from the model.
    func served(_ name: String) -> Double {
        let model = self.model
        guard let variable = definition.variables.first(where: { $0.name == name }), let placement = variable.placement else { return .nan }
        let registers = placement.area == .holding ? model.registers.holding : model.registers.input
        return ValueCodec.decode(Array(registers[placement.address..<placement.end]), as: placement.type, order: placement.order,
                                 scale: placement.scale, offset: placement.offset) ?? .nan
    }
}

@Suite("Simulated machines")
struct ModelTests {

    @Test("same seed and steps give the same registers; another seed does not; step sizes don't matter")
    func determinism() throws {
        func run(seed: UInt64, steps: [Double]) throws -> [RegisterBank] {
            var scenario = try ProfileLoader.load(path: Paths.simulator("demo.yaml"))
            scenario.seed = seed
            let simulation = Simulation(scenario: scenario)
            for step in steps { simulation.step(by: step) }
            return simulation.machines.map(\.model.registers)
        }
        let reference = try run(seed: 42, steps: [120])
        #expect(try run(seed: 42, steps: [120]) == reference)
        #expect(try run(seed: 42, steps: Array(repeating: 12, count: 10)) == reference)
        #expect(try run(seed: 42, steps: [0.05, 0.05] + Array(repeating: 19.98, count: 6) + [0.02]) == reference)
        #expect(try run(seed: 43, steps: [120]) != reference)
    }

    @Test("injection moulding: shots count only while running, about one per cycle; rejects are a small share")
    func shotCounter() throws {
        let (simulation, machine) = try steppedSimulation("injection-moulding")
        machine.force(state: "idle")
        let idleShots = machine.value("shot_count")
        simulation.step(by: 30)
        #expect(machine.value("shot_count") == idleShots)

        machine.force(state: "running")
        let shots = machine.value("shot_count"), rejects = machine.value("reject_count")
        simulation.step(by: 600)
        let made = machine.value("shot_count") - shots
        // 600 s at a 31.6-34 s cycle: 17 or 18 shots (19 at most with the carried fraction).
        #expect((17...19).contains(Int(made)))
        #expect(machine.value("reject_count") - rejects <= made)
        #expect(machine.served("shot_count") == machine.value("shot_count"))

        // Over hours of free running (1 s ticks): whenever a tick ends outside 'running', no shot
        // was counted in it.
        let (hours, free) = try steppedSimulation("injection-moulding", tick: 1)
        var previous = free.value("shot_count")
        var visited: Set<String> = []
        for _ in 0..<(5 * 3600) {
            hours.step(by: 1)
            let count = free.value("shot_count")
            let state = free.model.stateName ?? ""
            visited.insert(state)
            if state != "running" { #expect(count == previous, "counted a shot in state \(state)") }
            previous = count
        }
        #expect(visited.contains("running") && visited.count >= 2, "visited only \(visited)")
    }

    @Test("injection moulding: an alarm stops the heaters and sets the alarm word; a written set point is followed")
    func alarmAndSetPoint() throws {
        let (simulation, machine) = try steppedSimulation("injection-moulding")
        machine.force(state: "alarm")
        let hot = machine.value("barrel_zone3_temp")
        simulation.step(by: 55)
        #expect(machine.model.stateName == "alarm")
        #expect(machine.value("barrel_zone3_temp") < hot - 2)
        #expect([101, 102, 103, 104, 105, 106].contains(machine.value("alarm_code")))
        #expect(Int(machine.value("alarm_word")) & 1 == 1)
        #expect(machine.value("heaters_on") == 0)
        #expect(machine.value("downtime_reason") == 7)
        #expect(machine.served("machine_state") == 4)

        machine.force(state: "running")
        simulation.step(by: 1)
        #expect(machine.writeRegister(22, 2600) == [6, 0, 22, 0x0A, 0x28])
        #expect(machine.value("barrel_zone3_setpoint") == 260)
        simulation.step(by: 600)  // one time constant: 63 % of the way from ~225 to 260
        #expect((240...252).contains(machine.value("barrel_zone3_temp")))
        simulation.step(by: 1500)
        #expect(abs(machine.value("barrel_zone3_temp") - 260) < 5)
    }

    @Test("writes: read-only and unmapped registers refuse with 02, out-of-limit values with 03 and change nothing")
    func writeRefusals() throws {
        let (_, machine) = try steppedSimulation("injection-moulding")
        #expect(machine.writeRegister(0, 3) == [0x86, 0x02])          // machine_state is read-only
        #expect(machine.writeRegister(26, 1) == [0x86, 0x02])         // gap inside the area
        #expect(machine.writeRegister(22, 5000) == [0x86, 0x03])      // 500 degC > max 400
        #expect(machine.value("barrel_zone3_setpoint") == 225)
        #expect(machine.request([3, 0, 49, 0, 2]) == [0x83, 0x02])    // 49..50 runs past the area (50 registers)
        #expect(machine.request([3, 0, 26, 0, 1]) == [3, 2, 0, 0])    // a gap reads as zero
        // FC16 over two set points, one out of range: all or nothing.
        #expect(machine.request([16, 0, 20, 0, 2, 4, 0x07, 0xD0, 0x13, 0x88]) == [0x90, 0x03])
        #expect(machine.value("barrel_zone1_setpoint") == 200)
        #expect(machine.request([16, 0, 20, 0, 2, 4, 0x07, 0xD0, 0x08, 0x98]) == [16, 0, 20, 0, 2])
        #expect(machine.value("barrel_zone1_setpoint") == 200 && machine.value("barrel_zone2_setpoint") == 220)
    }

    @Test("temperature controller: the process value follows a written set point; 'run' off lets it cool")
    func temperatureController() throws {
        let (simulation, machine) = try steppedSimulation("temperature-controller", tick: 0.5)
        simulation.step(by: 60)
        #expect(abs(machine.value("process_value") - 180) < 4)
        #expect(machine.writeRegister(1, 1200) == [6, 0, 1, 0x04, 0xB0])
        simulation.step(by: 5)
        #expect(machine.value("output") == 0)  // far above the new set point: heater off
        simulation.step(by: 900)                // five time constants
        #expect(abs(machine.value("process_value") - 120) < 3)
        #expect(machine.value("output") > 0)

        #expect(machine.request([5, 0, 0, 0, 0]) == [5, 0, 0, 0, 0])  // coil 'run' off
        simulation.step(by: 1800)
        #expect(machine.value("process_value") < 60)
        #expect(machine.value("output") == 0)
        #expect(Int(machine.value("status")) & 0b10000 == 0)
    }

    @Test("energy meter (SDM630): P = U I PF per phase, total P = sqrt(3) U(LL) I PF, energy integrates power")
    func energyMeter() throws {
        let (simulation, machine) = try steppedSimulation("energy-meter", tick: 1)
        var integrated = 0.0
        let startEnergy = machine.served("import_active_energy")
        for _ in 0..<360 {
            simulation.step(by: 10)
            let p = machine.served("total_power")
            integrated += p * 10 / 3_600_000
            for phase in ["l1", "l2", "l3"] {
                let u = machine.served("\(phase)_voltage"), i = machine.served("\(phase)_current")
                let pf = machine.served("\(phase)_power_factor")
                #expect(abs(machine.served("\(phase)_power") - u * i * pf) < 1)
                #expect((210...230).contains(u) && (30...125).contains(i) && (0.8...1).contains(pf))
            }
            let ull = machine.served("average_line_voltage"), i = machine.served("average_current")
            let pf = machine.served("total_power_factor")
            #expect(abs(p - 3.0.squareRoot() * ull * i * pf) / p < 0.02)
            #expect((49.9...50.1).contains(machine.served("frequency")))
            #expect((370...395).contains(ull))
        }
        let gained = machine.served("import_active_energy") - startEnergy
        #expect(gained > 5)  // an hour at 15-80 kW
        #expect(abs(gained - integrated) / integrated < 0.02)
        #expect(machine.served("total_active_energy") == machine.served("import_active_energy"))
        #expect(machine.served("max_total_power_demand") >= machine.served("total_power_demand"))
    }

    @Test("air compressor: pressure cycles between the load and unload pressures; hours add up")
    func compressor() throws {
        let (simulation, machine) = try steppedSimulation("air-compressor", tick: 1)
        var states: Set<String> = []
        for _ in 0..<(2 * 720) {
            simulation.step(by: 5)
            let state = machine.model.stateName ?? ""
            states.insert(state)
            let pressure = machine.served("discharge_pressure")
            if state == "loaded" || state == "unloaded" {
                #expect((6.5...7.8).contains(pressure), "pressure \(pressure) in \(state)")
            }
            let current = machine.served("motor_current")
            switch state {
            case "loaded": #expect((55...70).contains(current))
            case "unloaded": #expect((20...28).contains(current))
            default: #expect(current == 0)
            }
            #expect(machine.served("loaded_hours") <= machine.served("running_hours"))
        }
        #expect(states.isSuperset(of: ["loaded", "unloaded"]))
        #expect(machine.served("running_hours") > 18734.2)
    }

    @Test("CNC: parts count only in cycle, a setup loads a known program, overrides scale speed and feed")
    func cnc() throws {
        let (simulation, machine) = try steppedSimulation("cnc-machining-centre", tick: 0.5)
        machine.force(state: "setup")
        simulation.step(by: 1)
        #expect([1001, 1002, 2001, 3105, 4711].contains(machine.value("program_number")))
        #expect(machine.value("spindle_speed") == 0 && machine.value("feed_rate") == 0)
        let parts = machine.value("part_count")
        simulation.step(by: 300)
        #expect(machine.value("part_count") == parts || machine.model.stateName == "running")

        machine.force(state: "running")
        simulation.step(by: 1)
        #expect(machine.writeRegister(9, 80) == [6, 0, 9, 0, 80])
        simulation.step(by: 1)
        let expected = machine.value("programmed_speed") * 0.8
        #expect(abs(machine.value("spindle_speed") - expected) < 0.5)
        let before = machine.value("part_count")
        simulation.step(by: 1200)
        #expect((4...5).contains(Int(machine.value("part_count") - before)))
        #expect(abs(machine.served("x_position")) <= 400)
    }
}
