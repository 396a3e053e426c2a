// The Sparkplug B 3.0 edge node profile (Eclipse Sparkplug specification 3.0.0).
//
//   spBv1.0/{group}/NBIRTH/{node}            after every connect: bdSeq, Node Control/Rebirth, seq 0
//   spBv1.0/{group}/DBIRTH/{node}/{device}   every metric with name, alias, datatype, current value
//   spBv1.0/{group}/DDATA/{node}/{device}    changed readings by alias (is_historical for late data)
//   spBv1.0/{group}/DDEATH/{node}/{device}   the machine stopped answering
//   spBv1.0/{group}/NDEATH/{node}            the MQTT will (bdSeq), and before a clean disconnect
//   spBv1.0/{group}/NCMD/{node}              in: Node Control/Rebirth
//   spBv1.0/{group}/DCMD/{node}/{device}     in: writes to writable signals
//
// Every message is QoS 0 and not retained except the NDEATH will (QoS 1), as the specification
// requires. `seq` counts 0-255 over every message of the session and wraps; NBIRTH is 0. Machine
// deaths and births are derived from the buffered polls themselves, so they stay in order with
// the data around them.
import Buffer
import Foundation
import SwiftProtobuf
import Synchronization
import UplinkCore

typealias SparkplugPayload = Org_Eclipse_Tahu_Protobuf_Payload
typealias SparkplugMetric = Org_Eclipse_Tahu_Protobuf_Payload.Metric
typealias SparkplugDataType = Org_Eclipse_Tahu_Protobuf_DataType

/// The birth/death sequence number (bdSeq): 0 on the very first connect, then one more for each new
/// MQTT connection (0 after 255), kept in the state directory so a restart continues the count.
/// The NDEATH will of a connection and the NBIRTH sent on it carry the same value.
public final class BirthDeathSequence: Sendable {
    private let file: URL?
    private let state: Mutex<UInt64?>

    /// `stateDirectory` nil keeps the count in memory only (tests).
    public init(stateDirectory: URL?) {
        file = stateDirectory?.appendingPathComponent("sparkplug-bdseq")
        var stored: UInt64?
        if let file, let text = try? String(contentsOf: file, encoding: .utf8),
           let value = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)), value <= 255 {
            stored = value
        }
        state = Mutex(stored)
    }

    /// The bdSeq of the current (or last) connection; nil before the first `advance()`.
    public var current: UInt64? { state.withLock { $0 } }

    /// Moves to the next connection's bdSeq, persists it and returns it. Call it before each new
    /// MQTT connection: its will carries the value.
    @discardableResult
    public func advance() -> UInt64 {
        let next = state.withLock { value -> UInt64 in
            let next = value.map { ($0 + 1) % 256 } ?? 0
            value = next
            return next
        }
        if let file {
            let temporary = file.appendingPathExtension("tmp")
            if FileManager.default.createFile(atPath: temporary.path, contents: Data("\(next)\n".utf8)) {
                if let handle = try? FileHandle(forWritingTo: temporary) {
                    try? handle.synchronize()
                    try? handle.close()
                }
                _ = rename(temporary.path, file.path)
            }
        }
        return next
    }
}

public struct SparkplugProfile: SessionProfile {
    public static let namespace = "spBv1.0"
    public static let rebirthMetric = "Node Control/Rebirth"
    /// Quality property values of the specification: 0 bad, 192 good, 500 stale.
    static let qualityBad: UInt32 = 0
    static let qualityStale: UInt32 = 500

    public let settings: SparkplugSettings
    private var table: DeviceTable
    private let bdSeq: BirthDeathSequence
    private let lastValues: LastValueCache
    private let maxMessageBytes: Int
    private let lateAfterMs: Int64

    private var aliases: [String: [String: UInt64]] = [:]
    private var byAlias: [UInt64: (device: String, signal: String)] = [:]
    /// The next message's seq.
    private var seq: UInt64 = 0
    private var inSession = false
    /// Devices with a DBIRTH in this session, and when.
    private var born: [String: Int64] = [:]
    /// Whether each machine answered its last buffered poll (nil: none seen yet).
    private var reachable: [String: Bool] = [:]

