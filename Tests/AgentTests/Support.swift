import Foundation
import Testing
import TestSupport

/// One end-to-end setup: a temporary directory, a broker, simulated machines, and the agent config.
final class Scene {
    let directory: URL
    let stateDirectory: URL
    let broker: Mosquitto
    let machines: [SimulatedMachine]
    let simulator: SimulatorProcess
    let agentName: String
    let site = "s1"

    init(machines: Int = 2, registers: Int = 3, agentName: String = "gw", passwordFile: URL? = nil,
         certificates: TestCertificates? = nil) throws {
        directory = TestSupport.temporaryDirectory("uplink-e2e")
        stateDirectory = directory.appendingPathComponent("state")
        self.agentName = agentName
        let listener = certificates.map {
            Mosquitto.TLSListener(certificateFile: $0.serverCertificateFile, keyFile: $0.serverKeyFile)
        }
        broker = try Mosquitto(directory: directory.appendingPathComponent("broker"), tls: listener, passwordFile: passwordFile?.path)
        self.machines = (1...machines).map { SimulatedMachine(name: "m\($0)", registers: registers) }
        simulator = try SimulatorProcess(machines: self.machines, directory: directory)
    }

    /// Stops the simulator and the broker and removes the directory (processes the test started
    /// itself are stopped by their own `defer`).
    func stop() {
        simulator.stop()
        broker.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    var statusTopic: String { "uplink/\(site)/\(agentName)/status" }

    /// An agent config polling every machine; `mqtt` and `buffer` are extra lines (two-space indented keys).
    func config(interval: String = "100ms", broker url: String? = nil, mqtt: [String] = [], buffer: [String] = [],
                rename: [String: String] = [:], file: String = "uplink.yaml") throws -> URL {
        var lines = [
            "agent: { name: \(agentName), site: \(site) }",
            "defaults: { interval: \(interval), timeout: 500ms, retries: 0 }",
            "devices:",
        ]
        lines += machines.map { $0.deviceYAML(rename: rename) }
        lines += ["mqtt:", "  broker: \(url ?? broker.url)", "  reconnect_min: 200ms", "  reconnect_max: 1s"] + mqtt.map { "  " + $0 }
        if !buffer.isEmpty { lines += ["buffer:"] + buffer.map { "  " + $0 } }
        return try TestSupport.write(lines.joined(separator: "\n") + "\n", to: file, in: directory)
    }

    func startAgent(_ config: URL, stateDirectory: URL? = nil) throws -> AgentProcess {
        try AgentProcess(config: config, stateDirectory: stateDirectory ?? self.stateDirectory)
    }

    func subscribe(username: String? = nil, password: String? = nil) async throws -> MQTTSubscriber {
        try await MQTTSubscriber(broker: broker, username: username, password: password)
    }
}

/// Waits until the subscriber holds every seq below the agent's final `next_seq`.
func waitForCompleteDelivery(_ subscriber: MQTTSubscriber, nextSeq: UInt64, timeout: Double = 30) async throws -> DeliveryCheck {
    var check = DeliveryCheck(received: subscriber.messages)
    _ = try await TestSupport.waitUntil(timeout: timeout, interval: 0.2) {
        try subscriber.ensureRunning()
        check = DeliveryCheck(received: subscriber.messages)
        return check.isComplete(nextSeq: nextSeq)
    }
    return check
}

/// The delivery promises every test checks: no gap up to `nextSeq - 1`, nothing beyond, first
/// occurrences in order per device, repeats identical to the first copy.
func expectCompleteAndOrdered(_ check: DeliveryCheck, nextSeq: UInt64, devices: [String],
                              sourceLocation: SourceLocation = #_sourceLocation) {
    let missing = nextSeq > 1 ? check.missing(in: 1...(nextSeq - 1)) : []
    #expect(missing.isEmpty, "missing \(missing.count) seqs, first \(missing.prefix(10))", sourceLocation: sourceLocation)
    #expect(check.seqs.allSatisfy { $0 >= 1 && $0 < nextSeq }, "seqs outside 1..<\(nextSeq)", sourceLocation: sourceLocation)
    #expect(check.orderViolations.isEmpty, "\(check.orderViolations.prefix(5))", sourceLocation: sourceLocation)
    #expect(check.inconsistentRepeats.isEmpty, "\(check.inconsistentRepeats.prefix(5))", sourceLocation: sourceLocation)
    #expect(Set(check.messages.map(\.device)) == Set(devices), sourceLocation: sourceLocation)
}

/// The `state` field of a retained status message.
func statusState(_ payload: String?) -> String? {
    guard let payload, let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else { return nil }
    return object["state"] as? String
}
