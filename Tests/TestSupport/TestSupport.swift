/// TestSupport: what the integration tests share to start real peers (pymodbus, mbpoll,
/// mosquitto, socat, our own binaries) on 127.0.0.1 with free ports, and to stop them again.
///
/// Guarantees: every process started through `ChildProcess` is terminated when the value is
/// stopped or deinitialised, so a failing test never leaves a server behind.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum TestSupport {
    /// The repository root, found from this file's path.
    public static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The Python of the project's venv (created by scripts/setup.sh, holds pymodbus).
    public static var python: String { repoRoot.appendingPathComponent(".venv/bin/python").path }

    /// Folder holding the built products of this test run (uplink, uplink-sim).
    public static var productsDirectory: URL {
        // The test bundle (xctest) lives next to the executables in .build/<triple>/debug.
        let bundle = Bundle.main.bundleURL
        var dir = bundle
        for _ in 0..<4 {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("uplink").path) { return dir }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    /// Path of one of our executables in this build.
    public static func product(_ name: String) -> String {
        productsDirectory.appendingPathComponent(name).path
    }

    /// Whether an executable is on PATH.
    public static func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed).
    public static func freeTCPPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket() failed")
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Int32 in
                guard bind(fd, sa, len) == 0 else { return -1 }
                return getsockname(fd, sa, &len)
            }
        }
        precondition(bound == 0, "bind/getsockname failed")
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:port.
    @discardableResult
    public static func waitForTCP(port: Int, timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if rc == 0 { return true }
            usleep(50_000)
        }
        return false
    }

    /// A fresh temporary directory.
    public static func temporaryDirectory(_ prefix: String = "uplink-test") -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A child process whose output is collected; terminated on `stop()` or deinit.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    private let output = Pipe()
    private let lock = NSLock()
    private var collected = Data()
    private var drained = false

    /// Starts `executable` with `arguments`; stdout and stderr are merged and collected.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                currentDirectory: URL? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let currentDirectory { process.currentDirectoryURL = currentDirectory }
        process.standardOutput = output
        process.standardError = output
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.lock()
            self.collected.append(data)
            self.lock.unlock()
        }
        // Test worker threads block SIGTERM, SIGHUP, SIGINT...; a child inherits the mask and would
        // ignore them. Launch with an empty mask so signal tests reach the child.
        var empty = sigset_t(), saved = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()
    }

    /// Everything the process printed so far.
    public var outputText: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: collected, as: UTF8.self)
    }

    /// Waits until the output contains `text`, or the timeout passes.
    @discardableResult
    public func waitForOutput(containing text: String, timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if outputText.contains(text) { return true }
            if !process.isRunning { return outputText.contains(text) }
            usleep(20_000)
        }
        return false
    }

    /// Sends a signal (SIGTERM by default).
    public func signal(_ sig: Int32 = SIGTERM) {
        if process.isRunning { kill(process.processIdentifier, sig) }
    }

    /// Waits for exit up to `timeout` seconds; returns the exit status, or nil if still running.
    @discardableResult
    public func waitForExit(timeout: Double = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { return nil }
        drain()
        return process.terminationStatus
    }

    /// After exit, takes whatever is still in the pipe (the handler may not have run yet).
    private func drain() {
        lock.lock()
        defer { lock.unlock() }
        guard !drained else { return }
        drained = true
        output.fileHandleForReading.readabilityHandler = nil
        collected.append(output.fileHandleForReading.readDataToEndOfFile())
    }

    /// Terminates the process (SIGTERM, then SIGKILL after a grace period).
    public func stop() {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if waitForExit(timeout: 3) == nil {
            signal(SIGKILL)
            waitForExit(timeout: 3)
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        output.fileHandleForReading.readabilityHandler = nil
    }

    /// Runs a command to completion and returns (status, merged output).
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           currentDirectory: URL? = nil, timeout: Double = 60) throws -> (status: Int32, output: String) {
        let child = try ChildProcess(executable, arguments, environment: environment, currentDirectory: currentDirectory)
        guard let status = child.waitForExit(timeout: timeout) else {
            child.stop()
            return (-1, child.outputText + "\n[timed out after \(timeout)s]")
        }
        return (status, child.outputText)
    }
}