    public init(settings: SparkplugSettings, devices: [Device], bdSeq: BirthDeathSequence,
                lastValues: LastValueCache = LastValueCache(), maxMessageBytes: Int = 256 * 1024, lateAfterMs: Int64 = 10_000) {
        self.settings = settings
        self.table = DeviceTable(devices)
        self.bdSeq = bdSeq
        self.lastValues = lastValues
        self.maxMessageBytes = max(1024, maxMessageBytes)
        self.lateAfterMs = lateAfterMs
        assignAliases()
    }

    // MARK: Topics and the will

    public func topic(_ type: String, device: String? = nil) -> String {
        let base = "\(Self.namespace)/\(settings.groupID)/\(type)/\(settings.edgeNodeID)"
        return device.map { "\(base)/\($0)" } ?? base
    }

    public var subscriptions: [String] { [topic("NCMD"), topic("DCMD", device: "+")] }
    public var batchesPerMessage: Int { 8 }

    /// The NDEATH payload for `bdSeq`: the will of the connection that uses it.
    public static func deathPayload(bdSeq: UInt64, now: Int64) -> [UInt8] {
        var payload = SparkplugPayload()
        payload.timestamp = UInt64(max(0, now))
        var metric = SparkplugMetric()
        metric.name = "bdSeq"
        metric.timestamp = UInt64(max(0, now))
        metric.datatype = UInt32(SparkplugDataType.uint64.rawValue)
        metric.longValue = bdSeq
        payload.metrics = [metric]
        return Self.serialize(payload)
    }

    // MARK: Session

    public mutating func sessionStarted(now: Int64) -> [OutgoingMessage] {
        inSession = true
        return births(now: now)
    }

    public mutating func sessionLost() {
        inSession = false
        born.removeAll()
    }

    /// NDEATH before a clean disconnect (the broker then does not publish the will).
    public mutating func sessionEnding(now: Int64) -> [OutgoingMessage] {
        defer { sessionLost() }
        guard let value = bdSeq.current else { return [] }
        return [OutgoingMessage(topic: topic("NDEATH"), payload: Self.deathPayload(bdSeq: value, now: now), ranges: [], qos: 1)]
    }

    public mutating func devicesChanged(_ devices: [Device], now: Int64) -> [OutgoingMessage] {
        table = DeviceTable(devices)
        let names = Set(devices.map(\.name))
        reachable = reachable.filter { names.contains($0.key) }
        assignAliases()
        // New metric lists and aliases: a full rebirth.
        return inSession ? births(now: now) : []
    }

    /// NBIRTH (seq 0) and a DBIRTH for every machine that is answering (or not known to be down).
    mutating func births(now: Int64) -> [OutgoingMessage] {
        seq = 0
        born.removeAll()
        var out = [nodeBirth(now: now)]
        for device in table.devices {
            let latest = Array(lastValues.records(of: device.name).values)
            let up = reachable[device.name] ?? Reachability.of(latest)
            // A machine not polled yet is born with its first poll, with real values.
            if up == true { out.append(deviceBirth(device, records: [], now: now)) }
        }
        return out
    }

    private mutating func nodeBirth(now: Int64) -> OutgoingMessage {
        var payload = SparkplugPayload()
        payload.timestamp = UInt64(now)
        payload.seq = nextSeq()
        var bd = SparkplugMetric()
        bd.name = "bdSeq"
        bd.alias = 0
        bd.timestamp = UInt64(now)
        bd.datatype = UInt32(SparkplugDataType.uint64.rawValue)
        bd.longValue = bdSeq.current ?? 0
        var rebirth = SparkplugMetric()
        rebirth.name = Self.rebirthMetric
        rebirth.alias = 1
        rebirth.timestamp = UInt64(now)
        rebirth.datatype = UInt32(SparkplugDataType.boolean.rawValue)
        rebirth.booleanValue = false
        payload.metrics = [bd, rebirth]
        return OutgoingMessage(topic: topic("NBIRTH"), payload: Self.serialize(payload), ranges: [], qos: 0)
    }

