// The ThingsBoard gateway profile: Uplink connects as one ThingsBoard gateway device (its access
// token is the MQTT username) and speaks the gateway MQTT API for the machines behind it.
//
//   v1/gateway/connect     {"device":"imm-01","type":"injection-moulding"}       machine reachable
//   v1/gateway/disconnect  {"device":"imm-01"}                                    machine stopped answering
//   v1/gateway/attributes  {"imm-01":{"online":true,"quality":"good","model":"..."}}
//   v1/gateway/telemetry   {"imm-01":[{"ts":1700000000000,"values":{"shot_count":1284310}}],"tc-01":[...]}
//   v1/gateway/rpc         in:  {"device":"tc-01","data":{"id":7,"method":"set","params":{"signal":"setpoint","value":65}}}
//                          out: {"device":"tc-01","id":7,"data":{"success":true,"signal":"setpoint","value":65}}
//
// Telemetry aggregates many machines and polls per message, within `maxMessageBytes` (ThingsBoard
// accepts 64 KB by default). Readings whose quality is not good carry no value: ThingsBoard learns
// the machine's state from connect/disconnect and the `online`/`quality` attributes instead.
import Buffer
import UplinkCore

public struct ThingsBoardProfile: SessionProfile {
    public static let connectTopic = "v1/gateway/connect"
    public static let disconnectTopic = "v1/gateway/disconnect"
    public static let attributesTopic = "v1/gateway/attributes"
    public static let telemetryTopic = "v1/gateway/telemetry"
    public static let rpcTopic = "v1/gateway/rpc"

    private var table: DeviceTable
    private let maxMessageBytes: Int
    private let lastValues: LastValueCache
    /// Whether each machine answered its last buffered poll (nil: no poll seen yet).
    private var reachable: [String: Bool] = [:]

    /// - Parameters:
    ///   - maxMessageBytes: telemetry messages stay within this (a single reading larger than it still goes).
    ///   - lastValues: the newest readings, for the attributes announced after each connect.
    public init(devices: [Device], maxMessageBytes: Int = 64 * 1024, lastValues: LastValueCache = LastValueCache()) {
        table = DeviceTable(devices)
        self.maxMessageBytes = max(512, maxMessageBytes)
        self.lastValues = lastValues
    }

    public var subscriptions: [String] { [Self.rpcTopic] }
    public var batchesPerMessage: Int { 64 }

    // MARK: Session

    /// Every machine not known to be down is announced (`connect`, so RPCs are routed to it), then
    /// one attributes message gives each machine's type, state and attribute signals.
    public mutating func sessionStarted(now: Int64) -> [OutgoingMessage] {
        var out: [OutgoingMessage] = []
        var attributes: [(String, [(String, String)])] = []
        for device in table.devices {
            let up = reachable[device.name] ?? Reachability.of(Array(lastValues.records(of: device.name).values))
            if up != false { out.append(Self.connect(device)) }
            var fields: [(String, String)] = [("device_type", Self.json(.string(device.platformType)))]
            if let up { fields.append(("online", up ? "true" : "false")) }
            let latest = lastValues.records(of: device.name)
            for signal in device.signals where signal.attribute {
                if let record = latest[signal.name], record.quality.isGood { fields.append((signal.name, Self.json(record.value))) }
            }
            attributes.append((device.name, fields))
        }
        out += Self.attributeMessages(attributes, ranges: [], limit: maxMessageBytes)
        return out
    }

    public mutating func sessionEnding(now: Int64) -> [OutgoingMessage] {
        table.devices.filter { reachable[$0.name] != false }.map(Self.disconnect)
    }

    public mutating func devicesChanged(_ devices: [Device], now: Int64) -> [OutgoingMessage] {
        let old = Set(table.devices.map(\.name))
        table = DeviceTable(devices)
        let gone = old.subtracting(devices.map(\.name))
        reachable = reachable.filter { !gone.contains($0.key) }
        return gone.sorted().map { Self.disconnect(name: $0) } + devices.filter { !old.contains($0.name) }.map(Self.connect)
    }

    // MARK: Data

