// The test's own sandbox: a temporary directory, commands run as root (mount, ip, tc), and cleanup
// steps that run in reverse order however the test ends (a failing #require, a thrown error).
// Facilities the machine may lack (tmpfs mounts, network namespaces, netem, loop devices) are probed
// once and reported, so a test can skip itself with a clear message.

import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory plus cleanup steps, undone in reverse order on `cleanUp()` or deinit.
final class Sandbox: @unchecked Sendable {
    let directory: URL
    private let lock = NSLock()
    private var steps: [(String, () -> Void)] = []

    init(_ name: String) {
        directory = TestSupport.temporaryDirectory("uplink-rel-\(name)")
    }

    func path(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// Registers an undo step (unmount, delete a namespace, stop a process).
    func onCleanup(_ what: String, _ step: @escaping () -> Void) {
        lock.lock()
        steps.append((what, step))
        lock.unlock()
    }

    func cleanUp() {
        lock.lock()
        let pending = steps.reversed()
        steps = []
        lock.unlock()
        for (_, step) in pending { step() }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { cleanUp() }
}

enum Shell {
    /// Runs a command to completion; (status, merged output).
    @discardableResult
    static func run(_ command: [String], timeout: Double = 60) -> (status: Int32, output: String) {
        guard let executable = command.first else { return (-1, "empty command") }
        let path = executable.hasPrefix("/") ? executable : (TestSupport.which(executable) ?? executable)
        do {
            return try ChildProcess.run(path, Array(command.dropFirst()), timeout: timeout)
        } catch {
            return (-1, "\(command.joined(separator: " ")): \(error)")
        }
    }

    /// Runs a command that must succeed.
    @discardableResult
    static func must(_ command: [String], timeout: Double = 60) throws -> String {
        let (status, output) = run(command, timeout: timeout)
        guard status == 0 else { throw SandboxError("`\(command.joined(separator: " "))` exited \(status): \(output)") }
        return output
    }
}

struct SandboxError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What this machine allows, probed once (each probe undoes itself).
enum Facilities {
    static let isRoot = geteuid() == 0

    /// `mount -t tmpfs` works (root, and not forbidden by a container).
    static let tmpfs: Bool = {
        guard isRoot else { return false }
        let dir = TestSupport.temporaryDirectory("uplink-rel-probe")
        defer { try? FileManager.default.removeItem(at: dir) }
        guard Shell.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir.path]).status == 0 else { return false }
        Shell.run(["umount", dir.path])
        return true
    }()

    /// An ext4 file system on a loop device (for read-only and frozen-disk faults).
    static let loopExt4: Bool = {
        guard isRoot, TestSupport.which("mkfs.ext4") != nil, FileManager.default.fileExists(atPath: "/dev/loop-control") else { return false }
        let dir = TestSupport.temporaryDirectory("uplink-rel-probe")
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = dir.appendingPathComponent("img").path, mountPoint = dir.appendingPathComponent("mnt").path
        try? FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard Shell.run(["truncate", "-s", "8M", image]).status == 0, Shell.run(["mkfs.ext4", "-q", "-F", image]).status == 0,
              Shell.run(["mount", "-o", "loop", image, mountPoint]).status == 0 else { return false }
        Shell.run(["umount", mountPoint])
        return true
    }()

    /// `ip netns add` and veth pairs.
    static let netns: Bool = {
        guard isRoot, TestSupport.which("ip") != nil else { return false }
        let name = "urelprobe\(UInt16.random(in: 0...UInt16.max))"
        guard Shell.run(["ip", "netns", "add", name]).status == 0 else { return false }
        defer { Shell.run(["ip", "netns", "del", name]) }
        let veth = "urp\(UInt16.random(in: 0...UInt16.max))"
        guard Shell.run(["ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b"]).status == 0 else { return false }
        Shell.run(["ip", "link", "del", veth + "a"])
        return true
    }()

    /// The `netem` queueing discipline (kernel module sch_netem). Absent in some VM kernels.
    static let netem: Bool = {
        guard netns, TestSupport.which("tc") != nil else { return false }
        let veth = "urq\(UInt16.random(in: 0...UInt16.max))"
        guard Shell.run(["ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b"]).status == 0 else { return false }
        defer { Shell.run(["ip", "link", "del", veth + "a"]) }
        return Shell.run(["tc", "qdisc", "add", "dev", veth + "a", "root", "netem", "delay", "10ms"]).status == 0
    }()

