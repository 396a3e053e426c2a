// uplink-sim: serves simulated factory machines over Modbus TCP and RTU (see docs/simulator.md).
// No state lives at the top level here (see PITFALLS G3): everything is inside the commands.

import ArgumentParser
import Foundation
import Simulator
#if canImport(Glibc)
import Glibc
#endif

struct UplinkSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uplink-sim",
        abstract: "Simulated factory machines over Modbus TCP and RTU, with fault injection.",
        discussion: "uplink-sim FILE serves a scenario (a file with 'machines:') or a single machine profile. See docs/simulator.md.",
        version: SimulatorModule.version,
        subcommands: [Serve.self, Check.self, Bench.self],
        defaultSubcommand: Serve.self)
}

/// Writes a line to stdout and flushes (stdout is a pipe under tests and systemd).
func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// Writes a line to stderr.
func complain(_ line: String) {
    FileHandle.standardError.write(Data(("uplink-sim: " + line + "\n").utf8))
}

/// Parses 500ms, 2s, 1.5m, 1h.
func parseDuration(_ text: String) -> Double? {
    for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where text.hasSuffix(suffix) {
        if let value = Double(text.dropLast(suffix.count)), value.isFinite, value >= 0 { return value * factor }
    }
    return nil
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after), then later
/// waits for one of them synchronously: no handler, no global state.
struct StopSignals {
    private var set = sigset_t()

