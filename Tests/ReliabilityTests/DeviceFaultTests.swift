// Issue 6, part 4: device faults, with the simulator's fault modes. One device of ten silent, slow or
// speaking garbage while the other nine keep their schedule (shown with the poll timestamps of the
// records); a serial bus with one dead slave that keeps serving the live ones; a device that reboots
// and is polled again without restarting the agent.

import Foundation
import Testing
import TestSupport

extension Reliability {
    @Suite("4. Device faults", needsBroker) struct DeviceFaults {
        @Test("one device of ten silent, slow, then speaking garbage: the other nine keep their 200 ms schedule, the bad one is marked, and recovers",
              .timeLimit(.minutes(3)))
        func oneBadDeviceOfTen() async throws {
            let sandbox = Sandbox("ten")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(10, registers: 2)
            let sim = try Sim(sandbox, machines: fleet, control: true)
            // A timeout five times the interval: if a bad device held the others up, they would get at
            // most one poll per second instead of five.
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url, interval: "200ms", timeout: "1s")
            let agent = try Agent(sandbox, config: config, stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { Set(subscriber.ledger.messages.map(\.device)).count == 10 })

            let healthy = fleet.dropLast().map(\.name)
            let phases: [(name: String, faults: String)] = [("silent", "no_response: true"), ("slow", "slow: 2s"), ("garbage", "garbled: true")]
            let window = Environment.soak ? 60.0 : 5.0
            for phase in phases {
                let (status, body) = try sim.control("PUT", "/machines/m10/faults", body: phase.faults)
                try #require(status == 200, "\(phase.name): \(body)")
                let start = TestSupport.nowMs
                await pause(window)
                let end = TestSupport.nowMs
                _ = try sim.control("DELETE", "/machines/m10/faults")
                let cleared = TestSupport.nowMs
                // Records of this phase (skip the first second, when the fault may not have hit yet).
                await pause(1.5)
                let ledger = subscriber.ledger
                let from = start + 1000
                let nominal = Int(Double(end - from) / 200)
                var lines: [String] = []
                for device in healthy {
                    let messages = ledger.messages(of: device).filter { $0.ts >= from && $0.ts < end }
                    let times = Array(Set(messages.map(\.ts))).sorted()
                    let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
                    #expect(times.count * 10 >= nominal * 4, "\(phase.name): \(device) polled \(times.count) times in \(end - from) ms (nominal \(nominal))")
                    #expect(messages.allSatisfy { $0.points.allSatisfy { $0.quality == "good" } }, "\(phase.name): \(device) had bad records")
                    lines.append("\(device) \(times.count) polls, max gap \(gaps.max() ?? 0) ms")
                }
                let bad = ledger.messages(of: "m10").filter { $0.ts >= from && $0.ts < end }
                let qualities = Set(bad.flatMap { $0.points.map(\.quality) })
                #expect(!qualities.isEmpty && !qualities.contains("good"), "\(phase.name): m10 qualities \(qualities)")
                let minPolls = healthy.map { d in Set(ledger.messages(of: d).filter { $0.ts >= from && $0.ts < end }.map(\.ts)).count }.min() ?? 0
                report("one bad of ten, m10 \(phase.name) (\(phase.faults)): the nine healthy polled \(minPolls)...\(nominal) times in \(end - from) ms (nominal \(nominal) at 200 ms); m10 qualities \(qualities.sorted()); \(lines.prefix(3).joined(separator: "; "))")
                // Recovers once the fault is cleared, without a restart. (After a late or garbled answer the
                // TCP link used to stay one answer behind for good; fixed in 26b39cc: the link is reopened.)
                let recovered = await TestSupport.waitUntil(timeout: 40, interval: 0.3) {
                    subscriber.ledger.messages(of: "m10").contains { $0.ts > cleared && $0.points.allSatisfy { $0.quality == "good" } }
                }
                #expect(recovered, "\(phase.name): m10 did not recover after the fault was cleared")
                report("  m10 after clearing \(phase.name): recovered \(recovered)")
            }
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            let ledger = await subscriber.waitForAll(below: status.nextSeq)
            expectDelivered(ledger, nextSeq: status.nextSeq)
            // State changes are logged once per change, not once per poll.
            let badLines = agent.logLines(containing: "device is bad").filter { $0.contains("device=m10") }
            #expect((phases.count...phases.count * 4).contains(badLines.count), "\(badLines)")
            #expect(agent.logLines(containing: "device is bad").allSatisfy { $0.contains("device=m10") })
        }

