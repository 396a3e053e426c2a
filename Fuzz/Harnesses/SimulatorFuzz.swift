// libFuzzer harness: the simulator's request handling. The first byte picks what the rest is fed to:
// 0 a Modbus PDU (against a register bank), 1 a Modbus TCP byte stream (MBAP framing, every frame
// answered), 2 an RTU byte stream, 3 an HTTP request to the control interface (parsed and routed),
// 4 a fault body (PUT /machines/NAME/faults), 5 a machine profile or scenario (YAML), 6 a formula.
// Properties: no crash, no hang; answers are valid Modbus or a clear refusal; errors are located.
@testable import Simulator

let scenario = try? ProfileLoader.load(yaml: """
machines:
  - name: press
    tcp: { port: 1502 }
    state_machine: { states: { running: { dwell: 1m, next: idle }, idle: { dwell: 1m, next: running } } }
    registers:
      - { name: r0, area: holding, address: 0, type: uint16, counter: { every: 1s } }
      - { name: sp, area: holding, address: 1, type: int16, value: 5, writable: { min: 0, max: 10 } }
""", file: "fuzz-scenario.yaml")
let api = scenario.map { ControlAPI(simulation: Simulation(scenario: $0), endpoints: ["press": "tcp 127.0.0.1:1502 unit 1"]) }

func answer(_ pdu: ArraySlice<UInt8>) {
    var bank = RegisterBank(coils: 64, discreteInputs: 64, holding: 128, input: 128)
    let response = ModbusPDU.handle(pdu, model: &bank)
    guard let function = pdu.first else { return }
    precondition(!response.isEmpty && response.count <= ModbusPDU.maxLength, "response size \(response.count)")
    let isException = response[0] == function | 0x80
    precondition(response[0] == function || isException, "response function \(response[0]) to \(function)")
    precondition(!isException || response.count == 2, "an exception of \(response.count) bytes")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func uplinkFuzzSimulator(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 1 else { return 0 }
    let all = Array(UnsafeBufferPointer(start: data, count: size))
    let input = Array(all.dropFirst())
    switch all[0] % 7 {
    case 0:
        answer(input[...])
    case 1:
        var start = 0
        loop: while start < input.count {
            switch MBAP.scan(input, from: start) {
            case .frame(_, let pdu, let consumed):
                precondition(pdu.upperBound <= input.count && consumed > 0, "MBAP frame beyond the buffer")
                answer(input[pdu])
                start += consumed
            case .needMore, .invalid: break loop
            }
        }
    case 2:
        var start = 0
        while start < input.count {
            guard case .bytes(let n) = RTUFraming.requestLength(input, from: start), n > 0 else { break }
            let end = min(input.count, start + n)
            if RTUFraming.hasValidCRC(input[start..<end]), end - start >= 4 { answer(input[(start + 1)..<(end - 2)]) }
            start = end
        }
    case 3:
        guard let api, let request = ControlConnection.parse(input) else { break }
        let response = api.handle(method: request.method, target: request.target, body: request.body)
        precondition([200, 400, 404, 405].contains(response.status), "status \(response.status)")
    case 4:
        do { _ = try ProfileLoader.parseFaults(yaml: String(decoding: input, as: UTF8.self), source: "request body") } catch {
            precondition(error.description.contains("request body"), "an unlocated fault error: \(error.description)")
        }
    case 5:
        do { _ = try ProfileLoader.load(yaml: String(decoding: input, as: UTF8.self), file: "fuzz.yaml") } catch {
            precondition(error.description.contains("fuzz.yaml"), "an unlocated profile error: \(error.description)")
        }
    default:
        if let formula = try? Formula(String(decoding: input, as: UTF8.self)) {
            _ = formula.variableNames
            _ = formula.evaluate([1, 2, 3])
        }
    }
    return 0
}