    public mutating func messages(for batches: [BufferedBatch], now: Int64) -> ProfileOutput {
        var output = ProfileOutput()
        var telemetry = TelemetryBuilder(limit: maxMessageBytes)
        var attributes: [(String, [(String, String)])] = []
        var attributeRanges: [ClosedRange<UInt64>] = []

        func flush() {
            output.messages += telemetry.finish()
            output.messages += Self.attributeMessages(attributes, ranges: mergedRanges(attributeRanges), limit: maxMessageBytes)
            attributes.removeAll()
            attributeRanges.removeAll()
        }

        for buffered in batches {
            let batch = buffered.batch
            let device = table[batch.device]
            // A change of state, in order with the data around it.
            if let up = Reachability.of(batch.records), up != reachable[batch.device] {
                let before = reachable[batch.device]
                reachable[batch.device] = up
                let fields: [(String, String)] = [("online", up ? "true" : "false"),
                                                  ("quality", Self.json(.string(up ? "good" : Reachability.reason(batch.records).code)))]
                if up && before == nil {
                    // First poll seen: the session start already connected it; its state rides along.
                    attributes.append((batch.device, fields))
                } else {
                    // A change: in order with the data before and after it.
                    flush()
                    if up { output.messages.append(device.map(Self.connect) ?? Self.connect(name: batch.device, type: "modbus")) }
                    output.messages += Self.attributeMessages([(batch.device, fields)], ranges: [], limit: maxMessageBytes)
                    if !up { output.messages.append(Self.disconnect(name: batch.device)) }
                }
            }
            var values: [(String, String)] = []
            var valueRecords: [Record] = []
            var unsent: [Record] = []
            var attributeFields: [(String, String)] = []
            for record in batch.records {
                guard record.quality.isGood else {
                    unsent.append(record)
                    continue
                }
                if device?.signals.first(where: { $0.name == record.signal })?.attribute == true {
                    attributeFields.append((record.signal, Self.json(record.value)))
                    attributeRanges.append(record.seq...record.seq)
                } else {
                    values.append((record.signal, Self.json(record.value)))
                    valueRecords.append(record)
                }
            }
            if !attributeFields.isEmpty { attributes.append((batch.device, attributeFields)) }
            if values.isEmpty {
                output.settled += ranges(of: unsent)
            } else {
                output.messages += telemetry.add(device: batch.device, ts: batch.timestamp, values: values,
                                                 ranges: ranges(of: valueRecords + unsent))
            }
        }
        flush()
        output.settled = mergedRanges(output.settled)
        return output
    }

    // MARK: RPC

    /// `set` / `write` with `{"signal": NAME, "value": V}`, or `set_NAME` with the value (or
    /// `{"value": V}`) as params; `get` / `get_NAME` read the newest value. Anything else is refused.
    public mutating func received(_ message: InboundMessage, now: Int64) -> CommandDecision {
        guard message.topic == Self.rpcTopic, let json = JSONValue.parse(message.payload) else { return .ignore }
        // Our own replies come back on the same topic from a plain broker: they have no method.
        guard let device = json["device"]?.string, let data = json["data"], let method = data["method"]?.string else { return .ignore }
        let id = data["id"] ?? .null
        let origin = "thingsboard rpc \(id.text)"
        let params = data["params"] ?? .null

        let (verb, named) = Self.split(method)
        var signal = named ?? params["signal"]?.string ?? params["name"]?.string
        let value: Value?
        if named != nil, params["value"] == nil { value = params.value } else { value = params["value"]?.value }

        func refuse(_ reason: String) -> CommandDecision {
            CommandDecision(messages: [Self.reply(device: device, id: id, fields: [("success", "false"), ("error", Self.json(.string(reason)))])],
                            log: [CommandLog(origin: origin, device: device, signal: signal ?? "-", value: value?.description ?? "-",
                                             result: "refused: \(reason)")])
        }

        switch verb {
        case "get", "read":
            guard let name = signal else { return refuse("method '\(method)' needs params {\"signal\": NAME}") }
            guard table[device]?.signals.contains(where: { $0.name == name }) == true else {
                return refuse(table[device] == nil ? "unknown device '\(device)'" : "device '\(device)' has no signal '\(name)'")
            }
            guard let record = lastValues.records(of: device)[name] else { return refuse("no reading of '\(name)' yet") }
            return CommandDecision(messages: [Self.reply(device: device, id: id, fields: [
                ("success", "true"), ("signal", Self.json(.string(name))), ("value", Self.json(record.value)),
                ("ts", String(record.timestamp)), ("quality", Self.json(.string(record.quality.code))),
            ])])
        case "set", "write":
            guard let name = signal else {
                return refuse("method '\(method)' needs params {\"signal\": NAME, \"value\": V}, or use method set_NAME")
            }
            signal = name
            guard let value else { return refuse("no value to write; expected params {\"signal\": \"\(name)\", \"value\": V}") }
            switch table.check(device: device, signal: name, value: value) {
            case .failure(let refusal): return refuse(refusal.reason)
            case .success(let operation):
                return CommandDecision(writes: [WriteRequest(origin: origin, device: device, signal: name, value: value,
                                                             operation: operation, replyTo: id.text)])
            }
        default:
            return refuse("unknown method '\(method)'; expected set, get, set_SIGNAL or get_SIGNAL")
        }
    }

