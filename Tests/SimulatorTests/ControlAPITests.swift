// The control interface's routes, called in-process (the HTTP framing is covered by the interop
// tests, which drive a running uplink-sim through it).

import Testing
@testable import Simulator

@Suite("Control interface routes")
struct ControlAPITests {
    func api() throws -> ControlAPI {
        var scenario = try ProfileLoader.load(yaml: """
        speed: 0
        machines:
          - { include: \(Paths.simulator("temperature-controller.yaml")), name: "tc-{n}", count: 2, tcp: { port: 0 } }
          - { include: \(Paths.simulator("injection-moulding.yaml")), name: press, tcp: { port: 0 } }
        """, file: "inline.yaml")
        scenario.seed = 5
        return ControlAPI(simulation: Simulation(scenario: scenario), endpoints: ["press": "tcp 127.0.0.1:1 unit 1"])
    }

    @Test("GET /machines lists every machine; GET /machines/NAME adds the values")
    func listing() throws {
        let api = try api()
        let list = api.handle(method: "GET", target: "/machines", body: "")
        #expect(list.status == 200)
        #expect(list.body.text.contains("\"name\":\"tc-01\"") && list.body.text.contains("\"name\":\"press\""))
        let one = api.handle(method: "GET", target: "/machines/press", body: "")
        #expect(one.status == 200)
        #expect(one.body.text.contains("\"endpoint\":\"tcp 127.0.0.1:1 unit 1\""))
        #expect(one.body.text.contains("\"model\":\"IMM160-HYD\"") && one.body.text.contains("\"state\":\"running\""))
        #expect(api.handle(method: "GET", target: "/machines/nope", body: "").status == 404)
        #expect(api.handle(method: "GET", target: "/nothing/here", body: "").status == 404)
    }

    @Test("PUT replaces faults, POST adds, DELETE clears, '*' means every machine")
    func faults() throws {
        let api = try api()
        let put = api.handle(method: "PUT", target: "/machines/tc-01/faults", body: #"{"slow": {"delay": "2s"}, "exception": "busy"}"#)
        #expect(put.status == 200)
        let machine = try #require(api.simulation.machine(named: "tc-01"))
        #expect(machine.faults == FaultSet(slow: .init(delay: 2), exception: .init(code: .serverDeviceBusy)))
        #expect(api.handle(method: "POST", target: "/machines/tc-01/faults", body: "no_response: 0.5").status == 200)
        #expect(machine.faults.activeNames == ["slow", "no_response", "exception"])
        #expect(api.handle(method: "PUT", target: "/machines/tc-01/faults", body: "garbled: true").status == 200)
        #expect(machine.faults.activeNames == ["garbled"])
        #expect(api.handle(method: "PUT", target: "/machines/*/faults", body: "short: true").status == 200)
        #expect(api.simulation.machines.allSatisfy { $0.faults.short == 1 })
        #expect(api.handle(method: "DELETE", target: "/machines/%2A/faults", body: "").status == 200)
        #expect(api.simulation.machines.allSatisfy { $0.faults.isEmpty })
        // The GET shape is what PUT accepts.
        machine.setFaults(FaultSet(slow: .init(delay: 0.25, jitter: 0.05), offline: .init(after: 5, duration: 10, every: 60)))
        let shown = ControlAPI.json(machine.faults).text
        #expect(api.handle(method: "PUT", target: "/machines/tc-02/faults", body: shown).status == 200)
        #expect(api.simulation.machine(named: "tc-02")?.faults == machine.faults)
    }

    @Test("a bad fault body is a 400 that says where and what")
    func badBody() throws {
        let response = try api().handle(method: "PUT", target: "/machines/tc-01/faults", body: "{\"slow\": 5}")
        #expect(response.status == 400)
        #expect(response.body.text.contains("request body:1:10: slow: expected a duration with a unit"))
        #expect(try api().handle(method: "PUT", target: "/machines/tc-01/faults", body: "{\"teleport\": true}").status == 400)
    }

    @Test("POST /machines/NAME/state forces a state; unknown states are refused with the list")
    func state() throws {
        let api = try api()
        #expect(api.handle(method: "POST", target: "/machines/press/state", body: #"{"state": "alarm"}"#).status == 200)
        #expect(api.simulation.machine(named: "press")?.model.stateName == "alarm")
        #expect(api.handle(method: "POST", target: "/machines/press/state", body: "setup").status == 200)
        let refused = api.handle(method: "POST", target: "/machines/press/state", body: "lunch")
        #expect(refused.status == 400 && refused.body.text.contains("running, idle, setup, alarm, heating"))
        #expect(api.handle(method: "POST", target: "/machines/tc-01/state", body: "running").status == 400)
    }

    @Test("POST /time/step advances simulated time for every machine")
    func step() throws {
        let api = try api()
        let response = api.handle(method: "POST", target: "/time/step", body: #"{"by": "90s"}"#)
        #expect(response.status == 200 && response.body.text.contains("\"time\":90"))
        #expect(api.handle(method: "POST", target: "/time/step?by=500ms", body: "").status == 200)
        #expect(abs(api.simulation.time - 90.5) < 1e-9)
        #expect(api.simulation.machines.allSatisfy { abs($0.model.time - 90.5) < 1e-6 })
        #expect(api.handle(method: "POST", target: "/time/step", body: "{\"by\": 90}").status == 400)
        #expect(api.handle(method: "GET", target: "/time", body: "").body.text.contains("\"speed\":0"))
    }

    @Test("the HTTP request parser: complete requests only, and no trap on a hostile Content-Length")
    func httpParser() {
        let request = Array("PUT /machines/a/faults HTTP/1.1\r\nContent-Length: 4\r\n\r\nab".utf8)
        #expect(ControlConnection.parse(request) == nil)
        let parsed = ControlConnection.parse(request + Array("cd".utf8))
        #expect(parsed?.method == "PUT" && parsed?.target == "/machines/a/faults" && parsed?.body == "abcd")
        #expect(ControlConnection.parse(Array("GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n".utf8))?.method == "BAD")
        #expect(ControlConnection.parse(Array("\r\n\r\n".utf8))?.method == "BAD")
    }
}