    /// Every metric of `device`: the newest of `records` and the last-value cache for each signal.
    private mutating func deviceBirth(_ device: Device, records: [Record], now: Int64, ranges: [ClosedRange<UInt64>] = []) -> OutgoingMessage {
        var newest = lastValues.records(of: device.name)
        for record in records where (newest[record.signal]?.timestamp ?? .min) <= record.timestamp { newest[record.signal] = record }
        var payload = SparkplugPayload()
        payload.timestamp = UInt64(now)
        payload.seq = nextSeq()
        payload.metrics = device.signals.map { signal in
            var metric = SparkplugMetric()
            metric.name = signal.name
            metric.alias = aliases[device.name]?[signal.name] ?? 0
            metric.datatype = UInt32(Self.dataType(signal).rawValue)
            if let record = newest[signal.name] {
                metric.timestamp = UInt64(max(0, record.timestamp))
                Self.setValue(record, signal: signal, on: &metric)
            } else {
                metric.timestamp = UInt64(now)
                metric.isNull = true
                metric.properties = Self.qualityProperty(Self.qualityStale)
            }
            if let unit = signal.unit {
                var property = SparkplugPayload.PropertyValue()
                property.type = UInt32(SparkplugDataType.string.rawValue)
                property.stringValue = unit
                var properties = metric.hasProperties ? metric.properties : SparkplugPayload.PropertySet()
                properties.keys.append("engUnit")
                properties.values.append(property)
                metric.properties = properties
            }
            return metric
        }
        // Polls up to the newest value in the birth are history from now on.
        born[device.name] = newest.values.map(\.timestamp).max() ?? now
        return OutgoingMessage(topic: topic("DBIRTH", device: device.name), payload: Self.serialize(payload), ranges: ranges, qos: 0)
    }

    private mutating func deviceDeath(_ device: String, now: Int64, ranges: [ClosedRange<UInt64>]) -> OutgoingMessage {
        var payload = SparkplugPayload()
        payload.timestamp = UInt64(now)
        payload.seq = nextSeq()
        born.removeValue(forKey: device)
        return OutgoingMessage(topic: topic("DDEATH", device: device), payload: Self.serialize(payload), ranges: ranges, qos: 0)
    }

    private mutating func nextSeq() -> UInt64 {
        defer { seq = (seq + 1) % 256 }
        return seq
    }

    // MARK: Data

    public mutating func messages(for batches: [BufferedBatch], now: Int64) -> ProfileOutput {
        var output = ProfileOutput()
        // DDATA being built per device, in order of first appearance.
        var pending: [(device: String, metrics: [SparkplugMetric], size: Int, ranges: [ClosedRange<UInt64>])] = []

        /// Publishes the DDATA being built for `device`, or for every device when nil.
        func flush(_ device: String?) {
            while true {
                let found: Int? = if let device { pending.firstIndex { $0.device == device } } else { pending.isEmpty ? nil : 0 }
                guard let index = found else { return }
                let entry = pending.remove(at: index)
                var payload = SparkplugPayload()
                payload.timestamp = UInt64(now)
                payload.seq = nextSeq()
                payload.metrics = entry.metrics
                output.messages.append(OutgoingMessage(topic: topic("DDATA", device: entry.device), payload: Self.serialize(payload),
                                                       ranges: mergedRanges(entry.ranges), qos: 0))
                if device != nil { return }
            }
        }

        for buffered in batches {
            let batch = buffered.batch
            let name = batch.device
            let recordRanges = ranges(of: batch.records)
            guard let device = table[name] else {
                // No longer configured (reloaded away): nothing to say about it.
                output.settled += recordRanges
                continue
            }
            let up = Reachability.of(batch.records)
            if up == false {
                reachable[name] = false
                if born[name] != nil {
                    flush(name)
                    output.messages.append(deviceDeath(name, now: now, ranges: recordRanges))
                } else {
                    output.settled += recordRanges
                }
                continue
            }
            if up == true { reachable[name] = true }
            guard born[name] != nil else {
                // Back (or polled for the first time): a birth with these readings.
                flush(name)
                output.messages.append(deviceBirth(device, records: batch.records, now: now, ranges: recordRanges))
                continue
            }
            // Historical: replayed or waiting in the buffer, or not newer than the birth's values.
            let historical = buffered.isLate(now: now, lateAfterMs: lateAfterMs) || batch.timestamp <= (born[name] ?? .min)
            var metrics: [SparkplugMetric] = []
            var size = 0
            for record in batch.records {
                guard let signal = device.signals.first(where: { $0.name == record.signal }) else { continue }
                var metric = SparkplugMetric()
                metric.alias = aliases[name]?[signal.name] ?? 0
                metric.timestamp = UInt64(max(0, record.timestamp))
                metric.datatype = UInt32(Self.dataType(signal).rawValue)
                if historical { metric.isHistorical = true }
                Self.setValue(record, signal: signal, on: &metric)
                size += (try? metric.serializedBytes() as [UInt8])?.count ?? 32
                metrics.append(metric)
            }
            if let index = pending.firstIndex(where: { $0.device == name }), pending[index].size + size + 16 > maxMessageBytes {
                flush(name)
            }
            if let index = pending.firstIndex(where: { $0.device == name }) {
                pending[index].metrics += metrics
                pending[index].size += size
                pending[index].ranges += recordRanges
            } else {
                pending.append((name, metrics, size + 16, recordRanges))
            }
        }
        flush(nil)
        output.settled = mergedRanges(output.settled)
        return output
    }

