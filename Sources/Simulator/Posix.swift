// Thin, typed wrappers over the POSIX calls the servers need: listening sockets, pseudo-terminals
// and serial devices. Errors carry the errno text and what to do about it.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why the simulator can't run, in words that say what to do.
public enum SimulatorError: Error, CustomStringConvertible, Sendable {
    case profile(ProfileError)
    case listen(host: String, port: Int, reason: String)
    case serial(bus: String, reason: String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .profile(let error):
            return error.description
        case .listen(let host, let port, let reason):
            return "can't listen on \(host):\(port): \(reason); stop whatever uses that port or choose another one"
        case .serial(let bus, let reason):
            return "serial bus '\(bus)': \(reason)"
        case .invalidArgument(let message):
            return message
        }
    }
}

enum Posix {
    static func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    static func setCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// An IPv4 address for a host name the simulator accepts (dotted quad or localhost).
    static func ipv4(_ host: String) -> in_addr? {
        var address = in_addr()
        let text = host == "localhost" ? "127.0.0.1" : host
        return inet_pton(AF_INET, text, &address) == 1 ? address : nil
    }

    /// A non-blocking listening TCP socket; returns it and the port it got (for port 0).
    static func listenTCP(host: String, port: Int) throws(SimulatorError) -> (fd: Int32, port: Int) {
        guard let address = ipv4(host) else {
            throw .listen(host: host, port: port, reason: "'\(host)' is not an IPv4 address (use 127.0.0.1 or 0.0.0.0)")
        }
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else {
            let code = errno
            let hint = code == EMFILE ? " (raise the open-file limit: ulimit -n, or LimitNOFILE= in a systemd unit)" : ""
            throw .listen(host: host, port: port, reason: errorText(code) + hint)
        }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
        socketAddress.sin_addr = address
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &socketAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> Int32 in
                guard bind(fd, raw, length) == 0 else { return errno }
                guard listen(fd, 512) == 0 else { return errno }
                guard getsockname(fd, raw, &length) == 0 else { return errno }
                return 0
            }
        }
        guard bound == 0 else {
            close(fd)
            throw .listen(host: host, port: port, reason: errorText(bound))
        }
        setNonBlocking(fd)
        setCloseOnExec(fd)
        return (fd, Int(UInt16(bigEndian: socketAddress.sin_port)))
    }

    /// Accepts one connection, non-blocking, with Nagle off (Modbus is request/response).
    static func accept(_ listener: Int32) -> (fd: Int32, error: Int32) {
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { return (-1, errno) }
        setNonBlocking(fd)
        setCloseOnExec(fd)
        var yes: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
        return (fd, 0)
    }

    /// Raises the open-file limit to the hard limit: 100 machines with their connections need more
    /// than the usual 1024 descriptors.
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// A new pseudo-terminal: the master (ours) and the slave's path (the master's device). The
    /// slave is opened too, set raw, and kept open, so the line keeps its settings and the master
    /// doesn't see a hang-up each time a client closes it.
    static func openPseudoTerminal(bus: String) throws(SimulatorError) -> (master: Int32, slave: Int32, path: String) {
        guard let pty = PseudoTerminalAPI.load() else {
            throw .serial(bus: bus, reason: "this C library has no posix_openpt; give the bus a 'device' (e.g. a socat pty) instead")
        }
        let (posix_openpt, grantpt, unlockpt, ptsname_r) = (pty.open, pty.grant, pty.unlock, pty.name)
        let master = posix_openpt(O_RDWR | O_NOCTTY)
        guard master >= 0 else { throw .serial(bus: bus, reason: "posix_openpt failed: \(errorText(errno))") }
        guard grantpt(master) == 0, unlockpt(master) == 0 else {
            let code = errno
            close(master)
            throw .serial(bus: bus, reason: "grantpt/unlockpt failed: \(errorText(code))")
        }
        var buffer = [CChar](repeating: 0, count: 256)
        guard ptsname_r(master, &buffer, buffer.count) == 0 else {
            let code = errno
            close(master)
            throw .serial(bus: bus, reason: "ptsname failed: \(errorText(code))")
        }
        let path = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let slave = open(path, O_RDWR | O_NOCTTY)
        guard slave >= 0 else {
            let code = errno
            close(master)
            throw .serial(bus: bus, reason: "can't open the pty slave \(path): \(errorText(code))")
        }
        makeRaw(slave)
        makeRaw(master)
        setNonBlocking(master)
        setCloseOnExec(master)
        setCloseOnExec(slave)
        return (master, slave, path)
    }

    /// Opens an existing serial device (or another program's pty) in raw mode at the bus settings.
    static func openSerialDevice(_ bus: SerialBusDefinition, path: String) throws(SimulatorError) -> Int32 {
        let fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            throw .serial(bus: bus.name, reason: "can't open \(path): \(errorText(errno)); check the path and permissions (group dialout)")
        }
        setCloseOnExec(fd)
        var settings = termios()
        if tcgetattr(fd, &settings) == 0 {
            cfmakeraw(&settings)
            if let speed = speedConstant(bus.baud) {
                cfsetispeed(&settings, speed)
                cfsetospeed(&settings, speed)
            }
            settings.c_cflag &= ~tcflag_t(CSIZE | PARENB | PARODD | CSTOPB)
            settings.c_cflag |= tcflag_t(bus.dataBits == 7 ? CS7 : CS8) | tcflag_t(CLOCAL | CREAD)
            if bus.parity != .none { settings.c_cflag |= tcflag_t(PARENB) }
            if bus.parity == .odd { settings.c_cflag |= tcflag_t(PARODD) }
            if bus.stopBits == 2 { settings.c_cflag |= tcflag_t(CSTOPB) }
            tcsetattr(fd, TCSANOW, &settings)
        }
        return fd
    }

    static func makeRaw(_ fd: Int32) {
        var settings = termios()
        guard tcgetattr(fd, &settings) == 0 else { return }
        cfmakeraw(&settings)
        tcsetattr(fd, TCSANOW, &settings)
    }

    static func speedConstant(_ baud: Int) -> speed_t? {
        switch baud {
        case 1200: speed_t(B1200)
        case 2400: speed_t(B2400)
        case 4800: speed_t(B4800)
        case 9600: speed_t(B9600)
        case 19200: speed_t(B19200)
        case 38400: speed_t(B38400)
        case 57600: speed_t(B57600)
        case 115200: speed_t(B115200)
        case 230400: speed_t(B230400)
        default: nil
        }
    }

    /// Points `link` at `target`, replacing an older symlink but never a real file.
    static func replaceSymlink(_ link: String, to target: String, bus: String) throws(SimulatorError) {
        var info = stat()
        if lstat(link, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFLNK else {
                throw .serial(bus: bus, reason: "\(link) exists and is not a symlink; refusing to replace it (remove it or choose another 'link')")
            }
            unlink(link)
        }
        guard symlink(target, link) == 0 else {
            throw .serial(bus: bus, reason: "can't create the symlink \(link): \(errorText(errno))")
        }
    }

    /// Removes `link` if it is still a symlink to `target`.
    static func removeSymlink(_ link: String, ifPointingTo target: String) {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(link, &buffer, buffer.count - 1)
        guard count > 0 else { return }
        let current = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if current == target { unlink(link) }
    }
}

/// The XSI pseudo-terminal calls. Swift's Glibc module leaves them out (glibc declares them only
/// under _XOPEN_SOURCE), and this target can't carry a C shim, so they are looked up in the C
/// library at run time; every glibc and musl has them.
struct PseudoTerminalAPI {
    typealias Open = @convention(c) (Int32) -> Int32
    typealias Grant = @convention(c) (Int32) -> Int32
    typealias Name = @convention(c) (Int32, UnsafeMutablePointer<CChar>?, Int) -> Int32

    let open: Open
    let grant: Grant
    let unlock: Grant
    let name: Name

    static func load() -> PseudoTerminalAPI? {
        let library = dlopen(nil, RTLD_NOW)
        guard let open = dlsym(library, "posix_openpt"), let grant = dlsym(library, "grantpt"),
              let unlock = dlsym(library, "unlockpt"), let name = dlsym(library, "ptsname_r") else { return nil }
        return PseudoTerminalAPI(open: unsafeBitCast(open, to: Open.self), grant: unsafeBitCast(grant, to: Grant.self),
                                 unlock: unsafeBitCast(unlock, to: Grant.self), name: unsafeBitCast(name, to: Name.self))
    }
}
