/// uplink: the agent's command line. `check` validates a config and shows the poll plan,
/// `read` polls once and prints decoded values.
import ArgumentParser
import Foundation

@main
struct Uplink: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uplink",
        abstract: "Collects Modbus readings from factory machines and publishes them over MQTT.",
        discussion: "Exit codes: 0 success, 64 bad command line, 69 device unreachable, 78 config error.",
        subcommands: [Run.self, Check.self, Read.self, Status.self]
    )
}

/// Exit codes from sysexits.h, so scripts and systemd can tell failures apart.
enum ExitStatus {
    static let usage: Int32 = 64
    static let unavailable: Int32 = 69
    static let config: Int32 = 78
}

/// Writes to standard error (PITFALLS G6: the C `stderr` global is not usable from Swift 6).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}
