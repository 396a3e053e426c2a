import Foundation
import UplinkCore
#if canImport(Glibc)
import Glibc
#endif

/// Start-up checks of the files that hold or point at secrets (issue 6, "secure by default").
///
/// A config "holds secrets" when its `mqtt` section names credentials (`username`, `password_file`,
/// `password_env`) or takes any value from the environment (`${...}`): whoever can read the file
/// learns where the password is, or a value meant to stay private. Such a config, a password file or
/// a TLS client key that every local user can read is worth a warning at every start; the agent still
/// starts (refusing would turn a permissions slip into a factory outage).
///
/// Nothing here reads or logs a secret: only paths and permission bits are reported.
public enum SecurityCheck {
    /// One warning per problem, each a complete sentence naming the file and what to do.
    public static func warnings(configPath: String, mqtt: MQTTSettings?,
                                configText: String? = nil) -> [String] {
        var out: [String] = []
        let text = configText ?? (try? String(contentsOfFile: configPath, encoding: .utf8)) ?? ""
        if configHoldsSecrets(text: text, mqtt: mqtt), let mode = permissions(configPath), mode & 0o004 != 0 {
            out.append("the config \(configPath) holds MQTT credentials or environment-substituted MQTT settings and is readable by every user (mode \(octal(mode))); expected chmod 0640 or tighter (owner root, group uplink)")
        }
        // (A world-readable username file, a ThingsBoard token, is reported by PlatformRuntime.warnings.)
        if case .file(let path)? = mqtt?.password, let mode = permissions(path), mode & 0o004 != 0 {
            out.append("the MQTT password file \(path) is readable by every user (mode \(octal(mode))); expected chmod 0600 or 0640")
        }
        if let key = mqtt?.tls?.keyFile, let mode = permissions(key), mode & 0o004 != 0 {
            out.append("the TLS client key \(key) is readable by every user (mode \(octal(mode))); expected chmod 0600 or 0640")
        }
        return out
    }

    /// The state directory holds the buffered production data: created 0700 by `uplink run`; one that
    /// already exists and lets other users in is reported.
    public static func stateDirectoryWarnings(_ directory: URL) -> [String] {
        guard let mode = permissions(directory.path), mode & 0o007 != 0 else { return [] }
        return ["the state directory \(directory.path) is open to every user (mode \(octal(mode))); it holds the buffered records; expected chmod 0700"]
    }

    /// Whether the config names MQTT credentials or substitutes any MQTT value from the environment.
    public static func configHoldsSecrets(text: String, mqtt: MQTTSettings?) -> Bool {
        if let mqtt, mqtt.username != nil || mqtt.password != nil || mqtt.usernameSource != nil { return true }
        let section = mqttSection(of: text)
        if section.contains("${") { return true }
        // Credential keys however they were spelled in (the model may not keep them all).
        let keys = ["username", "username_file", "username_env", "password_file", "password_env"]
        return section.split(separator: "\n").contains { line in
            let trimmed = line.drop { $0 == " " || $0 == "\t" || $0 == "{" || $0 == "," }
            return keys.contains { key in trimmed.hasPrefix(key + ":") || line.contains(" \(key):") || line.contains("{\(key):") }
        }
    }

    /// The text of the top-level `mqtt:` key: its line and every following line that is indented,
    /// blank or a comment (comments are left out). A plain scan rather than a YAML parse, so that it
    /// also works on a file the loader would refuse; it may over-report, never under-report, for the
    /// usual block and flow styles.
    static func mqttSection(of text: String) -> String {
        var inSection = false
        var out: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if let first = line.first, first != " ", first != "\t", first != "#" {
                inSection = line.hasPrefix("mqtt:") || line.hasPrefix("\"mqtt\":") || line.hasPrefix("'mqtt':") || line.hasPrefix("mqtt :")
            }
            if inSection && !trimmed.hasPrefix("#") { out.append(line) }
        }
        return out.joined(separator: "\n")
    }

    /// The permission bits of `path` (following symbolic links), or nil if it cannot be examined.
    static func permissions(_ path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode & 0o7777
    }

    static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

/// Text about secrets that is safe to log.
enum SecretText {
    /// Names an environment variable for a message, unless the "name" is not one: a config that
    /// writes `password_env: ${MQTT_PASSWORD}` substitutes the password itself, which must not be printed.
    static func variableName(_ name: String) -> String {
        let looksLikeName = !name.isEmpty && name.count <= 128
            && name.unicodeScalars.allSatisfy { ($0 >= "A" && $0 <= "Z") || ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "_" }
            && !(name.first?.isNumber ?? true)
        return looksLikeName ? "environment variable \(name)" : "the environment variable it names (not shown: the value does not look like a variable name; write the name, not ${...})"
    }
}
