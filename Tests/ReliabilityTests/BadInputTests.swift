// Issue 6, part 5: bad input. Property-based generators over the config loader, the register
// decoder and the simulator's request handling (in process, for a bounded time: no crash, no hang,
// a clear error); a live uplink-sim attacked over its Modbus and control sockets; and the
// coverage-guided libFuzzer harnesses of Fuzz/ (fuzz.sh), run briefly here and for as long as
// wanted with UPLINK_FUZZ_SECONDS.

import Foundation
import Simulator
import Testing
import TestSupport
import UplinkConfig
import UplinkCore
#if canImport(Glibc)
import Glibc
#endif

extension Reliability {
    @Suite("5. Bad input") struct BadInput {
        /// Agent configs to mutate: the shipped ones, the broken test cases, and one using every section.
        static func configSeeds() -> [String] {
            var seeds: [String] = []
            for dir in ["Configs", "Tests/UplinkConfigTests/testcases"] {
                let url = TestSupport.repoRoot.appendingPathComponent(dir)
                for name in ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() where name.hasSuffix(".yaml") {
                    if let text = try? String(contentsOf: url.appendingPathComponent(name), encoding: .utf8) { seeds.append(text) }
                }
            }
            seeds.append("""
            agent: { name: gw-1, site: plant-1 }
            defaults: &d { interval: 1s, timeout: 500ms, retries: 2, request_delay: 5ms, max_gap: 4 }
            serial_buses:
              line1: { port: /dev/ttyUSB0, baud: 9600, parity: E, data_bits: 8, stop_bits: 1 }
            devices:
              - name: imm-01
                tcp: { host: "${HOST:-127.0.0.1}", port: "${PORT:-502}" }
                unit: 1
                <<: *d
                signals:
                  - { name: shots, area: holding, address: 400001, type: uint32, order: CDAB, unit: shots }
                  - { name: temp, area: holding, address: "4x0011", type: int16, scale: 0.1, offset: -5, unit: degC }
                  - { name: run, area: coil, address: 0, type: bool }
                  - { name: alarm, area: holding, address: 20, type: bit, bit: 3, interval: 5s }
                  - { name: model, area: input, address: 30, type: string, registers: 6 }
                  - { name: energy, area: input, address: 40, type: float64, order: DCBA }
              - name: tc-01
                rtu: { bus: line1 }
                unit: 7
                single_reads: true
                signals:
                  - { name: pv, area: holding, address: 0, type: int16 }
            mqtt:
              broker: mqtts://broker.example.com:8883
              client_id: gw-1
              protocol: "5"
              qos: 1
              username: ${MQTT_USER:-gw}
              password_file: /etc/uplink/password
              keepalive: 30s
              tls: { ca_file: /etc/ssl/ca.pem, cert_file: /etc/uplink/c.pem, key_file: /etc/uplink/k.pem }
              topic_prefix: uplink
              data_topic: "{prefix}/{site}/{device}/data"
              max_inflight: 64
              max_message_size: 256KB
              reconnect_min: 1s
              reconnect_max: 1m
            buffer: { max_size: 64MB, max_age: 7d, when_full: drop_oldest, late_after: 10s }
            """)
            return seeds
        }