    public mutating func writeFinished(_ request: WriteRequest, outcome: WriteOutcome, now: Int64) -> [OutgoingMessage] {
        guard let replyTo = request.replyTo else { return [] }
        var fields: [(String, String)]
        switch outcome {
        case .written:
            fields = [("success", "true")]
        case .failed(let why):
            fields = [("success", "false"), ("error", Self.json(.string(why)))]
        }
        fields += [("signal", Self.json(.string(request.signal))), ("value", Self.json(request.value))]
        var out = "{\"device\":"
        JSONText.appendString(request.device, to: &out)
        out += ",\"id\":\(replyTo),\"data\":" + Self.object(fields) + "}"
        return [OutgoingMessage(topic: Self.rpcTopic, payload: Array(out.utf8), ranges: [])]
    }

    /// `set_setpoint` -> ("set", "setpoint"); `set` -> ("set", nil).
    static func split(_ method: String) -> (verb: String, signal: String?) {
        for verb in ["set", "write", "get", "read"] where method.hasPrefix(verb + "_") && method.count > verb.count + 1 {
            return (verb, String(method.dropFirst(verb.count + 1)))
        }
        return (method, nil)
    }

    // MARK: Messages

    static func connect(_ device: Device) -> OutgoingMessage {
        connect(name: device.name, type: device.platformType)
    }

    static func connect(name: String, type: String) -> OutgoingMessage {
        OutgoingMessage(topic: connectTopic, payload: Array(object([("device", json(.string(name))), ("type", json(.string(type)))]).utf8), ranges: [])
    }

    static func disconnect(_ device: Device) -> OutgoingMessage { disconnect(name: device.name) }

    static func disconnect(name: String) -> OutgoingMessage {
        OutgoingMessage(topic: disconnectTopic, payload: Array(object([("device", json(.string(name)))]).utf8), ranges: [])
    }

    static func reply(device: String, id: JSONValue, fields: [(String, String)]) -> OutgoingMessage {
        var out = "{\"device\":"
        JSONText.appendString(device, to: &out)
        out += ",\"id\":\(id.text),\"data\":" + object(fields) + "}"
        return OutgoingMessage(topic: rpcTopic, payload: Array(out.utf8), ranges: [])
    }