    /// The `tbf` (token bucket) discipline, the fallback for shaping a link when netem is missing.
    static let tbf: Bool = {
        guard netns, TestSupport.which("tc") != nil else { return false }
        let veth = "urt\(UInt16.random(in: 0...UInt16.max))"
        guard Shell.run(["ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b"]).status == 0 else { return false }
        defer { Shell.run(["ip", "link", "del", veth + "a"]) }
        return Shell.run(["tc", "qdisc", "add", "dev", veth + "a", "root", "tbf", "rate", "1mbit", "burst", "4kb", "latency", "50ms"]).status == 0
    }()

    static var summary: String {
        "root \(isRoot), tmpfs \(tmpfs), loop ext4 \(loopExt4), netns \(netns), netem \(netem), tbf \(tbf)"
    }
}

/// A tmpfs of a fixed size mounted on a fresh directory of the sandbox; unmounted at cleanup.
final class Tmpfs {
    let mountPoint: URL

    init(_ sandbox: Sandbox, name: String, size: String) throws {
        mountPoint = sandbox.path(name)
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        try Shell.must(["mount", "-t", "tmpfs", "-o", "size=\(size),mode=0755", "tmpfs", mountPoint.path])
        let path = mountPoint.path
        sandbox.onCleanup("umount \(path)") {
            if Shell.run(["umount", path]).status != 0 { Shell.run(["umount", "-l", path]) }
        }
    }
}

/// An ext4 file system in an image file on a loop device, mounted with `errors=remount-ro` as a
/// gateway's data partition would be.
final class Ext4Disk {
    let image: URL
    let mountPoint: URL

    init(_ sandbox: Sandbox, name: String, size: String = "64M") throws {
        image = sandbox.path("\(name).img")
        mountPoint = sandbox.path(name)
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        try Shell.must(["truncate", "-s", size, image.path])
        try Shell.must(["mkfs.ext4", "-q", "-F", image.path])
        try mount()
        let path = mountPoint.path
        sandbox.onCleanup("unmount \(path)") {
            Shell.run(["fsfreeze", "--unfreeze", path])
            if Shell.run(["umount", path]).status != 0 { Shell.run(["umount", "-l", path]) }
        }
    }

    func mount() throws {
        try Shell.must(["mount", "-o", "loop,errors=remount-ro", image.path, mountPoint.path])
    }

    /// What the kernel does after a disk error under `errors=remount-ro`: the file system turns
    /// read-only at once, for files already open too (`mount -o remount,abort`).
    func failReadOnly() throws {
        try Shell.must(["mount", "-o", "remount,abort", mountPoint.path])
    }

    /// Blocks every write (a stalled disk): `fsfreeze`.
    func freeze() throws { try Shell.must(["fsfreeze", "--freeze", mountPoint.path]) }
    func unfreeze() { Shell.run(["fsfreeze", "--unfreeze", mountPoint.path]) }

    /// What an operator does after the disk error: unmount, fsck, mount again.
    /// The unmount is retried until it succeeds and the loop device is gone: a lazy unmount would
    /// leave the aborted superblock in use, and the next mount of the same image would get it back,
    /// still read-only (seen once on a clean CI clone: the restarted agent could not lock its state).
    func repair() throws {
        let path = mountPoint.path
        var unmounted = false
        for _ in 0..<100 {
            if Shell.run(["umount", path]).status == 0 { unmounted = true; break }
            usleep(100_000)
        }
        if !unmounted { throw SandboxError("\(path) stayed busy for 10 s: cannot unmount it for fsck") }
        for _ in 0..<100 {
            if Shell.run(["losetup", "-j", image.path]).output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { break }
            usleep(100_000)
        }
        let (status, output) = Shell.run(["e2fsck", "-fy", image.path], timeout: 120)
        guard status <= 2 else { throw SandboxError("e2fsck exited \(status): \(output)") }
        try mount()
        let probe = mountPoint.appendingPathComponent(".writable")
        guard FileManager.default.createFile(atPath: probe.path, contents: Data()) else {
            throw SandboxError("\(path) is still read-only after fsck and a fresh mount: \(Shell.run(["findmnt", path]).output)")
        }
        try? FileManager.default.removeItem(at: probe)
    }
}

/// A network namespace joined to the host by a veth pair: host side `hostAddress`, namespace side
/// `namespaceAddress` (a /30 of 10.200.0.0/16 picked at random), loopback up inside.
final class NetworkNamespace {
    let name: String
    let hostInterface: String
    let namespaceInterface: String
    let hostAddress: String
    let namespaceAddress: String