        @Test("config loader: mutated configs load or fail with file:line:column errors; never a crash or a hang")
        func configLoaderProperty() throws {
            var mutator = Mutator(random: SeededGenerator.fromEnvironment())
            let seeds = Self.configSeeds()
            try #require(seeds.count >= 5)
            let environment = ["HOST": "127.0.0.1", "PORT": "502", "X": "7", "MQTT_USER": "gw"]
            let deadline = Date().addingTimeInterval(fuzzBudget(ci: 8))
            var cases = 0, loaded = 0, slowest = 0.0, issues = 0
            var failures: [String] = []
            while Date() < deadline && failures.count < 5 {
                let seed = seeds[mutator.int(0..<seeds.count)]
                let text = cases < seeds.count ? seeds[cases] : mutator.mutate(seed, splice: seeds[mutator.int(0..<seeds.count)])
                cases += 1
                let started = Date()
                do {
                    let config = try ConfigLoader.parse(text, file: "fuzz.yaml", environment: environment)
                    loaded += 1
                    if config.devices.isEmpty { failures.append("loaded with no device:\n\(text)") }
                    for device in config.devices { _ = Planner.plan(device) }
                    if PlanReport.render(config, file: "fuzz.yaml").isEmpty { failures.append("empty plan:\n\(text)") }
                } catch {
                    issues += error.issues.count
                    if error.issues.isEmpty { failures.append("an error without issues:\n\(text)") }
                    for issue in error.issues where !issue.description.hasPrefix("fuzz.yaml") || issue.message.isEmpty
                        || issue.description.contains("Optional(") || issue.line < 0 {
                        failures.append("unclear error '\(issue.description)' for:\n\(text)")
                    }
                }
                let took = Date().timeIntervalSince(started)
                slowest = max(slowest, took)
                if took > 5 { failures.append("took \(took) s:\n\(text.prefix(2000))") }
            }
            #expect(failures.isEmpty, "seed \(mutator.random.seed): \(failures.joined(separator: "\n---\n").prefix(4000))")
            #expect(cases > 200, "only \(cases) cases")
            report("config loader: \(cases) mutated configs (seed \(mutator.random.seed)), \(loaded) loaded, \(issues) located issues for the rest, slowest \(String(format: "%.3f", slowest)) s")
        }

