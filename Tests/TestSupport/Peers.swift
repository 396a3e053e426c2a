import Foundation

/// A pseudo-terminal pair made by socat: whatever is written to one end comes out of the other,
/// like two ends of an RS-485 line.
public final class PtyPair {
    public let directory: URL
    public let process: ChildProcess
    public var master: String { directory.appendingPathComponent("a").path }
    public var slave: String { directory.appendingPathComponent("b").path }

    public init() throws {
        directory = TestSupport.temporaryDirectory("uplink-pty")
        let a = directory.appendingPathComponent("a").path, b = directory.appendingPathComponent("b").path
        process = try ChildProcess("/usr/bin/socat", ["-d", "-d", "pty,raw,echo=0,link=\(a)", "pty,raw,echo=0,link=\(b)"])
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: a) && FileManager.default.fileExists(atPath: b) { return }
            usleep(20_000)
        }
        process.stop()
        throw PeerError.didNotStart("socat pty pair: \(process.outputText)")
    }

    public func stop() { process.stop() }
    deinit { process.stop() }
}

/// pymodbus serving Modbus RTU on one end of a pty pair.
public final class PymodbusRTUServer {
    public let pty: PtyPair
    public let process: ChildProcess
    /// Where a master connects.
    public var port: String { pty.master }

    public init() throws {
        pty = try PtyPair()
        process = try ChildProcess(TestSupport.python, [TestSupport.repoRoot.appendingPathComponent("Tests/peers/pymodbus_server.py").path, "rtu", pty.slave])
        guard process.waitForOutput(containing: "serving rtu", timeout: 20) else {
            throw PeerError.didNotStart("pymodbus rtu: \(process.outputText)")
        }
        // The serial server opens the port just after printing.
        usleep(700_000)
    }

    public func stop() {
        process.stop()
        pty.stop()
    }

    deinit { stop() }
}
