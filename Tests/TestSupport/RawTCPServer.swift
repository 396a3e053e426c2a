import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A misbehaving TCP peer on 127.0.0.1 for fault tests: it accepts connections and then answers
/// every request the same bad way.
public final class RawTCPServer: @unchecked Sendable {
    public enum Behaviour: Sendable {
        /// Reads requests and never answers (the client times out).
        case silent
        /// Answers every request with these bytes.
        case reply([UInt8])
        /// Closes each connection as soon as a request arrives.
        case hangUp
    }

    public let port: Int
    private let listener: Int32
    private let behaviour: Behaviour
    private let lock = NSLock()
    private var stopped = false
    private var connections: [Int32] = []
    private var reads = 0

    /// How many requests arrived (reads of a request each: masters wait for an answer or a timeout).
    public var requestsReceived: Int {
        lock.lock()
        defer { lock.unlock() }
        return reads
    }

    public init(_ behaviour: Behaviour) throws {
        self.behaviour = behaviour
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            lock.lock()
            if stopped {
                lock.unlock()
                close(client)
                return
            }
            connections.append(client)
            lock.unlock()
            let thread = Thread { [self] in serve(client) }
            thread.start()
        }
    }

    private func serve(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { return }
            lock.lock()
            reads += 1
            lock.unlock()
            switch behaviour {
            case .silent: continue
            case .reply(let bytes): _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            case .hangUp:
                shutdown(fd, Int32(SHUT_RDWR))
                return
            }
        }
    }

    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in connections { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    deinit { stop() }
}

/// The pymodbus server of Tests/peers/pymodbus_server.py, started for one test.
public final class PymodbusServer {
    public let port: Int
    public let process: ChildProcess

    /// Starts it on a free TCP port and waits until it accepts connections.
    public init(port: Int = TestSupport.freeTCPPort()) throws {
        self.port = port
        process = try ChildProcess(TestSupport.python, [TestSupport.repoRoot.appendingPathComponent("Tests/peers/pymodbus_server.py").path, "tcp", String(port)])
        guard TestSupport.waitForTCP(port: port, timeout: 20) else {
            process.stop()
            throw PeerError.didNotStart("pymodbus on port \(port): \(process.outputText)")
        }
    }

    public func stop() { process.stop() }
    deinit { process.stop() }
}

public enum PeerError: Error, CustomStringConvertible {
    case didNotStart(String)
    public var description: String {
        switch self { case .didNotStart(let what): "peer did not start: \(what)" }
    }
}