    // MARK: Commands

    public mutating func received(_ message: InboundMessage, now: Int64) -> CommandDecision {
        let levels = message.topic.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard levels.count >= 4, levels[0] == Self.namespace, levels[1] == settings.groupID, levels[3] == settings.edgeNodeID else { return .ignore }
        let origin = "sparkplug \(levels[2])"
        guard let payload = try? SparkplugPayload(serializedBytes: message.payload) else {
            return CommandDecision(log: [CommandLog(origin: origin, device: levels.count > 4 ? levels[4] : "-", signal: "-", value: "-",
                                                    result: "refused: the payload is not a Sparkplug B protobuf")])
        }
        switch (levels[2], levels.count) {
        case ("NCMD", 4):
            var decision = CommandDecision()
            for metric in payload.metrics {
                let name = metric.hasName ? metric.name : (metric.hasAlias && metric.alias == 1 ? Self.rebirthMetric : "alias \(metric.alias)")
                if name == Self.rebirthMetric, metric.booleanValue {
                    decision.log.append(CommandLog(origin: origin, device: "-", signal: name, value: "true", result: "rebirth"))
                    if inSession { decision.messages += births(now: now) }
                } else {
                    decision.log.append(CommandLog(origin: origin, device: "-", signal: name, value: "-",
                                                   result: "refused: this edge node accepts only \(Self.rebirthMetric) = true"))
                }
            }
            return decision
        case ("DCMD", 5):
            let deviceName = levels[4]
            var decision = CommandDecision()
            for metric in payload.metrics {
                let signalName: String?
                if metric.hasName {
                    signalName = metric.name
                } else if metric.hasAlias, let target = byAlias[metric.alias], target.device == deviceName {
                    signalName = target.signal
                } else {
                    signalName = nil
                }
                guard let signalName else {
                    decision.log.append(CommandLog(origin: origin, device: deviceName, signal: "alias \(metric.alias)", value: "-",
                                                   result: "refused: no metric of device '\(deviceName)' has this alias"))
                    continue
                }
                let signal = table[deviceName]?.signals.first { $0.name == signalName }
                guard let value = Self.value(of: metric, for: signal) else {
                    decision.log.append(CommandLog(origin: origin, device: deviceName, signal: signalName, value: "-",
                                                   result: "refused: the metric carries no value"))
                    continue
                }
                switch table.check(device: deviceName, signal: signalName, value: value) {
                case .failure(let refusal):
                    decision.log.append(CommandLog(origin: origin, device: deviceName, signal: signalName, value: value.description,
                                                   result: "refused: \(refusal.reason)"))
                case .success(let operation):
                    decision.writes.append(WriteRequest(origin: origin, device: deviceName, signal: signalName, value: value, operation: operation))
                }
            }
            return decision
        default:
            return .ignore
        }
    }

    // MARK: Metrics

