import Collector
import Foundation
import Modbus
import Synchronization
import Testing
import TestSupport
import UplinkCore

/// Collects what a Collector hands out.
final class Sink: Sendable {
    private let state = Mutex<(batches: [PollBatch], events: [CollectorEvent])>(([], []))
    func batch(_ b: PollBatch) { state.withLock { $0.batches.append(b) } }
    func event(_ e: CollectorEvent) { state.withLock { $0.events.append(e) } }
    func batches(_ device: String) -> [PollBatch] { state.withLock { $0.batches.filter { $0.device == device } } }
    func events(_ device: String) -> [CollectorEvent] {
        state.withLock { $0.events.filter { if case .deviceState(let d, _, _) = $0 { d == device } else { false } } }
    }

    /// Waits (up to `timeout` s) until `condition` holds.
    @discardableResult
    func wait(timeout: Double = 20, until condition: (Sink) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(self) { return true }
            usleep(20_000)
        }
        return condition(self)
    }
}

func plan(_ device: Device) throws -> PollPlan { try Planner.plan(device).get() }

let pymodbusSignals: [Signal] = [
    Signal(name: "counter", area: .holdingRegister, address: 3, type: .uint16),
    Signal(name: "f_abcd", area: .holdingRegister, address: 100, type: .float32, unit: "bar"),
    Signal(name: "f_cdab", area: .holdingRegister, address: 102, type: .float32, order: .cdab),
    Signal(name: "big", area: .holdingRegister, address: 104, type: .int64),
    Signal(name: "model", area: .holdingRegister, address: 108, type: .string(registers: 4)),
    Signal(name: "scaled", area: .inputRegister, address: 5, type: .uint16, scale: 0.1, offset: -100),
    Signal(name: "coil3", area: .coil, address: 3, type: .bool),
    Signal(name: "di2", area: .discreteInput, address: 2, type: .bool),
    Signal(name: "bit", area: .holdingRegister, address: 1, type: .bit(0)),
]

func values(_ batch: PollBatch) -> [String: Value] {
    Dictionary(uniqueKeysWithValues: batch.records.compactMap { r in r.value.map { (r.signal, $0) } })
}

@Suite("Poller and collector against real servers", .serialized)
struct CollectorTests {
    @Test func oneTCPPollDecodesEveryType() throws {
        let server = try PymodbusServer()
        defer { server.stop() }
        let device = Device(name: "peer", transport: .tcp(host: "127.0.0.1", port: server.port), poll: PollSettings(timeoutMs: 2000),
                            signals: pymodbusSignals)
        let p = try plan(device)
        let client = try ModbusClient.make(for: device.transport, timeoutMs: 2000)
        try client.connect()
        let outcome = DevicePoller(device: device).poll(p.groups.flatMap(\.requests), with: client, timestamp: 1234)
        #expect(outcome.failure == nil)
        #expect(outcome.batch.records.allSatisfy { $0.quality == .good && $0.timestamp == 1234 })
        let v = values(outcome.batch)
        #expect(v["counter"] == .uint(1003))
        #expect(v["f_abcd"] == .double(123.25))
        #expect(v["f_cdab"] == .double(123.25))
        #expect(v["big"] == .int(-1_234_567_890_123))
        #expect(v["model"] == .string("IMM-3000"))
        #expect(v["scaled"] == .double(2005 * 0.1 - 100))
        #expect(v["coil3"] == .bool(true))
        #expect(v["di2"] == .bool(false))
        #expect(v["bit"] == .bool(true), "1001 is odd")
        #expect(outcome.batch.records.first { $0.signal == "f_abcd" }?.unit == "bar")
        #expect(p.requestsPerCycle == 5, "holding 1..3, holding 100..111, input, coil, discrete")
    }

