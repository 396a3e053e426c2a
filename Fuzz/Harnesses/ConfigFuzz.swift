// libFuzzer harness: the agent's config loader (YAML -> validated model), then the planner and the
// `uplink check` report on whatever loads. Properties: no crash, no hang (libFuzzer -timeout), and an
// error always names the file and says what is wrong.
import UplinkConfig
import UplinkCore

@_cdecl("LLVMFuzzerTestOneInput")
public func uplinkFuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let text = String(decoding: bytes, as: UTF8.self)
    do {
        let config = try ConfigLoader.parse(text, file: "fuzz.yaml", environment: ["HOST": "127.0.0.1", "PORT": "502", "X": "7"])
        precondition(!config.devices.isEmpty, "a config loaded without devices")
        for device in config.devices { _ = Planner.plan(device) }
        precondition(!PlanReport.render(config, file: "fuzz.yaml").isEmpty, "an empty plan report")
    } catch {
        precondition(!error.issues.isEmpty, "a config error without issues")
        for issue in error.issues {
            precondition(issue.description.hasPrefix("fuzz.yaml") && !issue.message.isEmpty && issue.line >= 0,
                         "an unclear config error: \(issue.description)")
        }
    }
    return 0
}
