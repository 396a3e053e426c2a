/// UplinkConfig: reads a YAML config into the validated `UplinkConfiguration` of UplinkCore.
///
/// Guarantees: a config that loads is complete and consistent (every device plannable within its
/// limits, every name unique, every address and type in range for its area). A config that does
/// not load yields every problem found, each naming the file, line, column, key path and what was
/// expected; loading never traps on any input.

/// One problem in a config file.
public struct ConfigIssue: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    /// Where in the document, e.g. `devices[0].signals[3].type`.
    public var path: String
    public var message: String

    public var description: String {
        let location = line > 0 ? "\(file):\(line):\(column)" : file
        return path.isEmpty ? "\(location): \(message)" : "\(location): \(path): \(message)"
    }
}

/// A config that could not be loaded, with every problem found.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}
