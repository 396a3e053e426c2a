// What the platform end-to-end tests share: a simulated plant (three temperature controllers from
// the shipped profile, two on an RS-485 line over a pty and one on TCP, with the control interface
// for faults), an in-process MQTT recorder that keeps binary payloads (Sparkplug), and a tiny HTTP
// client for the simulator's control interface.
import Foundation
import MQTT
import Synchronization
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

struct PlatformTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// uplink-sim serving tc-01 and tc-02 (units 1 and 2 on a pty line) and oven (TCP), all from
/// Simulators/temperature-controller.yaml (set point writable 0..400 degC, the `run` coil writable).
final class Plant {
    let directory: URL
    let line: URL
    let process: ChildProcess
    private(set) var ovenPort = 0
    private(set) var controlPort = 0

    init(directory: URL) throws {
        self.directory = directory
        line = directory.appendingPathComponent("line1")
        let profile = TestSupport.repoRoot.appendingPathComponent("Simulators/temperature-controller.yaml").path
        let scenario = """
        description: platform test plant
        seed: 3
        speed: 1
        tick: 100ms
        control: 0
        serial_buses:
          line1: { link: \(line.path), baud: 9600 }
        machines:
          - { include: \(profile), name: "tc-{n}", count: 2, rtu: { bus: line1, unit: 1 } }
          - { include: \(profile), name: oven, tcp: { port: 0, unit: 1 } }

        """
        let file = directory.appendingPathComponent("plant.yaml")
        try scenario.write(to: file, atomically: true, encoding: .utf8)
        process = try ChildProcess(TestSupport.product("uplink-sim"), [file.path])
        guard process.waitForOutput(containing: "\nready", timeout: 20) else {
            process.stop()
            throw PlatformTestError("uplink-sim did not start: \(process.outputText)")
        }
        for line in process.outputText.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("control: "), let url = words.last, let port = url.split(separator: ":").last?.split(separator: "/").first.flatMap({ Int($0) }) {
                controlPort = port
            }
            if words.first == "oven", let tcp = words.firstIndex(of: "tcp"), tcp + 1 < words.count,
               let port = words[tcp + 1].split(separator: ":").last.flatMap({ Int($0) }) {
                ovenPort = port
            }
        }
        guard ovenPort > 0, controlPort > 0 else {
            process.stop()
            throw PlatformTestError("uplink-sim printed no oven port or control port: \(process.outputText)")
        }
    }

    /// The devices of an agent config polling the plant (two-space indented list items).
    func devicesYAML(interval: String = "200ms") -> String {
        """
        defaults: { interval: \(interval), timeout: 300ms, retries: 0, heartbeat: 5s }
        serial_buses:
          line1: { port: \(line.path), baud: 9600 }
        devices:
        \(["tc-01", "tc-02"].enumerated().map { index, name in Self.device(name, transport: "rtu: { bus: line1 }", unit: index + 1) }.joined(separator: "\n"))
        \(Self.device("oven", transport: "tcp: { host: 127.0.0.1, port: \(ovenPort) }", unit: 1))
        """
    }

    static func device(_ name: String, transport: String, unit: Int) -> String {
        """
          - name: \(name)
            type: temperature-controller
            \(transport)
            unit: \(unit)
            signals:
              - { name: run, area: coil, address: 0, type: bool, writable: true }
              - { name: process_value, area: holding, address: 0, type: int16, scale: 0.1, unit: degC, deadband: 0.05 }
              - { name: setpoint, area: holding, address: 1, type: int16, scale: 0.1, unit: degC, writable: { min: 0, max: 300 } }
              - { name: output, area: holding, address: 2, type: uint16, scale: 0.1, unit: "%" }
              - { name: status, area: holding, address: 4, type: uint16 }
              - { name: model, area: holding, address: 20, type: string, registers: 6, attribute: true }
        """
    }

    /// Replaces a machine's faults (`{"offline": "60s"}`), or clears them with nil.
    func faults(_ machine: String, _ body: String?) throws {
        let response = try HTTPClient.request(port: controlPort, method: body == nil ? "DELETE" : "PUT",
                                              path: "/machines/\(machine)/faults", body: body ?? "")
        guard response.status == 200 else { throw PlatformTestError("faults of \(machine): \(response.status) \(response.body)") }
    }

    /// A machine's values by name, from the control interface.
    func values(_ machine: String) throws -> [String: Any] {
        let response = try HTTPClient.request(port: controlPort, method: "GET", path: "/machines/\(machine)")
        let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
        return object?["values"] as? [String: Any] ?? [:]
    }

    func stop() { process.stop() }
    deinit { process.stop() }
}


/// An MQTT client that records every message on its subscriptions, binary payloads intact, and
/// can publish (commands from a pretend platform).
final class Recorder: Sendable {
    struct Message: Sendable {
        var topic: String
        var payload: [UInt8]
        var retain: Bool
        var text: String { String(decoding: payload, as: UTF8.self) }
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any]) ?? [:] }
    }

    let client: MQTTClient
    private let state = State()

    final class State: Sendable {
        let received = Mutex<[Message]>([])
        let subscribed = Mutex(0)
    }

    /// `persistent`: a kept session (clean session off), so what is published while the recorder is
    /// away (a broker restart) is delivered when it is back.
    init(port: Int, filters: [String], persistent: Bool = false) async throws {
        client = try MQTTClient(MQTTOptions(host: "127.0.0.1", port: port, clientID: "recorder-\(UUID().uuidString.prefix(8))",
                                            cleanSession: !persistent,
                                            reconnect: MQTTReconnectPolicy(initialDelay: .milliseconds(200), maxDelay: .seconds(1))))
        for filter in filters { try client.subscribe(filter, qos: .atLeastOnce) }
        let events = client.events
        Task { [state] in
            for await event in events {
                switch event {
                case .message(let m): state.received.withLock { $0.append(Message(topic: m.topic, payload: m.payload, retain: m.retain)) }
                case .subscribed: state.subscribed.withLock { $0 += 1 }
                default: break
                }
            }
        }
        try client.start()
        try await client.waitUntilConnected(timeout: .seconds(15))
        let deadline = Date().addingTimeInterval(10)
        while state.subscribed.withLock({ $0 }) < filters.count && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        guard state.subscribed.withLock({ $0 }) >= filters.count else { throw PlatformTestError("no SUBACK for \(filters)") }
    }

    var messages: [Message] { state.received.withLock { $0 } }

    func messages(on topic: String) -> [Message] { messages.filter { $0.topic == topic } }

    func publish(_ topic: String, _ payload: [UInt8], qos: MQTTQoS = .atLeastOnce) throws {
        try client.publish(topic: topic, payload: payload, qos: qos)
    }

    /// Waits until `condition` holds on the messages so far; returns whether it did.
    func wait(timeout: Double = 20, _ condition: ([Message]) -> Bool) async -> Bool {
        await TestSupport.waitUntil(timeout: timeout, interval: 0.05) { condition(messages) }
    }

    func stop() async { await client.disconnect() }
}