    @Test func exceptionGivesItsQualityToTheSignalsOfThatRequestOnly() throws {
        let server = try PymodbusServer()
        defer { server.stop() }
        let device = Device(name: "peer", transport: .tcp(host: "127.0.0.1", port: server.port), poll: PollSettings(timeoutMs: 2000, maxGap: 0),
                            signals: [Signal(name: "ok", area: .holdingRegister, address: 0, type: .uint16),
                                      Signal(name: "missing", area: .holdingRegister, address: 900, type: .uint16)])
        let client = try ModbusClient.make(for: device.transport, timeoutMs: 2000)
        try client.connect()
        let outcome = DevicePoller(device: device).poll(try plan(device).groups.flatMap(\.requests), with: client, timestamp: 1)
        let quality = Dictionary(uniqueKeysWithValues: outcome.batch.records.map { ($0.signal, $0.quality) })
        #expect(quality == ["ok": .good, "missing": .exception(2)])
        #expect(outcome.answered == 2)
    }

    @Test func aDeviceThatTimesOutBeforeAnsweringAnythingIsNotAskedTheRestOfThePoll() throws {
        let silent = try RawTCPServer(.silent)
        defer { silent.stop() }
        let device = Device(name: "dead", transport: .tcp(host: "127.0.0.1", port: silent.port), poll: PollSettings(timeoutMs: 200, retries: 0, maxGap: 0),
                            signals: [Signal(name: "a", area: .holdingRegister, address: 0, type: .uint16),
                                      Signal(name: "b", area: .holdingRegister, address: 100, type: .uint16),
                                      Signal(name: "c", area: .inputRegister, address: 0, type: .uint16)])
        let client = try ModbusClient.make(for: device.transport, timeoutMs: 200)
        try client.connect()
        let outcome = DevicePoller(device: device).poll(try plan(device).groups.flatMap(\.requests), with: client, timestamp: 1)
        #expect(outcome.batch.records.map(\.quality) == [.timeout, .timeout, .timeout])
        #expect(outcome.answered == 0)
        #expect(silent.requestsReceived == 1, "only the first request was sent")
    }

    @Test func aSilentDeviceDoesNotStallALiveOne() throws {
        let server = try PymodbusServer()
        let silent = try RawTCPServer(.silent)
        defer { server.stop(); silent.stop() }
        let signals = [Signal(name: "v", area: .holdingRegister, address: 0, type: .uint16, intervalMs: 100)]
        let live = Device(name: "live", transport: .tcp(host: "127.0.0.1", port: server.port), poll: PollSettings(intervalMs: 100, timeoutMs: 2000), signals: signals)
        let dead = Device(name: "dead", transport: .tcp(host: "127.0.0.1", port: silent.port), poll: PollSettings(intervalMs: 100, timeoutMs: 1500, retries: 1), signals: signals)
        let sink = Sink()
        let collector = Collector(plans: [try plan(live), try plan(dead)], onBatch: sink.batch, onEvent: sink.event)
        collector.start()
        // While the dead device spends 3 s on its first poll (timeout + retry), the live one keeps polling.
        let gotTimeout = sink.wait { $0.batches("dead").contains { $0.records.first?.quality == .timeout } }
        let liveDuringDeadPoll = sink.batches("live").count
        sink.wait { $0.batches("dead").count >= 3 }
        collector.stop()
        #expect(gotTimeout)
        #expect(liveDuringDeadPoll >= 5, "live device polled \(liveDuringDeadPoll) times during the dead one's first timeout")
        #expect(sink.batches("live").allSatisfy { $0.records.allSatisfy { $0.quality == .good } })
        // One state change (unknown -> timeout), however many failed polls.
        #expect(sink.events("dead") == [.deviceState(device: "dead", quality: .timeout, detail: "no response within the timeout")])
        #expect(sink.events("live").count == 1)
        let health = Dictionary(uniqueKeysWithValues: collector.health().map { ($0.device, $0) })
        #expect(health["dead"]?.state == .timeout)
        #expect(health["live"]?.state == .good)
        #expect((health["dead"]?.failedPolls ?? 0) >= 3)
    }