    init() {
        signal(SIGPIPE, SIG_IGN)
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits for SIGINT/SIGTERM, or at most `seconds` if given. Returns the signal, or 0 on timeout.
    func wait(seconds: Double?) -> Int32 {
        var waitSet = set
        if let seconds {
            var timeout = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
            while true {
                let result = sigtimedwait(&waitSet, nil, &timeout)
                if result > 0 { return result }
                if errno != EINTR { return 0 }
            }
        }
        var received: Int32 = 0
        sigwait(&waitSet, &received)
        return received
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
}

extension UplinkSim {
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve the machines of a scenario or profile until SIGINT/SIGTERM.")

        @Argument(help: "Scenario or machine profile (YAML), e.g. Simulators/demo.yaml.")
        var file: String

        @Option(help: "Random seed (overrides the scenario's 'seed'; default 1).")
        var seed: UInt64?

        @Option(help: "Simulated seconds per real second; 0 holds time still (step it through the control interface).")
        var speed: Double?

        @Option(help: "Simulation step, e.g. 100ms (overrides 'tick').")
        var tick: String?

        @Option(help: "Serve the control interface on 127.0.0.1:PORT (overrides 'control'; 0 picks a free port).")
        var control: Int?

        @Option(help: "Profile only: TCP port to serve the machine on (default: the profile's, else 5020; 0 picks a free port).")
        var port: Int?

        @Option(help: "Profile only: address to bind (default 127.0.0.1; 0.0.0.0 serves other hosts too).")
        var host: String?

        @Option(help: "Profile only: unit id (default: the profile's, else 1).")
        var unit: Int?

        @Flag(help: "Profile only: serve over Modbus RTU on a new pseudo-terminal instead of TCP (prints its path).")
        var rtu = false

        @Option(help: "With --rtu: create a symlink at this path to the pty (so configs can name a fixed path).")
        var link: String?

        @Option(help: "With --rtu: use this serial device or pty instead of creating one.")
        var device: String?

        @Option(help: "With --rtu: baud rate (default 9600).")
        var baud: Int = 9600

        @Option(help: "With --rtu: parity N, E or O (default N).")
        var parity: String = "N"

        @Flag(help: "With --rtu: emulate line timing (11 bits per byte at the baud rate, 3.5-character silences).")
        var timing = false

        @Option(help: "Stop after this long, e.g. 30s (default: run until SIGINT/SIGTERM).")
        var duration: String?

        func run() throws {
            var scenario: ScenarioDefinition
            do {
                scenario = try ProfileLoader.load(path: file)
            } catch {
                complain(error.description)
                throw ExitCode(1)
            }
            do {
                try applyOverrides(&scenario)
            } catch {
                complain(error.description)
                throw ExitCode(64)
            }
            let stopAfter = try duration.map { text -> Double in
                guard let seconds = parseDuration(text) else { throw ValidationError("--duration needs a unit, e.g. 30s") }
                return seconds
            }

            let signals = StopSignals()
            // No setrlimit here: the systemd unit's seccomp filter (~@resources) forbids it, and
            // 100 machines with their masters fit in the default 1024 descriptors.
            let server = SimulatorServer(scenario: scenario, controlPort: control)
            let endpoints: [ServedEndpoint]
            do {
                endpoints = try server.start { complain($0) }
            } catch {
                complain(error.description)
                throw ExitCode(1)
            }
            let speedText = scenario.speed == 0 ? "held (step via control)" : "\(formatNumber(scenario.speed))x"
            say("uplink-sim \(SimulatorModule.version): \(file): \(endpoints.count) machine\(endpoints.count == 1 ? "" : "s"), seed \(scenario.seed), speed \(speedText), tick \(formatNumber(scenario.tick * 1000))ms")
            let nameWidth = max(8, (endpoints.map(\.machine.count).max() ?? 0) + 2)
            let kindWidth = max(8, (endpoints.map(\.kind.count).max() ?? 0) + 2)
            for endpoint in endpoints {
                say("  " + pad(endpoint.machine, nameWidth) + pad(endpoint.kind, kindWidth) + endpoint.text)
            }
            if let port = server.controlPort {
                say("control: http://127.0.0.1:\(port)/machines")
            }
            say("ready")
            let received = signals.wait(seconds: stopAfter)
            server.stop()
            say(received == 0 ? "stopped after \(duration ?? "")" : "stopped (signal \(received))")
        }

        /// Command-line settings over the file's; profile-only flags refuse a scenario.
        func applyOverrides(_ scenario: inout ScenarioDefinition) throws(SimulatorError) {
            if let seed { scenario.seed = seed }
            if let speed {
                guard speed >= 0, speed <= 10_000 else { throw .invalidArgument("--speed must be between 0 and 10000") }
                scenario.speed = speed
            }
            if let tick {
                guard let seconds = parseDuration(tick), seconds >= 0.001, seconds <= 60 else {
                    throw .invalidArgument("--tick needs a duration between 1ms and 60s, e.g. 100ms")
                }
                scenario.tick = seconds
            }
            let profileFlags = port != nil || host != nil || unit != nil || rtu || link != nil || device != nil || timing
            guard profileFlags else { return }
            guard scenario.machines.count == 1, scenario.serialBuses.isEmpty || rtu else {
                throw .invalidArgument("--port, --host, --unit and --rtu apply to a single machine profile; \(file) is a scenario, so set endpoints in the file")
            }
            var machine = scenario.machines[0]
            let currentUnit = machine.endpoint.unit
            if let unit, !(0...255).contains(unit) { throw .invalidArgument("--unit must be 0...255") }
            let unitID = unit.map { UInt8($0) } ?? (currentUnit == 0 ? 1 : currentUnit)
            if rtu {
                guard (1...247).contains(unitID) else { throw .invalidArgument("RTU unit ids are 1...247") }
                let parityValue: SerialBusDefinition.Parity
                switch parity.uppercased() {
                case "N", "NONE": parityValue = .none
                case "E", "EVEN": parityValue = .even
                case "O", "ODD": parityValue = .odd
                default: throw .invalidArgument("--parity must be N, E or O")
                }
                if device != nil, link != nil { throw .invalidArgument("--link names the pty uplink-sim creates; with --device there is none") }
                scenario.serialBuses = [SerialBusDefinition(name: "line", device: device, link: link, baud: baud,
                                                            parity: parityValue, timing: timing)]
                machine.endpoint = .rtu(bus: "line", unit: unitID)
            } else {
                if link != nil || device != nil || timing { throw .invalidArgument("--link, --device and --timing need --rtu") }
                var currentHost = "127.0.0.1", currentPort = 5020
                if case .tcp(let host, let port, _) = machine.endpoint { (currentHost, currentPort) = (host, port) }
                if let port, !(0...65535).contains(port) { throw .invalidArgument("--port must be 0...65535") }
                machine.endpoint = .tcp(host: host ?? currentHost, port: port ?? currentPort, unit: unitID)
            }
            scenario.machines[0] = machine
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a scenario or profile and print its machines and register maps.")

        @Argument(help: "Scenario or machine profile (YAML).")
        var file: String

        @Flag(help: "Print only the machines, not their register maps.")
        var brief = false

        func run() throws {
            let scenario: ScenarioDefinition
            do {
                scenario = try ProfileLoader.load(path: file)
            } catch {
                complain(error.description)
                throw ExitCode(1)
            }
            say("\(file): ok, \(scenario.machines.count) machine\(scenario.machines.count == 1 ? "" : "s")")
            for machine in scenario.machines {
                let endpoint: String
                switch machine.endpoint {
                case .tcp(let host, let port, let unit): endpoint = "tcp \(host):\(port) unit \(unit)"
                case .rtu(let bus, let unit):
                    let line = scenario.serialBuses.first { $0.name == bus }
                    endpoint = "rtu bus \(bus)\(line?.link.map { " (\($0))" } ?? "") unit \(unit)"
                }
                say("\(machine.name): \(machine.kind.isEmpty ? "machine" : machine.kind), \(endpoint)")
                guard !brief else { continue }
                say("  " + pad("area", 9) + pad("address", 9) + pad("type", 11) + pad("order", 6) + pad("scale", 8) + pad("unit", 8) + "name")
                let served = machine.variables.filter { $0.placement != nil }
                    .sorted { ($0.placement?.area.rawValue ?? "", $0.placement?.address ?? 0) < ($1.placement?.area.rawValue ?? "", $1.placement?.address ?? 0) }
                for variable in served {
                    guard let placement = variable.placement else { continue }
                    var type = placement.type.name
                    if case .bit(let bit) = placement.type { type += " \(bit)" }
                    if case .string(let registers) = placement.type { type += "[\(registers)]" }
                    let writable = variable.writable != nil ? " (writable)" : ""
                    say("  " + pad(placement.area.rawValue, 9) + pad(String(placement.address), 9) + pad(type, 11)
                        + pad(placement.type.width > 1 ? placement.order.rawValue : "", 6) + pad(formatNumber(placement.scale), 8)
                        + pad(variable.unit ?? "", 8) + variable.name + writable)
                }
            }
        }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure the requests/s one uplink-sim serves: synthetic machines and a raw-socket load generator.",
            discussion: """
            By default serves --machines synthetic machines of --registers holding registers each in this process and \
            loads them from --threads threads (sharing the CPU with the server). For figures without that sharing, run \
            'uplink-sim bench --serve-only --port-base 6000' in one shell and 'uplink-sim bench --target 127.0.0.1:6000' \
            in another. Build in release mode (swift build -c release) for figures.
            """)

        @Option(help: "Synthetic machines to serve (each on its own port).")
        var machines: Int = 100

        @Option(help: "Holding registers per machine.")
        var registers: Int = 1000

        @Option(help: "Seconds to run the load.")
        var seconds: Double = 10

        @Option(help: "Load generator threads.")
        var threads: Int = 2

        @Option(help: "Connections per machine.")
        var connections: Int = 1

        @Option(help: "Registers per read request (1-125).")
        var quantity: Int = 125

        @Option(help: "Requests in flight per connection.")
        var depth: Int = 1

        @Option(help: "First port of the synthetic machines (0: free ports).")
        var portBase: Int = 0

        @Flag(help: "Only serve the synthetic machines (until SIGINT/SIGTERM); load them with --target from another process.")
        var serveOnly = false

        @Option(help: "Load an uplink-sim already serving at HOST:FIRSTPORT (ports FIRSTPORT..+machines-1) instead of serving here.")
        var target: String?

        func validate() throws {
            guard (1...1000).contains(machines) else { throw ValidationError("--machines must be 1...1000") }
            guard (1...65536).contains(registers) else { throw ValidationError("--registers must be 1...65536") }
            guard (1...125).contains(quantity) else { throw ValidationError("--quantity must be 1...125") }
            guard seconds > 0, threads > 0, connections > 0, depth > 0 else {
                throw ValidationError("--seconds, --threads, --connections and --depth must be positive")
            }
        }

        func run() throws {
            let signals = StopSignals()
            SimulatorServer.raiseOpenFileLimit()
            var targets: [LoadTarget]
            var server: SimulatorServer?
            if let target {
                let parts = target.split(separator: ":")
                guard parts.count == 2, let firstPort = Int(parts[1]) else { throw ValidationError("--target must be HOST:PORT") }
                targets = (0..<machines).map { LoadTarget(host: String(parts[0]), port: firstPort + $0) }
            } else {
                let scenario = BenchmarkScenario.make(machines: machines, registers: registers, basePort: portBase)
                let started = SimulatorServer(scenario: scenario)
                let endpoints: [ServedEndpoint]
                do {
                    endpoints = try started.start { complain($0) }
                } catch {
                    complain(error.description)
                    throw ExitCode(1)
                }
                server = started
                targets = endpoints.compactMap { endpoint in endpoint.port.map { LoadTarget(port: $0, unit: endpoint.unit) } }
                let ports = endpoints.compactMap(\.port)
                say("serving \(machines) machines x \(registers) holding registers on 127.0.0.1 ports \(ports.min() ?? 0)-\(ports.max() ?? 0)")
                if serveOnly {
                    say("ready")
                    _ = signals.wait(seconds: nil)
                    started.stop()
                    return
                }
            }
            say("loading \(targets.count) machines: \(connections) connection(s) each, \(threads) thread(s), \(quantity) registers per request, depth \(depth), \(formatNumber(seconds))s")
            let report = LoadGenerator.run(targets: targets, connectionsPerTarget: connections, threads: threads,
                                           duration: seconds, quantity: quantity, registers: registers, depth: depth)
            server?.stop()
            let rate = report.requestsPerSecond
            say(String(format: "%.0f requests/s (%.2f M registers/s): %d good responses in %.1fs, %d bad, %d connection failures",
                       rate, rate * Double(report.registersPerRequest) / 1e6, report.responses, report.seconds,
                       report.badResponses, report.connectionFailures))
            if report.responses == 0 { throw ExitCode(1) }
        }
    }
}

UplinkSim.main()
