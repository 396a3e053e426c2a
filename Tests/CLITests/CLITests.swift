import Foundation
import Testing
import TestSupport

/// The `uplink` executable as a user runs it.
@Suite("uplink check")
struct CheckCommandTests {
    static let cases = TestSupport.repoRoot.appendingPathComponent("Tests/UplinkConfigTests/testcases")
    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cases.path)) ?? []).filter { $0.hasSuffix(".yaml") }.sorted()
    }

    @Test(arguments: names)
    func outputAndExitStatus(_ file: String) throws {
        let expected = try String(contentsOf: Self.cases.appendingPathComponent(file.replacingOccurrences(of: ".yaml", with: ".expect")), encoding: .utf8)
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["check", file], environment: ["UPLINK_TEST_SET": "yes"],
                                                    currentDirectory: Self.cases)
        #expect(output == expected)
        #expect(status == (file == "valid_everything.yaml" ? 0 : 78))
        #expect(!output.contains("Fatal error") && !output.contains("Stack dump"))
    }

    @Test func missingFileIsAClearError() throws {
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["check", "/nonexistent/uplink.yaml"])
        #expect(status == 78)
        #expect(output.contains("/nonexistent/uplink.yaml: cannot read the file (No such file or directory); expected a readable YAML config at this path"))
    }

    @Test func unquotedSubstitutionInAFlowMappingGetsAHint() throws {
        let dir = TestSupport.temporaryDirectory()
        let config = dir.appendingPathComponent("c.yaml")
        try "devices:\n  - name: d\n    tcp: { host: h, port: ${P} }\n".write(to: config, atomically: true, encoding: .utf8)
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["check", config.path])
        #expect(status == 78)
        #expect(output.contains("c.yaml:3:"))
        #expect(output.contains("expected ${VAR} references inside { } to be quoted"))
    }

    @Test func shippedConfigsAreValid() throws {
        let configs = TestSupport.repoRoot.appendingPathComponent("Configs")
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: configs.path)) ?? []).filter { $0.hasSuffix(".yaml") }
        for file in files {
            let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["check", configs.appendingPathComponent(file).path])
            #expect(status == 0, "\(file): \(output)")
        }
    }
}

@Suite("uplink read", .serialized)
final class ReadCommandTests {
    let server: PymodbusServer
    init() throws { server = try PymodbusServer() }
    deinit { server.stop() }

    func read(_ args: [String]) throws -> (status: Int32, output: String) {
        try ChildProcess.run(TestSupport.product("uplink"), ["read"] + args)
    }

    @Test func decodesAFloatInWordSwappedOrderWithAModiconAddress() throws {
        let (status, output) = try read(["--tcp", "127.0.0.1:\(server.port)", "--address", "400103", "--type", "float32", "--order", "CDAB", "--json"])
        #expect(status == 0)
        let line = try #require(output.split(separator: "\n").first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["value"] as? Double == 123.25)
        #expect(object["quality"] as? String == "good")
        #expect(object["address"] as? Int == 102)
        #expect(object["ts"] is Int)
    }

    @Test func countReadsConsecutiveValues() throws {
        let (status, output) = try read(["--tcp", "127.0.0.1:\(server.port)", "--area", "holding", "--address", "0", "--type", "uint16", "--count", "3", "--json"])
        #expect(status == 0)
        let values = output.split(separator: "\n").compactMap { line -> Int? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["value"] as? Int
        }
        #expect(values == [1000, 1001, 1002])
    }

    @Test func tableShowsStringsAndUnits() throws {
        let (status, output) = try read(["--tcp", "127.0.0.1:\(server.port)", "--area", "holding", "--address", "108", "--type", "string:4"])
        #expect(status == 0)
        #expect(output.contains("IMM-3000"))
        #expect(output.contains("good"))
    }

    @Test func exceptionIsReportedWithItsQualityButTheDeviceWasReached() throws {
        let (status, output) = try read(["--tcp", "127.0.0.1:\(server.port)", "--area", "input", "--address", "300", "--json"])
        #expect(status == 0)
        #expect(output.contains("\"quality\":\"exception_2\""))
    }

    @Test func unreachableDeviceExits69WithTheReason() throws {
        let port = TestSupport.freeTCPPort()
        let (status, output) = try read(["--tcp", "127.0.0.1:\(port)", "--area", "holding", "--address", "0", "--timeout", "300ms"])
        #expect(status == 69)
        #expect(output.contains("Connection refused"))
    }

    @Test func readsEveryConfiguredSignal() throws {
        let dir = TestSupport.temporaryDirectory()
        let config = dir.appendingPathComponent("c.yaml")
        try """
        devices:
          - name: peer
            tcp: { host: 127.0.0.1, port: "${PEER_PORT}" }
            signals:
              - { name: temperature, area: input, address: 1, type: uint16, scale: 0.1, unit: degC }
              - { name: model, area: holding, address: 108, type: string, registers: 4 }
        """.write(to: config, atomically: true, encoding: .utf8)
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["read", config.path, "--json"], environment: ["PEER_PORT": String(server.port)])
        #expect(status == 0, "\(output)")
        #expect(output.contains("\"signal\":\"temperature\""))
        #expect(output.contains("\"value\":200.1"))
        #expect(output.contains("\"unit\":\"degC\""))
        #expect(output.contains("\"value\":\"IMM-3000\""))
    }

    @Test(arguments: [
        (["--tcp", "nohost", "--address", "0", "--area", "holding"], "expected HOST:PORT"),
        (["--tcp", "127.0.0.1:1", "--address", "0"], "needs an area"),
        (["--tcp", "127.0.0.1:1", "--address", "0", "--area", "coil", "--type", "float32"], "does not fit"),
        (["--tcp", "127.0.0.1:1", "--address", "0", "--area", "holding", "--order", "XYZ"], "expected ABCD"),
        (["--tcp", "127.0.0.1:1"], "--address is required"),
    ])
    func badArgumentsAreUsageErrors(_ args: [String], _ message: String) throws {
        let (status, output) = try read(args)
        #expect(status == 64)
        #expect(output.contains(message), "\(output)")
    }
}
