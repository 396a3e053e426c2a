import Testing
@testable import UplinkCore

@Suite("Report by exception")
struct ExceptionFilterTests {
    func record(_ value: Value?, at ts: Int64, quality: Quality = .good, signal: String = "t") -> Record {
        Record(device: "d", signal: signal, timestamp: ts, value: value, quality: quality)
    }

    func device(_ policies: [String: ReportPolicy]) -> Device {
        Device(name: "d", transport: .tcp(host: "h", port: 502), signals: policies.keys.sorted().enumerated().map { index, name in
            Signal(name: name, area: .holdingRegister, address: index, type: .int16, report: policies[name] ?? .everyPoll)
        })
    }

    /// Runs the values through the filter one poll each (1 s apart) and returns the indexes reported.
    func reported(_ values: [Value?], policy: ReportPolicy, qualities: [Quality]? = nil) -> [Int] {
        var filter = ExceptionFilter(devices: [device(["t": policy])])
        var out: [Int] = []
        for (index, value) in values.enumerated() {
            let quality = qualities?[index] ?? .good
            let batch = PollBatch(device: "d", timestamp: Int64(index) * 1000, records: [record(quality.isGood ? value : nil, at: Int64(index) * 1000, quality: quality)])
            if !filter.filter(batch).records.isEmpty { out.append(index) }
        }
        return out
    }

    @Test func withoutPolicyEveryPollPasses() {
        #expect(reported([.int(1), .int(1), .int(1)], policy: .everyPoll) == [0, 1, 2])
        #expect(!ExceptionFilter(devices: [device(["t": .everyPoll])]).isActive)
    }

    @Test func absoluteDeadbandComparesWithTheLastReportedValue() {
        let values: [Value] = [.double(20.0), .double(20.4), .double(20.6), .double(21.0), .double(20.9), .double(21.7)]
        // 20.0 sent; 20.4 and 20.6 within 0.5 of 20.0? 20.6 is 0.6 away: sent; 21.0 is 0.4 from 20.6: not;
        // 20.9 not; 21.7 is 1.1 away: sent. A slow drift is reported once it adds up.
        #expect(reported(values, policy: ReportPolicy(deadband: .absolute(0.5))) == [0, 2, 5])
        #expect(reported([.int(5), .int(5), .int(6), .int(6)], policy: ReportPolicy(deadband: .absolute(0))) == [0, 2])
    }

    @Test func percentDeadbandIsRelativeToTheLastReportedValue() {
        let values: [Value] = [.double(100), .double(100.9), .double(101.5), .double(102.0), .double(0), .double(0), .double(0.001)]
        #expect(reported(values, policy: ReportPolicy(deadband: .percent(1))) == [0, 2, 4, 6])
    }

    @Test func heartbeatResendsUnchangedValues() {
        let same = Array(repeating: Value.int(7), count: 8)
        #expect(reported(same, policy: ReportPolicy(heartbeatMs: 3000)) == [0, 3, 6])
        // Heartbeat alone still reports every change at once.
        #expect(reported([.int(1), .int(2), .int(2), .int(2)], policy: ReportPolicy(heartbeatMs: 60_000)) == [0, 1])
    }

    @Test func qualityChangesAlwaysPassAndRepeatedBadQualityWaitsForTheHeartbeat() {
        let values = Array(repeating: Value.int(3), count: 7)
        let qualities: [Quality] = [.good, .timeout, .timeout, .timeout, .timeout, .good, .good]
        #expect(reported(values, policy: ReportPolicy(deadband: .absolute(100), heartbeatMs: 3000), qualities: qualities) == [0, 1, 4, 5])
        #expect(reported(values, policy: ReportPolicy(deadband: .absolute(100)), qualities: [.good, .timeout, .offline, .offline, .good, .good, .good]) == [0, 1, 2, 4])
    }

    @Test func nonNumbersReportOnChangeAndNaNIsNoChange() {
        #expect(ExceptionFilter.changed(from: .string("a"), to: .string("a"), deadband: .absolute(0)) == false)
        #expect(ExceptionFilter.changed(from: .string("a"), to: .string("b"), deadband: .absolute(0)))
        #expect(ExceptionFilter.changed(from: .bool(false), to: .bool(true), deadband: .absolute(5)))
        #expect(ExceptionFilter.changed(from: .double(.nan), to: .double(.nan), deadband: .absolute(1)) == false)
        #expect(ExceptionFilter.changed(from: .double(1), to: .double(.infinity), deadband: .absolute(1)))
        // 64-bit counters compared exactly when there is no deadband.
        #expect(ExceptionFilter.changed(from: .uint(1 << 60), to: .uint(1 << 60 + 1), deadband: nil))
    }

    @Test func clockStepsBackResend() {
        var filter = ExceptionFilter(devices: [device(["t": ReportPolicy(deadband: .absolute(10), heartbeatMs: 60_000)])])
        #expect(filter.filter(PollBatch(device: "d", timestamp: 10_000, records: [record(.int(1), at: 10_000)])).records.count == 1)
        #expect(filter.filter(PollBatch(device: "d", timestamp: 11_000, records: [record(.int(1), at: 11_000)])).records.isEmpty)
        #expect(filter.filter(PollBatch(device: "d", timestamp: 5_000, records: [record(.int(1), at: 5_000)])).records.count == 1)
    }

    @Test func onlyConfiguredSignalsAreFiltered() {
        var filter = ExceptionFilter(devices: [device(["t": ReportPolicy(deadband: .absolute(10)), "u": .everyPoll])])
        let batch = PollBatch(device: "d", timestamp: 0, records: [record(.int(1), at: 0), record(.int(1), at: 0, signal: "u")])
        #expect(filter.filter(batch).records.count == 2)
        #expect(filter.filter(batch).records.map(\.signal) == ["u"])
        // Another device's records pass untouched.
        let other = PollBatch(device: "x", timestamp: 0, records: [Record(device: "x", signal: "t", timestamp: 0, value: .int(1))])
        #expect(filter.filter(other).records.count == 1)
        #expect(filter.filter(other).records.count == 1)
    }

    @Test func platformTypeFromName() {
        func type(_ name: String, _ configured: String? = nil) -> String {
            Device(name: name, transport: .tcp(host: "h", port: 1), signals: [], type: configured).platformType
        }
        #expect(type("imm-01") == "imm")
        #expect(type("press_2") == "press")
        #expect(type("m1") == "modbus")
        #expect(type("meter") == "modbus")
        #expect(type("-01") == "modbus")
        #expect(type("imm-01", "injection-moulding") == "injection-moulding")
    }
}