    /// `{"dev":{...},"dev2":{...}}`, split over several messages when over `limit`; the ranges go
    /// with the last one (attributes are small).
    static func attributeMessages(_ devices: [(String, [(String, String)])], ranges: [ClosedRange<UInt64>], limit: Int) -> [OutgoingMessage] {
        guard !devices.isEmpty else { return [] }
        // Several polls of one device in one run: the newest value of each key wins.
        var merged: [(String, [(String, String)])] = []
        for (device, fields) in devices {
            if let index = merged.firstIndex(where: { $0.0 == device }) {
                for (key, value) in fields {
                    if let k = merged[index].1.firstIndex(where: { $0.0 == key }) { merged[index].1[k].1 = value } else { merged[index].1.append((key, value)) }
                }
            } else {
                merged.append((device, fields))
            }
        }
        var messages: [String] = []
        var current = ""
        for (device, fields) in merged {
            var entry = ""
            JSONText.appendString(device, to: &entry)
            entry += ":" + object(fields)
            if !current.isEmpty && current.utf8.count + entry.utf8.count + 2 > limit {
                messages.append("{" + current + "}")
                current = ""
            }
            current += (current.isEmpty ? "" : ",") + entry
        }
        if !current.isEmpty { messages.append("{" + current + "}") }
        return messages.enumerated().map { index, text in
            OutgoingMessage(topic: attributesTopic, payload: Array(text.utf8), ranges: index == messages.count - 1 ? ranges : [])
        }
    }

    static func object(_ fields: [(String, String)]) -> String {
        var out = "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { out += "," }
            JSONText.appendString(key, to: &out)
            out += ":" + value
        }
        return out + "}"
    }

    static func json(_ value: Value?) -> String {
        var out = ""
        JSONText.appendValue(value, to: &out)
        return out
    }
}

/// Builds `v1/gateway/telemetry` messages: `{"dev":[{"ts":..,"values":{..}},..],"dev2":[..]}` within
/// a byte limit, grouping entries by device in order of first appearance.
struct TelemetryBuilder {
    let limit: Int
    private var groups: [(device: String, key: String, entries: [String])] = []
    private var index: [String: Int] = [:]
    private var size = 2
    private var ranges: [ClosedRange<UInt64>] = []

    init(limit: Int) { self.limit = limit }

    /// Adds one poll of one device; returns the messages that became full.
    mutating func add(device: String, ts: Int64, values: [(String, String)], ranges newRanges: [ClosedRange<UInt64>]) -> [OutgoingMessage] {
        var key = ""
        JSONText.appendString(device, to: &key)
        var out: [OutgoingMessage] = []
        // One entry per chunk of values that fits in an otherwise empty message.
        let overhead = 2 + key.utf8.count + 3
        var chunks: [String] = []
        var body = ""
        for (name, value) in values {
            var field = ""
            JSONText.appendString(name, to: &field)
            field += ":" + value
            let entryHead = "{\"ts\":\(ts),\"values\":{"
            if !body.isEmpty && overhead + entryHead.utf8.count + body.utf8.count + 1 + field.utf8.count + 2 > limit {
                chunks.append(entryHead + body + "}}")
                body = ""
            }
            body += (body.isEmpty ? "" : ",") + field
        }
        if !body.isEmpty { chunks.append("{\"ts\":\(ts),\"values\":{" + body + "}}") }
        for (n, entry) in chunks.enumerated() {
            let existing = index[device]
            let growth = existing != nil ? entry.utf8.count + 1 : key.utf8.count + 3 + entry.utf8.count + (groups.isEmpty ? 0 : 1)
            if !groups.isEmpty && size + growth > limit {
                out += finish()
            }
            if let i = index[device] {
                groups[i].entries.append(entry)
                size += entry.utf8.count + 1
            } else {
                index[device] = groups.count
                size += key.utf8.count + 3 + entry.utf8.count + (groups.isEmpty ? 0 : 1)
                groups.append((device, key, [entry]))
            }
            // The records go with the message carrying the last chunk of their poll.
            if n == chunks.count - 1 { ranges += newRanges }
        }
        return out
    }

    /// The message being built, if any.
    mutating func finish() -> [OutgoingMessage] {
        guard !groups.isEmpty else { return [] }
        var text = "{"
        for (g, group) in groups.enumerated() {
            if g > 0 { text += "," }
            text += group.key + ":[" + group.entries.joined(separator: ",") + "]"
        }
        text += "}"
        let message = OutgoingMessage(topic: ThingsBoardProfile.telemetryTopic, payload: Array(text.utf8), ranges: mergedRanges(ranges))
        groups.removeAll()
        index.removeAll()
        ranges.removeAll()
        size = 2
        return [message]
    }
}