        @Test("decoder: every type, order and register content decodes or says why; float32 survives the shortest-decimal widening")
        func decoderProperty() {
            var random = SeededGenerator.fromEnvironment()
            let types: [UplinkCore.DataType] = [.bool, .int16, .uint16, .int32, .uint32, .int64, .uint64, .float32, .float64]
                + (0..<16).map { .bit($0) } + [1, 2, 6, 20, 125].map { .string(registers: $0) }
            let deadline = Date().addingTimeInterval(fuzzBudget(ci: 3))
            var cases = 0
            var failures: [String] = []
            while Date() < deadline && failures.count < 5 {
                cases += 1
                let type = types[Int.random(in: 0..<types.count, using: &random)]
                let order = UplinkCore.ByteOrder.allCases[Int.random(in: 0..<4, using: &random)]
                let words = (0..<Int.random(in: 0...8, using: &random) + (Bool.random(using: &random) ? type.width : 0)).map { _ in
                    Bool.random(using: &random) ? UInt16.random(in: 0...UInt16.max, using: &random) : [0, 0x7FFF, 0x8000, 0xFFFF, 0x2020, 0x7F80, 0xFF80][Int.random(in: 0..<7, using: &random)]
                }
                let result = UplinkCore.Decoder.decode(type, order: order, words: words[...])
                switch result {
                case .failure(.tooShort(let needed, let got)):
                    if words.count >= type.width || needed != type.width || got != words.count { failures.append("tooShort wrongly: \(type) \(words)") }
                case .failure(.notASCII):
                    if case .string = type {} else { failures.append("notASCII for \(type)") }
                case .success(let value):
                    if words.count < type.width { failures.append("\(type) decoded from \(words.count) words") }
                    switch (type, value) {
                    case (.int16, .int(let v)): if Int64(Int16.min)...Int64(Int16.max) ~= v {} else { failures.append("int16 \(v)") }
                    case (.int32, .int(let v)): if Int64(Int32.min)...Int64(Int32.max) ~= v {} else { failures.append("int32 \(v)") }
                    case (.uint16, .uint(let v)): if v > UInt64(UInt16.max) { failures.append("uint16 \(v)") }
                    case (.uint32, .uint(let v)): if v > UInt64(UInt32.max) { failures.append("uint32 \(v)") }
                    case (.float32, .double(let d)):
                        // Widening to the shortest decimal must give back the very same float32.
                        let direct = UplinkCore.Decoder.decode(.uint32, order: order, words: words[...])
                        if case .success(.uint(let bits)) = direct, d.isFinite, Float(d).bitPattern != UInt32(bits) {
                            failures.append("float32 bits \(String(bits, radix: 16)) widened to \(d), back \(Float(d).bitPattern)")
                        }
                    case (.string, .string(let text)):
                        if !text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F }) { failures.append("string \(text.debugDescription)") }
                    case (.bool, .bool), (.bit, .bool), (.int64, .int), (.uint64, .uint), (.float64, .double): break
                    default: failures.append("\(type) gave \(value)")
                    }
                }
            }
            #expect(failures.isEmpty, "seed \(random.seed): \(failures.prefix(5))")
            report("decoder: \(cases) random decodes (seed \(random.seed)), every type x order, short inputs included")
        }

        @Test("simulator request handling in process: random and mutated PDUs, MBAP and RTU frames, fault bodies and control requests; always a valid answer or a clear refusal")
        func simulatorRequestHandling() throws {
            var mutator = Mutator(random: SeededGenerator.fromEnvironment())
            var bank = RegisterBank(coils: 100, discreteInputs: 100, holding: 200, input: 200)
            let valid: [[UInt8]] = [[1, 0, 0, 0, 10], [2, 0, 5, 0, 50], [3, 0, 0, 0, 125], [4, 0, 100, 0, 100], [5, 0, 3, 0xFF, 0],
                                    [6, 0, 7, 0x12, 0x34], [15, 0, 0, 0, 9, 2, 0xFF, 1], [16, 0, 0, 0, 2, 4, 0, 1, 0, 2], [3, 0xFF, 0xFF, 0, 1]]
            let scenario = try ProfileLoader.load(yaml: """
            machines:
              - name: press
                tcp: { port: 1502 }
                state_machine: { states: { running: { dwell: 1m, next: idle }, idle: { dwell: 1m, next: running } } }
                registers:
                  - { name: r0, area: holding, address: 0, type: uint16, counter: { every: 1s } }
                  - { name: sp, area: holding, address: 1, type: int16, value: 5, writable: { min: 0, max: 10 } }
            """, file: "fuzz-scenario.yaml")
            let api = ControlAPI(simulation: Simulation(scenario: scenario), endpoints: ["press": "tcp 127.0.0.1:1502 unit 1"])
            let faultSeeds = ["slow: 1500ms", "{ no_response: 0.05, exception: busy }", "exception: { code: illegal_address, probability: 0.1 }",
                              "wrong_unit: { unit: 9, probability: 0.01 }", "offline: { after: 10m, for: 30s, every: 1h }", "garbled: true\nshort: 0.2"]
            let methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "", "get", "\u{0}"]
            let targets = ["/machines", "/machines/press", "/machines/press/faults", "/machines/*/faults", "/machines/%2A/state", "/time",
                           "/time/step?by=1s", "/time/step?by=-1s", "/machines/nope/faults", "/", "//", "/machines/press/state/x", "?", "/machines?",
                           "/time/step?", "/time/step?by=9999d"]
            let deadline = Date().addingTimeInterval(fuzzBudget(ci: 6))
            var counts = (pdu: 0, frames: 0, faults: 0, control: 0)
            var failures: [String] = []
            while Date() < deadline && failures.count < 5 {
                // A PDU: random, or a valid request mutated.
                var pdu = mutator.chance(0.3) ? mutator.bytes(0..<260) : valid[mutator.int(0..<valid.count)]
                if mutator.chance(0.7) && !pdu.isEmpty { pdu[mutator.int(0..<pdu.count)] = UInt8(truncatingIfNeeded: mutator.int(0..<256)) }
                let response = ModbusPDU.handle(pdu, model: &bank)
                counts.pdu += 1
                if let function = pdu.first, !response.isEmpty {
                    let isException = response[0] == function | 0x80
                    if response.count > ModbusPDU.maxLength || !(response[0] == function || isException) || (isException && response.count != 2) {
                        failures.append("PDU \(pdu) -> \(response)")
                    }
                } else if !pdu.isEmpty {
                    failures.append("no answer to \(pdu)")
                }
                // Framing over random streams.
                let stream = mutator.chance(0.5) ? mutator.bytes(0..<300) : MBAP.encode(transactionID: 1, unit: 1, pdu: pdu) + mutator.bytes(0..<8)
                switch MBAP.scan(stream) {
                case .frame(_, let range, let consumed): if range.upperBound > stream.count || consumed > stream.count { failures.append("MBAP overrun \(stream)") }
                case .needMore, .invalid: break
                }
                if case .bytes(let n) = RTUFraming.requestLength(stream), n < 0 || n > 300 { failures.append("RTU length \(n)") }
                _ = RTUFraming.hasValidCRC(stream)
                counts.frames += 1
                // A fault body, as PUT /machines/NAME/faults gets it.
                let body = mutator.mutate(faultSeeds[mutator.int(0..<faultSeeds.count)])
                do {
                    _ = try ProfileLoader.parseFaults(yaml: body, source: "request body")
                } catch {
                    if !error.description.contains("request body") { failures.append("fault error without location: \(error.description)") }
                }
                counts.faults += 1
                // A control request.
                let target = mutator.chance(0.5) ? targets[mutator.int(0..<targets.count)] : mutator.mutate(targets[mutator.int(0..<targets.count)])
                let answer = api.handle(method: methods[mutator.int(0..<methods.count)], target: target, body: mutator.chance(0.5) ? body : "")
                counts.control += 1
                if ![200, 400, 404, 405].contains(answer.status) { failures.append("status \(answer.status) for \(target)") }
                if (try? JSONSerialization.jsonObject(with: Data(answer.body.text.utf8), options: [.fragmentsAllowed])) == nil {
                    failures.append("not JSON: \(answer.body.text.prefix(200))")
                }
            }
            #expect(failures.isEmpty, "seed \(mutator.random.seed): \(failures.prefix(5))")
            report("simulator in process (seed \(mutator.random.seed)): \(counts.pdu) PDUs, \(counts.frames) MBAP/RTU streams, \(counts.faults) fault bodies, \(counts.control) control requests")
        }

        @Test("a live uplink-sim attacked on its Modbus and control sockets (garbage, mutated frames, floods, bad HTTP): it stays up and keeps answering correctly",
              .timeLimit(.minutes(2)))
        func liveSimulatorUnderAttack() async throws {
            let sandbox = Sandbox("simattack")
            defer { sandbox.cleanUp() }
            let fleet = machines(1, registers: 5)
            let sim = try Sim(sandbox, machines: fleet, control: true)
            let port = fleet[0].port
            let controlPort = try #require(sim.controlPort)
            var mutator = Mutator(random: SeededGenerator.fromEnvironment())
            let deadline = Date().addingTimeInterval(fuzzBudget(ci: 5))
            var connections = 0
            while Date() < deadline {
                connections += 1
                let toControl = mutator.chance(0.4)
                var payload: [UInt8]
                if toControl {
                    let method = ["GET", "PUT", "POST", "DELETE", "BREW"][mutator.int(0..<5)]
                    let body = mutator.mutate("{\"slow\": \"10ms\", \"exception\": {\"code\": \"busy\", \"probability\": 0.01}}")
                    let length = mutator.chance(0.8) ? body.utf8.count : [-1, 0, 99_999_999, Int(Int32.max)][mutator.int(0..<4)]
                    let request = "\(method) /machines/m1/faults HTTP/1.1\r\nContent-Length: \(length)\r\n\r\n\(body)"
                    payload = Array((mutator.chance(0.3) ? mutator.mutate(request) : request).utf8)
                } else {
                    var frames: [UInt8] = []
                    for _ in 0..<mutator.int(1..<50) {
                        var pdu: [UInt8] = [3, 0, UInt8(mutator.int(0..<10)), 0, UInt8(mutator.int(0..<130))]
                        if mutator.chance(0.5) { pdu[mutator.int(0..<pdu.count)] = UInt8(truncatingIfNeeded: mutator.int(0..<256)) }
                        frames += MBAP.encode(transactionID: UInt16(mutator.int(0..<65536)), unit: UInt8(mutator.int(0..<3)), pdu: pdu)
                    }
                    if mutator.chance(0.3) { frames += mutator.bytes(1..<64) }
                    payload = frames
                }
                sendAndClose(port: toControl ? controlPort : port, payload, readReply: mutator.chance(0.5))
            }
            // Still alive, still right: a clean request gets the right registers, the control answers.
            #expect(sim.process.process.isRunning, "uplink-sim died: \(sim.process.outputText.suffix(1500))")
            _ = try sim.control("DELETE", "/machines/*/faults")
            let reply = readHolding(port: port, address: 1, count: 4)
            #expect(reply == [1, 2, 3, 4], "after the attack: \(String(describing: reply))")
            let (status, _) = try sim.control("GET", "/machines")
            #expect(status == 200)
            report("live uplink-sim: \(connections) hostile connections (seed \(mutator.random.seed)); still serving, registers 1...4 read back [1, 2, 3, 4]")
        }

        @Test("a control request with an empty query string (GET /machines?) is answered, and the simulator stays up",
              .timeLimit(.minutes(1)))
        func controlEmptyQuery() async throws {
            let sandbox = Sandbox("query")
            defer { sandbox.cleanUp() }
            let fleet = machines(1)
            let sim = try Sim(sandbox, machines: fleet, control: true)
            let controlPort = try #require(sim.controlPort)
            sendAndClose(port: controlPort, Array("GET /machines? HTTP/1.1\r\nHost: x\r\n\r\n".utf8), readReply: true)
            await pause(1)
            let alive = sim.process.process.isRunning
            // Found by this test (ControlAPI.handle subscripted a split of "/machines?"), fixed.
            #expect(alive, "uplink-sim died: \(sim.process.outputText.split(separator: "\n").first { $0.contains("Fatal error") } ?? "")")
            if alive { #expect(readHolding(port: fleet[0].port, address: 1, count: 2) == [1, 2]) }
            report("control request 'GET /machines?': uplink-sim \(alive ? "answered and stayed up" : "crashed (\(sim.process.outputText.split(separator: "\n").first { $0.contains("Fatal error") } ?? "")") )")
        }

        @Test("uplink-sim check on profiles with absurd formulas (2000 nested parentheses, a 20000-term sum): a located error or a load, never a crash")
        func formulaNesting() throws {
            let sandbox = Sandbox("formula")
            defer { sandbox.cleanUp() }
            let formulas = [("nested", String(repeating: "(", count: 2000) + "1" + String(repeating: ")", count: 2000)),
                            ("long sum", Array(repeating: "1", count: 20000).joined(separator: "+")),
                            ("nested, shallow", String(repeating: "(", count: 200) + "1" + String(repeating: ")", count: 200))]
            for (what, formula) in formulas {
                let file = sandbox.path("\(what.replacingOccurrences(of: " ", with: "-")).yaml")
                try "registers:\n  - { name: a, area: holding, address: 0, type: uint16, formula: \"\(formula)\" }\n"
                    .write(to: file, atomically: true, encoding: .utf8)
                let (status, output) = Shell.run([TestSupport.product("uplink-sim"), "check", file.path], timeout: 120)
                let clean = (status == 0 || status == 1) && !output.contains("Program crashed")
                if what.hasSuffix("shallow") {
                    #expect(status == 0, "\(what): \(output.suffix(500))")
                } else {
                    // Found by this test (no depth limit: stack overflow), fixed with length and depth limits.
                    #expect(clean, "\(what): exit \(status): \(output.prefix(300))")
                    #expect(status == 1 && output.contains("formula"), "\(what): a located error: \(output.prefix(300))")
                }
                report("formula \(what) (\(formula.utf8.count) bytes): uplink-sim check exit \(status)")
            }
        }

        @Test("libFuzzer (Fuzz/fuzz.sh): coverage-guided runs of the config loader, the decoder and the simulator's request handling find no crash and no hang",
              .timeLimit(.minutes(10)), .enabled(if: Fuzzing.isAvailable, "needs the Swift toolchain's libFuzzer runtime and the Yams checkout (.build/checkouts/Yams)"))
        func libFuzzer() throws {
            let seconds = Environment.fuzzSeconds ?? 5
            let targets = ProcessInfo.processInfo.environment["UPLINK_FUZZ_TARGETS"] ?? "config decoder simulator"
            let script = TestSupport.repoRoot.appendingPathComponent("Fuzz/fuzz.sh").path
            let (status, output) = Shell.run(["/bin/bash", script, String(seconds)] + targets.split(separator: " ").map(String.init),
                                             timeout: Double(seconds * 3 + 600))
            #expect(status == 0, "\(output.suffix(4000))")
            for target in targets.split(separator: " ") {
                let line = output.split(separator: "\n").last { $0.hasPrefix("fuzz-\(target):") }.map(String.init) ?? ""
                #expect(line.contains("no crash"), "\(target): \(output.suffix(3000))")
                report("libFuzzer \(line)")
            }
        }
    }
}