    private mutating func assignAliases() {
        aliases.removeAll()
        byAlias.removeAll()
        // 0 and 1 are the node's bdSeq and Node Control/Rebirth; then every signal in config order.
        var next: UInt64 = 2
        for device in table.devices {
            var own: [String: UInt64] = [:]
            for signal in device.signals {
                own[signal.name] = next
                byAlias[next] = (device.name, signal.name)
                next += 1
            }
            aliases[device.name] = own
        }
    }

    /// The Sparkplug datatype of a signal's values: scaled numbers are Double.
    static func dataType(_ signal: Signal) -> SparkplugDataType {
        let scaled = signal.scale != 1 || signal.offset != 0
        switch signal.type {
        case .bool, .bit: return .boolean
        case .string: return .string
        case _ where scaled: return .double
        case .int16: return .int16
        case .uint16: return .uint16
        case .int32: return .int32
        case .uint32: return .uint32
        case .int64: return .int64
        case .uint64: return .uint64
        case .float32: return .float
        case .float64: return .double
        }
    }

    /// Sets the value of a reading, or `is_null` with the Quality property when it is not good.
    static func setValue(_ record: Record, signal: Signal, on metric: inout SparkplugMetric) {
        guard record.quality.isGood, let value = record.value else {
            metric.isNull = true
            metric.properties = qualityProperty(qualityBad)
            return
        }
        switch dataType(signal) {
        case .boolean:
            if case .bool(let b) = value { metric.booleanValue = b } else { metric.booleanValue = (value.asDouble ?? 0) != 0 }
        case .string:
            metric.stringValue = value.description
        case .double:
            if let d = value.asDouble { metric.doubleValue = d } else { metric.isNull = true }
        case .float:
            if let d = value.asDouble { metric.floatValue = Float(d) } else { metric.isNull = true }
        case .int8, .int16, .int32:
            // Signed values in int_value as their 32-bit two's complement.
            if let i = integer(value) { metric.intValue = UInt32(truncatingIfNeeded: i) } else { metric.isNull = true }
        case .uint8, .uint16:
            if let i = integer(value) { metric.intValue = UInt32(truncatingIfNeeded: i) } else { metric.isNull = true }
        case .uint32, .uint64, .int64:
            // UInt32 in long_value, as the Sparkplug TCK expects; Int64 as its two's complement.
            if case .uint(let u) = value { metric.longValue = u } else if let i = integer(value) { metric.longValue = UInt64(bitPattern: i) } else { metric.isNull = true }
        default:
            metric.isNull = true
        }
    }

    private static func integer(_ value: Value) -> Int64? {
        switch value {
        case .int(let i): i
        case .uint(let u): Int64(exactly: u)
        case .double(let d): Int64(exactly: d)
        case .bool(let b): b ? 1 : 0
        case .string: nil
        }
    }

    /// The value a command metric carries, read with the target signal's datatype.
    static func value(of metric: SparkplugMetric, for signal: Signal?) -> Value? {
        guard let kind = metric.value else { return nil }
        let type = signal.map(dataType) ?? .unknown
        switch kind {
        case .booleanValue(let b): return .bool(b)
        case .stringValue(let s): return .string(s)
        case .doubleValue(let d): return .double(d)
        case .floatValue(let f): return .double(Double(f.description) ?? Double(f))
        case .intValue(let v):
            switch type {
            case .int8: return .int(Int64(Int8(truncatingIfNeeded: v)))
            case .int16: return .int(Int64(Int16(truncatingIfNeeded: v)))
            case .int32: return .int(Int64(Int32(bitPattern: v)))
            default: return .uint(UInt64(v))
            }
        case .longValue(let v):
            return type == .int64 ? .int(Int64(bitPattern: v)) : .uint(v)
        default:
            return nil
        }
    }

    static func qualityProperty(_ code: UInt32) -> SparkplugPayload.PropertySet {
        var value = SparkplugPayload.PropertyValue()
        value.type = UInt32(SparkplugDataType.int32.rawValue)
        value.intValue = code
        var set = SparkplugPayload.PropertySet()
        set.keys = ["Quality"]
        set.values = [value]
        return set
    }

    static func serialize(_ payload: SparkplugPayload) -> [UInt8] {
        (try? payload.serializedBytes()) ?? []
    }
}
