/// Agent: wires the stages (collector -> disk buffer -> publisher) into the `uplink run` daemon and
/// owns its lifecycle: start, SIGHUP reload (validated first), SIGTERM graceful stop, systemd
/// readiness and watchdog, structured logs, and the status snapshot `uplink status` reads.
///
/// Guarantees: a reload with a bad config keeps the running one and says why; SIGTERM finishes the
/// current polls, commits what was accepted, disconnects cleanly and returns; logs are one line per
/// event (logfmt), flushed at once, and never contain a password.
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Structured, journald-friendly log lines on stdout: `level=info msg="..." key=value ...`.
/// Each line is written with one `write(2)` so lines from threads never interleave.
public final class Log: Sendable {
    public enum Level: Int, Sendable, Comparable, CustomStringConvertible {
        case debug = 0, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String {
            switch self {
            case .debug: "debug"
            case .info: "info"
            case .warning: "warning"
            case .error: "error"
            }
        }
        /// The `<N>` prefix journald reads as the syslog priority.
        var journalPriority: Int {
            switch self {
            case .debug: 7
            case .info: 6
            case .warning: 4
            case .error: 3
            }
        }
    }

    private let minimum: Level
    private let fd: Int32
    private let journal: Bool
    private let lock = Mutex(())

    /// `journal` prefixes each line with its syslog priority (`<6>`), which journald understands
    /// (set automatically when `JOURNAL_STREAM` says stdout is the journal).
    public init(minimum: Level = .info, fd: Int32 = 1, journal: Bool = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil) {
        self.minimum = minimum
        self.fd = fd
        self.journal = journal
    }

    public func debug(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.debug, message, fields) }
    public func info(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.info, message, fields) }
    public func warning(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.warning, message, fields) }
    public func error(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.error, message, fields) }

    public func write(_ level: Level, _ message: String, _ fields: KeyValuePairs<String, String>) {
        guard level >= minimum else { return }
        var line = journal ? "<\(level.journalPriority)>" : ""
        if !journal { line += "ts=\(Self.timestamp()) " }
        line += "level=\(level) msg=\(Self.quote(message))"
        for (key, value) in fields { line += " \(key)=\(Self.quote(value))" }
        line += "\n"
        lock.withLock { _ in
            line.utf8CString.withUnsafeBufferPointer { buffer in
                var offset = 0
                let count = buffer.count - 1
                while offset < count {
                    let n = Glibc.write(fd, buffer.baseAddress.map { UnsafeRawPointer($0) + offset }, count - offset)
                    if n <= 0 { break }
                    offset += n
                }
            }
        }
    }

    /// logfmt quoting: bare when safe, else double-quoted with escapes.
    static func quote(_ value: String) -> String {
        if !value.isEmpty && value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" && $0.value != 0x7F }) {
            return value
        }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(ts.tv_nsec / 1_000_000))
    }
}

/// Lets one line through at once, then at most one per `interval`, counting what it held back: a
/// failure that repeats on every poll (a read-only disk) must not flood the journal.
final class LogThrottle: Sendable {
    private let interval: Duration
    private let state = Mutex<(last: ContinuousClock.Instant?, held: Int)>((nil, 0))

    init(interval: Duration = .seconds(10)) {
        self.interval = interval
    }

    /// nil: hold this line back. Otherwise log it, with the number of lines held back since the last.
    func admit() -> Int? {
        state.withLock { s in
            let now = ContinuousClock.now
            if let last = s.last, now - last < interval {
                s.held += 1
                return nil
            }
            let held = s.held
            s = (now, 0)
            return held
        }
    }
}