enum Fuzzing {
    /// The libFuzzer runtime next to swiftc, and the Yams sources the config and simulator harnesses build from.
    static var isAvailable: Bool {
        guard let swiftc = TestSupport.which("swiftc") else { return false }
        let toolchain = URL(fileURLWithPath: swiftc).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
        var arch = utsname()
        uname(&arch)
        let machine = withUnsafeBytes(of: &arch.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let runtime = toolchain.appendingPathComponent("lib/swift/clang/lib/linux/libclang_rt.fuzzer-\(machine).a").path
        // fuzz.sh takes the Yams checkout of .build, else of any other scratch directory (.build-*).
        let scratch = ((try? FileManager.default.contentsOfDirectory(atPath: TestSupport.repoRoot.path)) ?? []).filter { $0.hasPrefix(".build") }
        let yams = scratch.contains { FileManager.default.fileExists(atPath: TestSupport.repoRoot.appendingPathComponent("\($0)/checkouts/Yams/Sources/Yams").path) }
        return FileManager.default.fileExists(atPath: runtime) && yams
    }
}

/// Connects, sends, optionally reads what comes back for a moment, closes.
func sendAndClose(port: Int, _ bytes: [UInt8], readReply: Bool) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { return }
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    if readReply {
        var buffer = [UInt8](repeating: 0, count: 4096)
        _ = read(fd, &buffer, buffer.count)
    }
}

/// FC3 over a fresh connection; the register values, or nil.
func readHolding(port: Int, address: Int, count: Int) -> [UInt16]? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { return nil }
    let request = MBAP.encode(transactionID: 7, unit: 1, pdu: [3, UInt8(address >> 8), UInt8(address & 0xFF), 0, UInt8(count)])
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var reply: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 512)
    while reply.count < 9 + 2 * count {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { return nil }
        reply += buffer[0..<n]
    }
    guard reply[7] == 3, Int(reply[8]) == 2 * count else { return nil }
    return (0..<count).map { UInt16(reply[9 + 2 * $0]) << 8 | UInt16(reply[10 + 2 * $0]) }
}