    @Test func aDeviceThatComesBackIsPickedUpWithoutARestart() throws {
        let port = TestSupport.freeTCPPort()
        let device = Device(name: "late", transport: .tcp(host: "127.0.0.1", port: port), poll: PollSettings(intervalMs: 200, timeoutMs: 1000),
                            signals: [Signal(name: "v", area: .holdingRegister, address: 0, type: .uint16)])
        let sink = Sink()
        let collector = Collector(plans: [try plan(device)], onBatch: sink.batch, onEvent: sink.event)
        collector.start()
        defer { collector.stop() }
        #expect(sink.wait { $0.batches("late").count >= 2 })
        #expect(sink.batches("late").allSatisfy { $0.records.first?.quality == .offline })
        let server = try PymodbusServer(port: port)
        defer { server.stop() }
        let recovered = sink.wait(timeout: 40) { $0.batches("late").last?.records.first?.value == .uint(1000) }
        #expect(recovered)
        let states: [Quality] = sink.events("late").map { event -> Quality in
            if case .deviceState(_, let quality, _) = event { return quality }
            return .decodeError
        }
        #expect(states == [.offline, .good])
    }

    @Test func stopFinishesQuickly() throws {
        let silent = try RawTCPServer(.silent)
        defer { silent.stop() }
        let device = Device(name: "d", transport: .tcp(host: "127.0.0.1", port: silent.port), poll: PollSettings(intervalMs: 60_000, timeoutMs: 500, retries: 0),
                            signals: [Signal(name: "v", area: .holdingRegister, address: 0, type: .uint16)])
        let sink = Sink()
        let collector = Collector(plans: [try plan(device)], onBatch: sink.batch)
        collector.start()
        sink.wait { $0.batches("d").count == 1 }
        // The loop now sleeps for a minute; stop must wake it.
        let started = Date()
        collector.stop()
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(sink.batches("d").count == 1)
    }
}

@Suite("RTU over a pseudo-terminal", .serialized)
struct RTUTests {
    @Test func rtuReadsAndOneDeadSlaveDoesNotStopTheBus() throws {
        let server = try PymodbusRTUServer()
        defer { server.stop() }
        let settings = SerialSettings(port: server.port, baud: 9600)
        let signals = [Signal(name: "v", area: .holdingRegister, address: 0, type: .uint16),
                       Signal(name: "f", area: .holdingRegister, address: 100, type: .float32)]
        let live = Device(name: "unit1", transport: .rtu(bus: "line", settings: settings), unit: 1,
                          poll: PollSettings(intervalMs: 300, timeoutMs: 1000, retries: 0), signals: signals)
        let dead = Device(name: "unit9", transport: .rtu(bus: "line", settings: settings), unit: 9,
                          poll: PollSettings(intervalMs: 300, timeoutMs: 300, retries: 0), signals: signals)
        let sink = Sink()
        let collector = Collector(plans: [try plan(live), try plan(dead)], onBatch: sink.batch, onEvent: sink.event)
        collector.start()
        let enough = sink.wait(timeout: 40) { s in s.batches("unit1").filter { $0.records.allSatisfy(\.quality.isGood) }.count >= 4 && s.batches("unit9").count >= 2 }
        collector.stop()
        #expect(enough)
        let good = sink.batches("unit1").last.map(values) ?? [:]
        #expect(good["v"] == .uint(1000))
        #expect(good["f"] == .double(123.25))
        #expect(sink.batches("unit9").allSatisfy { $0.records.allSatisfy { !$0.quality.isGood } })
    }

    @Test func adHocRTUClientReads() throws {
        let server = try PymodbusRTUServer()
        defer { server.stop() }
        let client = try ModbusClient(serialPort: server.port, baud: 9600, parity: .none, dataBits: 8, stopBits: 1)
        client.setResponseTimeout(milliseconds: 1000)
        try client.connect()
        try client.setUnit(2)
        #expect(try client.readRegisters(.holdingRegisters, address: 0, count: 3) == [5000, 5001, 5002])
    }
}
