import UplinkCore
import Yams

/// The keys of issue 7: report by exception (`deadband`, `deadband_percent`, `heartbeat`),
/// commands (`writable`), ThingsBoard attributes and device types.
extension ConfigBuilder {
    /// Reads `deadband` / `deadband_percent` / `heartbeat` over `base` (the level above).
    func applyReport(_ fields: Fields, to base: ReportPolicy) -> ReportPolicy {
        var policy = base
        switch (fields["deadband"], fields["deadband_percent"]) {
        case (.some, .some(let c)):
            reader.fail(c, "give either deadband (absolute, in the signal's unit) or deadband_percent, not both")
        case (.some(let c), nil):
            if let v = reader.double(c, what: "a deadband in the signal's unit (0: any change)") {
                if v < 0 { reader.fail(c, "a deadband cannot be negative; expected 0 (any change) or more") } else { policy.deadband = .absolute(v) }
            }
        case (nil, .some(let c)):
            if let v = reader.double(c, what: "a deadband in percent of the last reported value") {
                if v < 0 || v > 1000 { reader.fail(c, "\(v) is out of range; expected a percentage from 0 to 1000") } else { policy.deadband = .percent(v) }
            }
        case (nil, nil): break
        }
        if let c = fields["heartbeat"], let v = reader.duration(c, in: 100...86_400_000) { policy.heartbeatMs = v }
        return policy
    }

    /// A device type for platforms: 1 to 64 printable characters.
    func platformType(_ at: Cursor) -> String? {
        guard let text = reader.string(at, what: "a device type") else { return nil }
        guard !text.isEmpty, text.count <= 64, text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            reader.fail(at, "'\(text)' is not a device type; expected 1 to 64 printable characters, e.g. injection-moulding")
            return nil
        }
        return text
    }

    /// A signal's report policy (over the device's), write access and attribute flag, checked
    /// against its type and area when those are known.
    func platformKeys(_ f: Fields, type: DataType?, area: Area?, inherited: ReportPolicy) -> (ReportPolicy, WriteAccess?, Bool) {
        var report = applyReport(f, to: inherited)
        if let type, !type.isNumeric, report.deadband != nil {
            if let c = f["deadband"] ?? f["deadband_percent"] {
                reader.fail(c, "a deadband applies to numbers; a \(type.name) signal is reported on every change (add a heartbeat to resend it)")
            }
            // Inherited from the device or the defaults: this signal is reported on any change.
            report.deadband = .absolute(0)
        }
        var attribute = false
        if let c = f["attribute"], let v = reader.bool(c) { attribute = v }
        var access: WriteAccess?
        if let c = f["writable"] {
            access = writeAccess(c, type: type)
            if access != nil, let area, area == .inputRegister || area == .discreteInput {
                reader.fail(c, "\(area.withArticle) cannot be written by Modbus; expected writable only on holding registers and coils")
            }
        }
        return (report, access, attribute)
    }

    /// `writable: true | false | { min, max }`.
    func writeAccess(_ at: Cursor, type: DataType?) -> WriteAccess? {
        if case .mapping = at.node {
            guard let f = reader.fields(at, what: "write bounds", allowed: ["min", "max"]) else { return nil }
            var access = WriteAccess()
            if let c = f["min"] { access.min = reader.double(c, what: "the lowest value the platform may write") }
            if let c = f["max"] { access.max = reader.double(c, what: "the highest value the platform may write") }
            if let min = access.min, let max = access.max, min > max, let c = f["max"] {
                var text = "max "
                JSONText.appendDouble(max, to: &text)
                text += " is below min "
                JSONText.appendDouble(min, to: &text)
                reader.fail(c, text + "; expected min <= max")
            }
            if let type, !type.isNumeric, access.min != nil || access.max != nil {
                reader.fail(at, "bounds apply to numbers; a \(type.name) signal takes writable: true")
            }
            return access
        }
        guard let allowed = reader.bool(at) else { return nil }
        return allowed ? .unbounded : nil
    }
}

/// What each payload profile requires of the `mqtt` section.
extension ConfigBuilder {
    func applyProfileRules(_ f: Fields, to mqtt: inout MQTTSettings) {
        let kind = PayloadKind(rawValue: mqtt.payload) ?? .json
        if kind != .json {
            for key in ["data_topic", "status_topic", "topic_prefix"] {
                if let c = f[key] {
                    reader.fail(c, "\(key) applies to payload json; the \(kind.rawValue) profile uses the topics its platform defines (docs/payloads.md)")
                }
            }
        }
        switch kind {
        case .json:
            break
        case .thingsboard:
            // ThingsBoard's default limit on one MQTT message (transport.mqtt.max_payload_size) is 64 KB.
            if f["max_message_size"] == nil { mqtt.maxMessageBytes = 64 * 1024 }
        case .sparkplug:
            // Sparkplug 3.0 requires QoS 0 for births, data and deaths (the NDEATH will is QoS 1).
            if let c = f["qos"], mqtt.qos != 0 {
                reader.fail(c, "Sparkplug B requires QoS 0 for NBIRTH, DBIRTH, NDATA, DDATA and DDEATH (tck-id-topics-*-mqtt); expected qos: 0 or no qos key")
            }
            mqtt.qos = 0
            var settings = SparkplugSettings(groupID: "", edgeNodeID: "")
            if let c = f["sparkplug"], let s = reader.fields(c, what: "Sparkplug settings", allowed: Self.sparkplugKeys) {
                if let c = s["group_id"], let v = sparkplugID(c) { settings.groupID = v }
                if let c = s["edge_node_id"], let v = sparkplugID(c) { settings.edgeNodeID = v }
            }
            mqtt.sparkplug = settings
        }
        if kind != .sparkplug, let c = f["sparkplug"] {
            reader.fail(c, "the sparkplug settings apply to payload: sparkplug; expected no sparkplug key with payload \(kind.rawValue)")
        }
    }

    /// A Sparkplug group or edge node id: one MQTT topic level (no '/', '+' or '#').
    func sparkplugID(_ at: Cursor) -> String? {
        guard let text = reader.string(at, what: "a Sparkplug id") else { return nil }
        guard !text.isEmpty, text.utf8.count <= 128, !text.contains(where: { "/+#".contains($0) }),
              text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            reader.fail(at, "'\(text)' cannot be a Sparkplug id; expected 1 to 128 printable characters without '/', '+' or '#'")
            return nil
        }
        return text
    }
}