    init(_ sandbox: Sandbox) throws {
        let tag = String(format: "%05x", Int.random(in: 0..<0xFFFFF))
        name = "uplink-rel-\(tag)"
        hostInterface = "ur\(tag)h"
        namespaceInterface = "ur\(tag)n"
        let block = Int.random(in: 0..<16384) * 4
        hostAddress = "10.200.\(block / 256).\(block % 256 + 1)"
        namespaceAddress = "10.200.\(block / 256).\(block % 256 + 2)"
        try Shell.must(["ip", "netns", "add", name])
        let name = self.name, host = hostInterface
        sandbox.onCleanup("delete netns \(name)") {
            Shell.run(["ip", "link", "del", host])
            Shell.run(["ip", "netns", "del", name])
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
        }
        try Shell.must(["ip", "-n", name, "link", "set", "lo", "up"])
        try Shell.must(["ip", "link", "add", hostInterface, "type", "veth", "peer", "name", namespaceInterface])
        try Shell.must(["ip", "link", "set", namespaceInterface, "netns", name])
        try Shell.must(["ip", "addr", "add", "\(hostAddress)/30", "dev", hostInterface])
        try Shell.must(["ip", "link", "set", hostInterface, "up"])
        try Shell.must(["ip", "-n", name, "addr", "add", "\(namespaceAddress)/30", "dev", namespaceInterface])
        try Shell.must(["ip", "-n", name, "link", "set", namespaceInterface, "up"])
    }

    /// Namespace-local files (`ip netns exec` bind-mounts /etc/netns/NAME/FILE over /etc/FILE), e.g.
    /// an /etc/hosts of the namespace's own.
    func etcFile(_ file: String) -> URL {
        URL(fileURLWithPath: "/etc/netns/\(name)/\(file)")
    }

    /// The command line that runs `command` inside the namespace (`ip netns exec` execs it: same pid).
    func wrap(_ command: [String]) -> [String] {
        ["/usr/sbin/ip", "netns", "exec", name] + command
    }

    enum Shaping: CustomStringConvertible {
        /// netem: fixed delay and random loss, each direction.
        case netem(delayMs: Int, lossPercent: Int)
        /// tbf: a slow link whose queue holds at most `latencyMs`; what does not fit is dropped.
        case tbf(rateKbit: Int, latencyMs: Int)

        var description: String {
            switch self {
            case .netem(let d, let l): "netem delay \(d)ms loss \(l)%"
            case .tbf(let r, let l): "tbf rate \(r)kbit latency \(l)ms (drops what overflows the queue)"
            }
        }
    }

    /// Shapes both directions of the veth pair.
    func shape(_ shaping: Shaping) throws {
        let args: [String]
        switch shaping {
        case .netem(let delay, let loss): args = ["netem", "delay", "\(delay)ms", "loss", "\(loss)%"]
        case .tbf(let rate, let latency): args = ["tbf", "rate", "\(rate)kbit", "burst", "3kb", "latency", "\(latency)ms"]
        }
        try Shell.must(["tc", "qdisc", "replace", "dev", hostInterface, "root"] + args)
        try Shell.must(["ip", "netns", "exec", name, "tc", "qdisc", "replace", "dev", namespaceInterface, "root"] + args)
    }

    func unshape() {
        Shell.run(["tc", "qdisc", "del", "dev", hostInterface, "root"])
        Shell.run(["ip", "netns", "exec", name, "tc", "qdisc", "del", "dev", namespaceInterface, "root"])
    }

    /// Packets the shaping dropped so far, both directions (from `tc -s qdisc`).
    func droppedPackets() -> Int {
        let out = Shell.run(["tc", "-s", "qdisc", "show", "dev", hostInterface]).output
            + Shell.run(["ip", "netns", "exec", name, "tc", "-s", "qdisc", "show", "dev", namespaceInterface]).output
        var total = 0
        for line in out.split(separator: "\n") where line.contains("dropped") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "(" || $0 == ")" })
            if let i = words.firstIndex(of: "dropped"), i + 1 < words.count, let n = Int(words[i + 1]) { total += n }
        }
        return total
    }
}

/// Waits until something accepts TCP connections on host:port (any reachable address).
func waitForTCP(host: String, port: Int, timeout: Double = 15) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(fd)
        if rc == 0 { return true }
        usleep(50_000)
    }
    return false
}

/// The permission bits of a file.
func permissions(_ path: String) -> Int? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return Int(info.st_mode & 0o7777)
}

/// Sleeps without blocking a cooperative thread.
func pause(_ seconds: Double) async {
    try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
}
