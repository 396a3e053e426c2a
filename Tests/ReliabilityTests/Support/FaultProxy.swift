// A TCP proxy between the agent and the broker that misbehaves on demand: refuses (accepts and
// closes), black-holes (accepts and never answers CONNECT), or cuts connections mid-flight after a
// random number of bytes. It counts what it did, so tests can assert on counts instead of time.

import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

final class FaultProxy: @unchecked Sendable {
    enum Mode: Sendable, Equatable, CustomStringConvertible {
        /// Relays both ways.
        case pass
        /// Accepts and closes at once (the peer sees the connection closed before CONNACK).
        case reset
        /// Accepts, reads and discards, never answers, never connects upstream.
        case blackhole
        /// Relays, then closes both sides after a random number of relayed bytes in the range.
        case cut(ClosedRange<Int>)

        var description: String {
            switch self {
            case .pass: "pass"
            case .reset: "reset"
            case .blackhole: "blackhole"
            case .cut(let r): "cut after \(r.lowerBound)-\(r.upperBound) bytes"
            }
        }
    }

    struct Counts: Sendable {
        var accepted = 0
        var acceptedByMode: [String: Int] = [:]
        var cut = 0
        var relayedBytes = 0
    }

    let port: Int
    private let upstreamHost: String
    private let upstreamPort: Int
    private let listener: Int32
    private let state = Mutex<(mode: Mode, generation: Int, stopped: Bool, counts: Counts)>((.pass, 0, false, Counts()))

    init(upstreamHost: String = "127.0.0.1", upstreamPort: Int) throws {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else {
            close(fd)
            throw SandboxError("proxy: cannot listen")
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    var url: String { "mqtt://127.0.0.1:\(port)" }
    var counts: Counts { state.withLock { $0.counts } }

    /// Switches the mode; connections of the previous mode are closed (a clean break between phases).
    func set(_ mode: Mode) {
        state.withLock {
            $0.mode = mode
            $0.generation += 1
        }
    }

    func stop() {
        let first = state.withLock { s -> Bool in
            defer { s.stopped = true; s.generation += 1 }
            return !s.stopped
        }
        if first {
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
        }
    }

    deinit { stop() }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let (mode, generation, stopped) = state.withLock { s in
                s.counts.accepted += 1
                s.counts.acceptedByMode[s.mode.description, default: 0] += 1
                return (s.mode, s.generation, s.stopped)
            }
            if stopped {
                close(client)
                return
            }
            switch mode {
            case .reset:
                var lingerOption = linger(l_onoff: 1, l_linger: 0)
                setsockopt(client, SOL_SOCKET, SO_LINGER, &lingerOption, socklen_t(MemoryLayout<linger>.size))
                close(client)
            case .blackhole:
                Thread { [self] in swallow(client, generation: generation) }.start()
            case .pass, .cut:
                Thread { [self] in relay(client, generation: generation, mode: mode) }.start()
            }
        }
    }

    private func current(_ generation: Int) -> Bool {
        state.withLock { !$0.stopped && $0.generation == generation }
    }

    private func swallow(_ fd: Int32, generation: Int) {
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while current(generation) {
            let n = poll(&pfd, 1, 100)
            if n > 0 {
                if read(fd, &buffer, buffer.count) <= 0 { return }
            }
        }
    }

    private func relay(_ client: Int32, generation: Int, mode: Mode) {
        defer { close(client) }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(upstream) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(upstreamPort).bigEndian)
        addr.sin_addr.s_addr = inet_addr(upstreamHost)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { return }
        var budget = Int.max
        if case .cut(let range) = mode { budget = Int.random(in: range) }
        var relayed = 0
        var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: upstream, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 16384)
        while current(generation) {
            let n = poll(&fds, 2, 100)
            if n <= 0 { continue }
            for (index, source) in [(0, client), (1, upstream)] where fds[index].revents != 0 {
                let target = index == 0 ? upstream : client
                let count = read(source, &buffer, min(buffer.count, max(1, budget - relayed)))
                if count <= 0 { return }
                var sent = 0
                while sent < count {
                    let w = buffer[sent..<count].withUnsafeBytes { send(target, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if w <= 0 { return }
                    sent += w
                }
                relayed += count
                state.withLock { $0.counts.relayedBytes += count }
                if relayed >= budget {
                    state.withLock { $0.counts.cut += 1 }
                    var lingerOption = linger(l_onoff: 1, l_linger: 0)
                    setsockopt(client, SOL_SOCKET, SO_LINGER, &lingerOption, socklen_t(MemoryLayout<linger>.size))
                    return
                }
            }
        }
    }
}

