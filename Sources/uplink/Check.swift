import ArgumentParser
import UplinkConfig
import UplinkCore

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a config and print each device's signals and planned requests.",
        discussion: "Exits 0 when the config is valid, 78 with every problem (file:line:column: key: what was expected) when not."
    )

    @Argument(help: "The config file (YAML).")
    var config: String

    func run() throws {
        let configuration: UplinkConfiguration
        do {
            configuration = try ConfigLoader.load(path: config)
        } catch {
            printError(error.description)
            printError("\(config): \(error.issues.count) problem\(error.issues.count == 1 ? "" : "s") found; nothing was started")
            throw ExitCode(ExitStatus.config)
        }
        print(PlanReport.render(configuration, file: config))
    }
}