        @Test("a serial bus with one dead slave: the three live slaves keep being served, the dead one costs its timeout once per backoff period",
              .timeLimit(.minutes(2)))
        func deadSlaveOnASerialBus() async throws {
            let sandbox = Sandbox("rtu")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let link = sandbox.path("line1").path
            var scenario = "description: one RS-485 line\nseed: 7\nspeed: 1\ntick: 100ms\n"
            scenario += "serial_buses:\n  line1: { link: \(link), baud: 38400 }\nmachines:\n"
            for unit in 1...3 {
                scenario += "  - name: s\(unit)\n    rtu: { bus: line1, unit: \(unit) }\n    registers:\n"
                scenario += "      - { name: r0, area: holding, address: 0, type: uint16, counter: { every: 100ms } }\n"
                scenario += "      - { name: r1, area: holding, address: 1, type: uint16, value: \(unit) }\n"
            }
            _ = try Sim(sandbox, scenario: scenario)
            var lines = ["agent: { name: gw, site: s1 }", "defaults: { interval: 200ms, timeout: 1s, retries: 0 }",
                         "serial_buses:", "  line1: { port: \(link), baud: 38400 }", "devices:"]
            // Unit 7 has no machine behind it: on a real bus, silence.
            for (name, unit) in [("s1", 1), ("s2", 2), ("s3", 3), ("dead", 7)] {
                lines += ["  - name: \(name)", "    rtu: { bus: line1 }", "    unit: \(unit)", "    signals:",
                          "      - { name: r0, area: holding, address: 0, type: uint16 }",
                          "      - { name: r1, area: holding, address: 1, type: uint16 }"]
            }
            lines += ["mqtt:", "  broker: \(broker.url)"]
            let config = sandbox.path("rtu.yaml")
            try (lines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
            let agent = try Agent(sandbox, config: config, stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await agent.waitForLog("device is bad"), "\(agent.output)")
            let start = TestSupport.nowMs
            await pause(Environment.soak ? 60 : 8)
            let end = TestSupport.nowMs
            await pause(1)
            let ledger = subscriber.ledger
            let nominal = Int(Double(end - start) / 200)
            var counts: [String: Int] = [:]
            for device in ["s1", "s2", "s3"] {
                let messages = ledger.messages(of: device).filter { $0.ts >= start && $0.ts < end }
                counts[device] = Set(messages.map(\.ts)).count
                // At least 40 % of the nominal polls; a dead slave costing its 1 s timeout every cycle would allow 20 %.
                #expect(counts[device, default: 0] * 5 >= nominal * 2, "\(device): \(counts[device, default: 0]) polls in \(end - start) ms (nominal \(nominal))")
                #expect(messages.allSatisfy { $0.points.allSatisfy { $0.quality == "good" } }, "\(device) had bad records")
                #expect(messages.contains { $0.points.contains { $0.signal == "r1" && $0.value == String(device.dropFirst()) } })
            }
            let dead = ledger.messages(of: "dead").filter { $0.ts >= start && $0.ts < end }
            let deadQualities = Set(dead.flatMap { $0.points.map(\.quality) })
            #expect(!dead.isEmpty && !deadQualities.contains("good"), "\(deadQualities)")
            let deadLines = agent.logLines(containing: "device is bad")
            #expect(deadLines.count == 1 && deadLines.allSatisfy { $0.contains("device=dead") }, "\(deadLines)")
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            expectDelivered(await subscriber.waitForAll(below: status.nextSeq), nextSeq: status.nextSeq)
            report("serial bus, dead unit 7 (timeout 1 s): live slaves polled \(counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) times in \(end - start) ms (nominal \(nominal) at 200 ms); dead slave: \(dead.count) records, qualities \(deadQualities.sorted())")
        }

        @Test("the devices reboot (the simulator killed and started again): marked offline, then polled again without restarting the agent",
              .timeLimit(.minutes(2)))
        func deviceReboots() async throws {
            let sandbox = Sandbox("reboot")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(2)
            let first = try Sim(sandbox, machines: fleet, name: "first.yaml")
            let agent = try Agent(sandbox, config: try writeAgentConfig(sandbox, machines: fleet, broker: broker.url),
                                  stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { subscriber.ledger.messages.count >= 10 })
            let pid = agent.pid

            first.process.signal(SIGKILL)
            first.process.waitForExit(timeout: 10)
            let down = TestSupport.nowMs
            #expect(await agent.waitForLog("device is bad", count: 2), "\(agent.output)")
            await pause(3)
            let restarting = TestSupport.nowMs
            _ = try Sim(sandbox, machines: fleet, name: "second.yaml")
            let up = TestSupport.nowMs
            #expect(await agent.waitForLog("device is good", count: 4, timeout: 40), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 30) {
                fleet.allSatisfy { m in subscriber.ledger.messages(of: m.name).contains { $0.ts > up && $0.points.allSatisfy { $0.quality == "good" } } }
            }, "no good records after the reboot")
            #expect(agent.pid == pid && agent.isRunning)
            let ledger = subscriber.ledger
            let during = ledger.messages.filter { $0.ts > down + 500 && $0.ts < restarting }
            let qualities = Set(during.flatMap { $0.points.map(\.quality) })
            #expect(!during.isEmpty && !qualities.contains("good"), "\(qualities)")
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            expectDelivered(await subscriber.waitForAll(below: status.nextSeq), nextSeq: status.nextSeq)
            let badLines = agent.logLines(containing: "device is bad")
            report("reboot: while the devices were down \(during.count) records with qualities \(qualities.sorted()); 'device is bad' \(badLines.count)x, e.g. '\(badLines.first.map(String.init) ?? "")'; good again after the restart, same agent pid")
        }
    }
}
