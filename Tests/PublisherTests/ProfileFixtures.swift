import Buffer
import Foundation
@testable import Publisher
import UplinkCore

/// Devices, batches and decoders shared by the profile tests.
enum Fixture {
    static let tc = Device(name: "tc-01", transport: .rtu(bus: "line1", settings: SerialSettings(port: "/dev/null")), unit: 1, signals: [
        Signal(name: "pv", area: .holdingRegister, address: 0, type: .int16, scale: 0.1, unit: "degC"),
        Signal(name: "setpoint", area: .holdingRegister, address: 1, type: .int16, scale: 0.1, unit: "degC",
               writable: WriteAccess(min: 0, max: 400)),
        Signal(name: "run", area: .coil, address: 0, type: .bool, writable: .unbounded),
        Signal(name: "model", area: .holdingRegister, address: 20, type: .string(registers: 6), attribute: true),
    ], type: "temperature-controller")

    static let meter = Device(name: "meter-01", transport: .tcp(host: "127.0.0.1", port: 5026), signals: [
        Signal(name: "count", area: .holdingRegister, address: 0, type: .uint32),
        Signal(name: "offset", area: .holdingRegister, address: 2, type: .int16),
        Signal(name: "energy", area: .inputRegister, address: 4, type: .float32, unit: "kWh"),
        Signal(name: "big", area: .holdingRegister, address: 6, type: .int64),
    ])

    /// A batch of `device` at `ts` with seqs from `seq`; `values` by signal name (nil: bad quality).
    static func batch(_ device: Device, ts: Int64, seq: UInt64, values: [String: Value?], quality: Quality = .timeout,
                      replayed: Bool = false, committedAt: Int64? = nil) -> BufferedBatch {
        var records: [Record] = []
        var next = seq
        for signal in device.signals {
            guard let entry = values[signal.name] else { continue }
            records.append(Record(device: device.name, signal: signal.name, timestamp: ts, value: entry, unit: signal.unit,
                                  quality: entry == nil ? quality : .good, seq: next))
            next += 1
        }
        return BufferedBatch(batch: PollBatch(device: device.name, timestamp: ts, records: records),
                             seqs: seq...max(seq, next - 1), committedAt: committedAt ?? ts, replayed: replayed)
    }

    static func json(_ message: OutgoingMessage) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any]) ?? [:]
    }

    static func sparkplug(_ message: OutgoingMessage) throws -> Org_Eclipse_Tahu_Protobuf_Payload {
        try Org_Eclipse_Tahu_Protobuf_Payload(serializedBytes: message.payload)
    }

    /// Every seq in `messages` and `settled`, each once.
    static func seqs(_ output: ProfileOutput) -> [UInt64] {
        (output.messages.flatMap(\.ranges) + output.settled).flatMap { Array($0) }.sorted()
    }
}
