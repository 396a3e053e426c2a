/// Collector: polls devices on their schedules and turns the answers into `PollBatch`es.
///
/// Guarantees: one poll loop per TCP device and one per serial bus, each on its own thread, so
/// blocking libmodbus calls never touch the Swift cooperative pool and a slow, dead or
/// garbage-speaking device delays nobody but itself (on a serial bus: only its own slot, and
/// it is backed off so the live slaves keep their schedule). Every scheduled poll yields a batch:
/// good values, or records whose quality says what went wrong. State changes are reported once,
/// not once per poll.
import Modbus
import UplinkCore

extension Area {
    var table: ModbusTable {
        switch self {
        case .coil: .coils
        case .discreteInput: .discreteInputs
        case .holdingRegister: .holdingRegisters
        case .inputRegister: .inputRegisters
        }
    }
}

extension Quality {
    init(_ error: ModbusError) {
        switch error {
        case .timeout: self = .timeout
        case .exception(let code): self = .exception(code)
        case .badResponse, .invalidArgument: self = .badResponse
        case .connection: self = .offline
        }
    }
}

/// Reads a device's requests with one client and decodes the answers into records.
/// Used by the poll loops and by the one-shot `uplink read`.
public struct DevicePoller {
    public let device: Device

    public init(device: Device) {
        self.device = device
    }

    /// The outcome of one poll.
    public struct Outcome {
        public var batch: PollBatch
        /// The first failure of the poll, if any (drives health and backoff).
        public var failure: ModbusError?
        /// How many requests got an answer (good or exception).
        public var answered: Int
    }

    /// Reads `requests` in order, retrying timeouts and malformed answers up to the device's
    /// `retries`, and pausing `request_delay` between requests. A connection failure stops the poll:
    /// the remaining requests are marked offline without touching the link. So does a timeout before
    /// anything was answered: the device is down, and waiting out every request would hold its bus
    /// and delay a shutdown (a device that ignores only some addresses still answers the others).
    public func poll(_ requests: [ReadRequest], with client: ModbusClient, timestamp: Int64,
                     pause: (Int) -> Void = { _ in }) -> Outcome {
        var records: [Record] = []
        records.reserveCapacity(requests.reduce(0) { $0 + $1.signalIndices.count })
        var failure: ModbusError?
        var answered = 0
        var linkDown = false
        do {
            try client.setUnit(device.unit)
        } catch {
            failure = error
            linkDown = true
        }
        for (index, request) in requests.enumerated() {
            if linkDown {
                append(request, quality: .offline, timestamp: timestamp, to: &records)
                continue
            }
            if index > 0 && device.poll.delayMs > 0 { pause(device.poll.delayMs) }
            switch read(request, with: client) {
            case .success(let answer):
                answered += 1
                decode(request, answer, timestamp: timestamp, into: &records)
            case .failure(let error):
                if case .exception = error { answered += 1 }
                if failure == nil { failure = error }
                append(request, quality: Quality(error), timestamp: timestamp, to: &records)
                switch error {
                case .connection: linkDown = true
                case .timeout where answered == 0:
                    for rest in requests[(index + 1)...] { append(rest, quality: .timeout, timestamp: timestamp, to: &records) }
                    return Outcome(batch: PollBatch(device: device.name, timestamp: timestamp, records: records), failure: failure, answered: answered)
                default: break
                }
            }
        }
        return Outcome(batch: PollBatch(device: device.name, timestamp: timestamp, records: records),
                       failure: failure, answered: answered)
    }

    /// Records of every signal in `requests` with a bad quality, for polls skipped while backing off.
    public func unavailable(_ requests: [ReadRequest], quality: Quality, timestamp: Int64) -> PollBatch {
        var records: [Record] = []
        for request in requests { append(request, quality: quality, timestamp: timestamp, to: &records) }
        return PollBatch(device: device.name, timestamp: timestamp, records: records)
    }

    enum Answer {
        case words([UInt16])
        case bits([Bool])
    }

    private func read(_ request: ReadRequest, with client: ModbusClient) -> Result<Answer, ModbusError> {
        var attempt = 0
        while true {
            do {
                if request.area.isBitArea {
                    return .success(.bits(try client.readBits(request.area.table, address: request.address, count: request.count)))
                }
                return .success(.words(try client.readRegisters(request.area.table, address: request.address, count: request.count)))
            } catch {
                switch error {
                case .timeout, .badResponse:
                    // A late or garbled answer must not be taken for the next one: on TCP the link
                    // is reopened (a late answer would otherwise keep every later read one behind).
                    do { try client.resynchronize() } catch { return .failure(error) }
                    attempt += 1
                    if attempt > device.poll.retries { return .failure(error) }
                default:
                    return .failure(error)
                }
            }
        }
    }

    private func decode(_ request: ReadRequest, _ answer: Answer, timestamp: Int64, into records: inout [Record]) {
        for index in request.signalIndices {
            let signal = device.signals[index]
            let result: Result<Value, DecodeError>
            switch answer {
            case .words(let words): result = Decoder.record(for: signal, base: request.address, words: words)
            case .bits(let bits): result = Decoder.record(for: signal, base: request.address, bits: bits)
            }
            switch result {
            case .success(let value):
                records.append(Record(device: device.name, signal: signal.name, timestamp: timestamp, value: value, unit: signal.unit))
            case .failure:
                records.append(Record(device: device.name, signal: signal.name, timestamp: timestamp, value: nil, unit: signal.unit, quality: .decodeError))
            }
        }
    }

    private func append(_ request: ReadRequest, quality: Quality, timestamp: Int64, to records: inout [Record]) {
        for index in request.signalIndices {
            let signal = device.signals[index]
            records.append(Record(device: device.name, signal: signal.name, timestamp: timestamp, value: nil, unit: signal.unit, quality: quality))
        }
    }
}

extension ModbusClient {
    /// Opens the client for a device's transport with its timeout.
    public static func make(for transport: Transport, timeoutMs: Int) throws(ModbusError) -> ModbusClient {
        let client: ModbusClient
        switch transport {
        case .tcp(let host, let port):
            client = try ModbusClient(host: host, port: port)
        case .rtu(_, let s):
            let parity: SerialParity = switch s.parity {
            case .none: .none
            case .even: .even
            case .odd: .odd
            }
            client = try ModbusClient(serialPort: s.port, baud: s.baud, parity: parity, dataBits: s.dataBits, stopBits: s.stopBits)
        }
        client.setResponseTimeout(milliseconds: timeoutMs)
        return client
    }
}