/// An AF_UNIX datagram socket standing in for systemd's `$NOTIFY_SOCKET`: records every message
/// the agent sends (READY=1, WATCHDOG=1, STOPPING=1...) with its arrival time.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let received = Mutex<[(at: Date, text: String)]>([])
    private let stopped = Mutex(false)

    init(path: String) throws {
        self.path = path
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw SandboxError("socket(AF_UNIX): \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw SandboxError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw SandboxError("bind(\(path)): \(errno)")
        }
        self.fd = fd
        Thread { [self] in receiveLoop() }.start()
    }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while !stopped.withLock({ $0 }) {
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 {
                let text = String(decoding: buffer[0..<n], as: UTF8.self)
                received.withLock { $0.append((Date(), text)) }
            }
        }
    }

    var messages: [(at: Date, text: String)] { received.withLock { $0 } }

    /// How many messages contained `text` (e.g. "WATCHDOG=1").
    func count(_ text: String) -> Int { messages.filter { $0.text.contains(text) }.count }

    func stop() {
        guard !stopped.withLock({ let was = $0; $0 = true; return !was }) else { return }
        usleep(150_000)
        close(fd)
        unlink(path)
    }

    deinit { stop() }
}

/// The listening and bound sockets of a process, from /proc (what `ss -ltnup` would show for it).
enum SocketInspector {
    struct Socket: CustomStringConvertible {
        var kind: String
        var local: String
        var description: String { "\(kind) \(local)" }
    }

    /// Sockets of `pid` that listen (TCP, Unix stream) or are bound to a local port (UDP).
    static func listening(pid: Int32) -> [Socket] {
        let inodes = socketInodes(pid: pid)
        var out: [Socket] = []
        for (file, kind) in [("tcp", "tcp"), ("tcp6", "tcp6")] {
            for fields in table("/proc/\(pid)/net/\(file)") where fields.count > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                out.append(Socket(kind: kind, local: address(fields[1])))
            }
        }
        for (file, kind) in [("udp", "udp"), ("udp6", "udp6")] {
            for fields in table("/proc/\(pid)/net/\(file)") where fields.count > 9 && inodes.contains(fields[9]) {
                out.append(Socket(kind: kind, local: address(fields[1])))
            }
        }
        // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening.
        for fields in table("/proc/\(pid)/net/unix") where fields.count > 6 && fields[3] == "00010000" && inodes.contains(fields[6]) {
            out.append(Socket(kind: "unix", local: fields.count > 7 ? fields[7] : "(unnamed)"))
        }
        return out
    }

    static func socketInodes(pid: Int32) -> Set<String> {
        let dir = "/proc/\(pid)/fd"
        var out = Set<String>()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\(entry)"),
                  target.hasPrefix("socket:[") else { continue }
            out.insert(String(target.dropFirst(8).dropLast()))
        }
        return out
    }

    private static func table(_ path: String) -> [[String]] {
        // Read to the end: String(contentsOfFile:) stops after the first page of a /proc file (its size is 0).
        guard let handle = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? handle.close() }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        return text.split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
    }

    /// "0100007F:1F90" -> "127.0.0.1:8080" (IPv4); IPv6 left in hex.
    static func address(_ field: String) -> String {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1], radix: 16) else { return field }
        if parts[0].count == 8, let raw = UInt32(parts[0], radix: 16) {
            let b = withUnsafeBytes(of: raw.littleEndian) { Array($0) }
            return "\(b[0]).\(b[1]).\(b[2]).\(b[3]):\(port)"
        }
        return "[\(parts[0])]:\(port)"
    }
}
