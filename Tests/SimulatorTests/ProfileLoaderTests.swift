// Profiles: the shipped ones load, and every broken one in Simulators/testcases is rejected with
// exactly the message on its first line (`# expect: ...`, where a leading ':' stands for the
// file's own path and {dir} for the testcases folder).

import Foundation
import Testing
@testable import Simulator

@Suite("Profile loading and validation")
struct ProfileLoaderTests {
    static let cases: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: Paths.testcases)) ?? []
        return names.filter { name in
            guard name.hasSuffix(".yaml"), let text = try? String(contentsOfFile: "\(Paths.testcases)/\(name)", encoding: .utf8) else {
                return false
            }
            return text.hasPrefix("# expect: ")
        }.sorted()
    }()

    @Test("there are enough broken-profile cases to mean something")
    func caseCount() {
        #expect(Self.cases.count >= 25)
    }

    @Test("a broken profile is rejected with file, line, column, key path and what was expected", arguments: cases)
    func brokenProfile(name: String) throws {
        let path = "\(Paths.testcases)/\(name)"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let firstLine = text.split(separator: "\n", maxSplits: 1).first.map(String.init) ?? ""
        var expected = String(firstLine.dropFirst("# expect: ".count)).replacingOccurrences(of: "{dir}", with: Paths.testcases)
        if expected.hasPrefix(":") { expected = path + expected }
        do {
            _ = try ProfileLoader.load(path: path)
            Issue.record("\(name) loaded, but should fail with: \(expected)")
        } catch {
            #expect(error.description == expected)
        }
    }

    @Test("every shipped profile loads", arguments: Paths.profiles)
    func shippedProfile(name: String) throws {
        let machine = try loadProfile(name)
        #expect(!machine.variables.isEmpty)
        #expect(!machine.kind.isEmpty)
    }

    @Test("the demo scenario: 11 machines where Configs/demo.yaml expects them")
    func demo() throws {
        let scenario = try ProfileLoader.load(path: Paths.simulator("demo.yaml"))
        #expect(scenario.seed == 42)
        #expect(scenario.controlPort == 8502)
        let endpoints = Dictionary(uniqueKeysWithValues: scenario.machines.map { ($0.name, $0.endpoint) })
        #expect(endpoints["imm-01"] == .tcp(host: "127.0.0.1", port: 5020, unit: 1))
        #expect(endpoints["imm-03"] == .tcp(host: "127.0.0.1", port: 5022, unit: 1))
        #expect(endpoints["cnc-02"] == .tcp(host: "127.0.0.1", port: 5024, unit: 1))
        #expect(endpoints["compressor-01"] == .tcp(host: "127.0.0.1", port: 5025, unit: 1))
        #expect(endpoints["meter-01"] == .tcp(host: "127.0.0.1", port: 5026, unit: 1))
        #expect(endpoints["meter-02"] == .tcp(host: "127.0.0.1", port: 5026, unit: 2))
        #expect(endpoints["tc-03"] == .rtu(bus: "line1", unit: 3))
        #expect(scenario.machines.count == 11)
        #expect(scenario.serialBuses.first?.link == "/tmp/uplink-sim-line1")
    }

    @Test("an included profile's keys can be overridden per machine, faults included")
    func includeOverrides() throws {
        let yaml = """
        machines:
          - include: \(Paths.simulator("temperature-controller.yaml"))
            name: oven-{n}
            count: 3
            vary: unit
            tcp: { port: 6000, unit: 5 }
            faults: { exception: { code: busy, probability: 0.25 }, offline: { after: 1m, for: 10s, every: 5m } }
        """
        let scenario = try ProfileLoader.load(yaml: yaml, file: "inline.yaml")
        #expect(scenario.machines.map(\.name) == ["oven-01", "oven-02", "oven-03"])
        #expect(scenario.machines.map(\.endpoint) == [.tcp(host: "127.0.0.1", port: 6000, unit: 5),
                                                        .tcp(host: "127.0.0.1", port: 6000, unit: 6),
                                                        .tcp(host: "127.0.0.1", port: 6000, unit: 7)])
        #expect(scenario.machines[0].faults.exception == FaultSet.Exception(code: .serverDeviceBusy, probability: 0.25))
        #expect(scenario.machines[0].faults.offline == FaultSet.Offline(after: 60, duration: 10, every: 300))
    }

    @Test("fault shorthands: true, a probability, a duration")
    func faultShorthands() throws {
        let faults = try ProfileLoader.parseFaults(yaml: """
        { slow: 1500ms, no_response: 0.1, exception: 6, drop_connection: true, garbled: false, wrong_unit: { unit: 9 }, offline: 30s }
        """, source: "body")
        #expect(faults.slow == FaultSet.Slow(delay: 1.5))
        #expect(faults.noResponse == 0.1)
        #expect(faults.exception == FaultSet.Exception(code: .serverDeviceBusy))
        #expect(faults.dropConnection == 1)
        #expect(faults.garbled == nil)
        #expect(faults.wrongUnit == FaultSet.WrongUnit(unit: 9, probability: 1))
        #expect(faults.offline == FaultSet.Offline(duration: 30))
    }
}
