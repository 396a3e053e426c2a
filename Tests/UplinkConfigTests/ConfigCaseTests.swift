import Foundation
import Testing
import UplinkConfig
import UplinkCore

/// Data-driven cases: each `testcases/NAME.yaml` has `testcases/NAME.expect`, the exact output of
/// `uplink check` on it (errors with file:line:column and key path, or the plan of a valid config).
enum ConfigCases {
    static let directory: URL = Bundle.module.url(forResource: "testcases", withExtension: nil)
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testcases")

    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// Fixed environment so `${VAR}` cases do not depend on the machine.
    static let environment = ["UPLINK_TEST_SET": "yes"]
}

@Suite("Config cases (testcases/*.yaml -> *.expect)")
struct ConfigCaseTests {
    @Test func thereAreCasesForEveryErrorClass() {
        let names = Set(ConfigCases.names)
        for required in ["unknown_key", "wrong_type", "missing_field", "address_out_of_range", "type_does_not_fit_area",
                         "duplicate_signal", "request_over_device_limit", "valid_everything"] {
            #expect(names.contains(required), "missing case \(required)")
        }
    }

    @Test(arguments: ConfigCases.names)
    func loaderOutputMatchesExpectation(_ name: String) throws {
        let yaml = try String(contentsOf: ConfigCases.directory.appendingPathComponent("\(name).yaml"), encoding: .utf8)
        let expected = try String(contentsOf: ConfigCases.directory.appendingPathComponent("\(name).expect"), encoding: .utf8)
        let file = "\(name).yaml"
        do {
            let config = try ConfigLoader.parse(yaml, file: file, environment: ConfigCases.environment)
            #expect(PlanReport.render(config, file: file) + "\n" == expected)
        } catch {
            // The expectation ends with the CLI's summary line; the loader's own text is everything before it.
            var lines = expected.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            while lines.last == "" { lines.removeLast() }
            #expect(lines.last?.hasSuffix("found; nothing was started") == true, "the case expected success")
            #expect(error.description == lines.dropLast().joined(separator: "\n"))
        }
    }

    @Test(arguments: ConfigCases.names.filter { $0 != "valid_everything" })
    func everyErrorNamesFileLineAndKey(_ name: String) throws {
        let yaml = try String(contentsOf: ConfigCases.directory.appendingPathComponent("\(name).yaml"), encoding: .utf8)
        let error = try #require(throws: ConfigError.self) { try ConfigLoader.parse(yaml, file: "x.yaml", environment: ConfigCases.environment) }
        for issue in error.issues {
            #expect(issue.file == "x.yaml")
            if name != "empty" { #expect(issue.line > 0, "\(issue)") }
            #expect(!issue.message.isEmpty)
            #expect(issue.message.contains("expected") || issue.message.contains("not both") || issue.message.contains("applies only"), "\(issue) says what was expected")
        }
    }
}
