import Agent
import ArgumentParser
import Foundation
import UplinkConfig

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the agent: poll the configured machines, buffer every record on disk, publish to the broker.",
        discussion: """
        Logs go to stdout, one logfmt line per event (journald-friendly). SIGTERM or SIGINT: finish the
        current polls, commit, disconnect cleanly, exit 0. SIGHUP: reload the config (validated first;
        a bad one keeps the running one). Under systemd (Type=notify) it reports readiness and feeds the
        watchdog. Exit codes: 78 config or credentials problem, 73 state directory or buffer unusable.
        """
    )

    @Argument(help: "The config file (YAML).")
    var config: String

    @Option(help: "Broker URL (mqtt://HOST:PORT or mqtts://HOST:PORT), overriding mqtt.broker.")
    var broker: String?

    @Option(name: .customLong("state-dir"), help: "Directory of the disk buffer and status.json (systemd: $STATE_DIRECTORY).")
    var stateDir: String = ProcessInfo.processInfo.environment["STATE_DIRECTORY"] ?? "/var/lib/uplink"

    @Option(name: .customLong("log-level"), help: "debug, info, warning or error.")
    var logLevel: String = "info"

    func run() async throws {
        let level: Log.Level = switch logLevel {
        case "debug": .debug
        case "warning": .warning
        case "error": .error
        default: .info
        }
        var brokerURL: BrokerURL?
        if let broker {
            switch BrokerURL.parse(broker) {
            case .success(let url): brokerURL = url
            case .failure(let why): throw ValidationError("--broker: \(why)")
            }
        }
        let log = Log(minimum: level)
        let daemon: AgentDaemon
        do {
            daemon = try AgentDaemon(options: RunOptions(configPath: config, stateDirectory: URL(fileURLWithPath: stateDir),
                                                         broker: brokerURL, logLevel: level), log: log)
        } catch {
            printError(error.description)
            throw ExitCode(error.exitCode)
        }
        let status = await daemon.run()
        if status != 0 { throw ExitCode(status) }
    }
}
