import Buffer
import UplinkCore

/// Whether a device answered a poll, from its records: `false` when every record says it did not
/// (timeout, offline, bad response), `true` when at least one reading came back (an exception or a
/// decode error is an answer), nil for an empty batch. Derived from the buffered records, so device
/// deaths and births stay in order with the data around them, also when a backlog is replayed.
enum Reachability {
    static func of(_ records: [Record]) -> Bool? {
        guard !records.isEmpty else { return nil }
        return records.contains { record in
            switch record.quality {
            case .good, .exception, .decodeError: true
            case .timeout, .offline, .badResponse: false
            }
        }
    }

    /// The quality that explains an unreachable device (the first record's).
    static func reason(_ records: [Record]) -> Quality {
        records.first { !$0.quality.isGood }?.quality ?? .offline
    }
}

/// The configured devices by name, for births and for checking commands.
struct DeviceTable: Sendable {
    private(set) var devices: [Device]
    private var byName: [String: Int] = [:]

    init(_ devices: [Device]) {
        self.devices = devices
        for (index, device) in devices.enumerated() { byName[device.name] = index }
    }

    subscript(_ name: String) -> Device? {
        byName[name].map { devices[$0] }
    }

    /// Checks a write the platform asked for: the device and signal exist, the config allows it,
    /// the value fits. The error text says why not, for the reply and the log.
    func check(device: String, signal: String, value: Value) -> Result<WriteOperation, CommandRefusal> {
        guard let d = self[device] else {
            return .failure(CommandRefusal("unknown device '\(device)'; this agent polls \(devices.map(\.name).joined(separator: ", "))"))
        }
        guard let s = d.signals.first(where: { $0.name == signal }) else {
            return .failure(CommandRefusal("device '\(device)' has no signal '\(signal)'"))
        }
        return Encoder.write(value, to: s).mapError { CommandRefusal($0.description) }
    }
}

/// Why a command was refused (said in the reply and the log).
struct CommandRefusal: Error, Sendable, Hashable {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

extension BufferedBatch {
    /// Sent late: replayed after a restart or a rewind, or waiting longer than `lateAfterMs`.
    func isLate(now: Int64, lateAfterMs: Int64) -> Bool {
        replayed || now - committedAt > lateAfterMs
    }
}
