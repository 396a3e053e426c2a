// One poll() loop on a dedicated thread serves every listener, connection, serial line and the
// control interface. Blocking I/O stays off the Swift cooperative pool, and one thread is enough:
// answering a request is a lock, a copy and a send. Handlers are confined to the loop thread, so
// they need no locks of their own; the machines they call into carry their own.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Something the loop polls: a socket, a pty, a listener.
protocol LoopHandler: AnyObject {
    var fd: Int32 { get }
    /// poll() events wanted now; 0 to skip this round.
    var events: Int16 { get }
    /// When `handleTimers` must run next.
    var deadline: Double? { get }
    var isClosed: Bool { get }
    func handle(revents: Int16, now: Double)
    func handleTimers(now: Double)
    /// Called every loop round trip of at most `EventLoop.period` (offline checks and the like).
    func periodic(now: Double)
    func close()
}

extension LoopHandler {
    func handleTimers(now: Double) {}
    func periodic(now: Double) {}
}

final class EventLoop {
    /// Longest poll() sleep: how late an offline period may start or end.
    static let period = 0.05
    private var handlers: [LoopHandler] = []
    private var added: [LoopHandler] = []
    private let wakeFD: Int32

    init(wakeFD: Int32) {
        self.wakeFD = wakeFD
    }

    func add(_ handler: LoopHandler) { added.append(handler) }

    func run(shouldStop: () -> Bool) {
        var descriptors: [pollfd] = []
        var owners: [LoopHandler] = []
        var nextPeriodic = 0.0
        while !shouldStop() {
            if !added.isEmpty {
                handlers += added
                added.removeAll()
            }
            handlers.removeAll { $0.isClosed }

            var now = MonotonicClock.now()
            var timeout = Self.period
            descriptors.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            descriptors.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            for handler in handlers {
                if let deadline = handler.deadline { timeout = min(timeout, max(0, deadline - now)) }
                let events = handler.events
                guard handler.fd >= 0, events != 0 else { continue }
                descriptors.append(pollfd(fd: handler.fd, events: events, revents: 0))
                owners.append(handler)
            }
            let milliseconds = Int32((timeout * 1000).rounded(.up))
            let ready = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
            if ready < 0, errno != EINTR { usleep(1000) }

            if descriptors[0].revents != 0 {
                var sink = [UInt8](repeating: 0, count: 64)
                _ = read(wakeFD, &sink, sink.count)
            }
            now = MonotonicClock.now()
            if ready > 0 {
                for index in owners.indices where descriptors[index + 1].revents != 0 && !owners[index].isClosed {
                    owners[index].handle(revents: descriptors[index + 1].revents, now: now)
                }
            }
            now = MonotonicClock.now()
            for handler in handlers where !handler.isClosed {
                if let deadline = handler.deadline, deadline <= now { handler.handleTimers(now: now) }
            }
            if now >= nextPeriodic {
                nextPeriodic = now + Self.period
                for handler in handlers where !handler.isClosed { handler.periodic(now: now) }
            }
        }
        for handler in handlers + added { handler.close() }
        handlers.removeAll()
        added.removeAll()
    }
}

// MARK: - Modbus TCP

/// A listening port with the machines (unit ids) behind it.
final class TCPListener: LoopHandler {
    let host: String
    let port: Int
    private(set) var fd: Int32
    let machinesByUnit: [UInt8: Machine]
    let machines: [Machine]
    let maxConnections: Int
    private unowned let loop: EventLoop
    private var connections: [ObjectIdentifier: TCPConnection] = [:]
    private var acceptPausedUntil = 0.0
    private var nextRebind = 0.0
    private(set) var isClosed = false

    init(fd: Int32, host: String, port: Int, machines: [Machine], loop: EventLoop) {
        self.fd = fd
        self.host = host
        self.port = port
        self.machines = machines
        self.loop = loop
        var byUnit: [UInt8: Machine] = [:]
        for machine in machines { byUnit[machine.definition.endpoint.unit] = machine }
        machinesByUnit = byUnit
        maxConnections = machines.compactMap(\.definition.maxConnections).min() ?? 4096
    }

    var isShared: Bool { machines.count > 1 }

    var events: Int16 { fd >= 0 && acceptPausedUntil == 0 ? Int16(POLLIN) : 0 }
    var deadline: Double? { nil }

    /// The machine a unit id reaches. A port with one machine also answers unit 0 and 255, the
    /// ids masters use for "the device at this address".
    func route(_ unit: UInt8) -> Machine? {
        if let machine = machinesByUnit[unit] { return machine }
        if machines.count == 1, unit == 0 || unit == 255 { return machines.first }
        return nil
    }

    func handle(revents: Int16, now: Double) {
        for _ in 0..<64 {
            let (client, error) = Posix.accept(fd)
            guard client >= 0 else {
                if error == EMFILE || error == ENFILE {
                    // Out of descriptors: stop accepting for a moment instead of spinning on poll().
                    acceptPausedUntil = now + 0.1
                }
                return
            }
            guard connections.count < maxConnections else {
                Glibc.close(client)
                continue
            }
            let connection = TCPConnection(fd: client, listener: self)
            connections[ObjectIdentifier(connection)] = connection
            loop.add(connection)
        }
    }

    func periodic(now: Double) {
        if acceptPausedUntil != 0, now >= acceptPausedUntil { acceptPausedUntil = 0 }
        // An offline machine that owns its port vanishes from the network: connections reset,
        // new ones refused. It comes back by listening again.
        let offline = machines.allSatisfy { $0.isOffline(now: now) }
        if offline, fd >= 0 {
            Glibc.close(fd)
            fd = -1
            for connection in Array(connections.values) { connection.close() }
        } else if !offline, fd < 0, now >= nextRebind {
            if let listening = try? Posix.listenTCP(host: host, port: port) {
                fd = listening.fd
            } else {
                nextRebind = now + 0.5
            }
        }
    }

    func connectionClosed(_ connection: TCPConnection) {
        connections[ObjectIdentifier(connection)] = nil
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        for connection in Array(connections.values) { connection.close() }
    }
}

/// One master's TCP connection.
final class TCPConnection: LoopHandler {
    /// Stop reading from a master that doesn't read its responses.
    static let maxQueuedOutput = 1 << 20
    /// Frames answered per wake-up, so one flooding master can't starve the others.
    static let framesPerWake = 512

    private(set) var fd: Int32
    private unowned let listener: TCPListener
    private var input: [UInt8] = []
    private var output: [UInt8] = []
    private var outputOffset = 0
    private var scheduled: [(due: Double, bytes: [UInt8])] = []
    private var scheduledBytes = 0
    private(set) var isClosed = false
    private var readBuffer = [UInt8](repeating: 0, count: 65536)
    /// Whole frames are waiting that the per-wake cap left for the next round.
    private var backlog = false

    init(fd: Int32, listener: TCPListener) {
        self.fd = fd
        self.listener = listener
        output.reserveCapacity(4096)
    }

    var events: Int16 {
        guard !isClosed else { return 0 }
        var wanted: Int16 = 0
        if output.count > outputOffset { wanted |= Int16(POLLOUT) }
        // Frames left unanswered in the input (the per-wake cap) are picked up by the timer.
        if output.count - outputOffset + scheduledBytes < Self.maxQueuedOutput, input.count < Self.maxQueuedOutput {
            wanted |= Int16(POLLIN)
        }
        return wanted
    }

    var deadline: Double? {
        if backlog, output.count - outputOffset < Self.maxQueuedOutput { return 0 }
        return scheduled.first?.due
    }

    func handle(revents: Int16, now: Double) {
        if revents & Int16(POLLNVAL) != 0 { close(); return }
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            let open = readAvailable()
            processFrames(now: now)
            if !open { close(); return }
        }
        flush()
    }

    func handleTimers(now: Double) {
        if backlog { processFrames(now: now) }
        while let first = scheduled.first, first.due <= now {
            output += first.bytes
            scheduledBytes -= first.bytes.count
            scheduled.removeFirst()
        }
        flush()
    }

    /// Reads what is there; false when the peer has gone.
    private func readAvailable() -> Bool {
        for _ in 0..<4 {
            let count = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                input.append(contentsOf: readBuffer[0..<count])
                if count < readBuffer.count { return true }
            } else if count == 0 {
                return false
            } else {
                return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
            }
        }
        return true
    }

    private func processFrames(now: Double) {
        var start = 0
        var handled = 0
        scan: while handled < Self.framesPerWake, !isClosed {
            switch MBAP.scan(input, from: start) {
            case .needMore:
                break scan
            case .invalid:
                // Not Modbus TCP: there is no way to find the next frame, so hang up like a device would.
                close()
                return
            case .frame(let header, let pdu, let consumed):
                start += consumed
                handled += 1
                dispatch(header, Array(input[pdu]), now: now)
            }
        }
        backlog = handled == Self.framesPerWake
        if !isClosed, start > 0 { input.removeFirst(start) }
    }

    private func dispatch(_ header: MBAPHeader, _ pdu: [UInt8], now: Double) {
        guard let machine = listener.route(header.unit),
              !(listener.isShared && machine.isOffline(now: now)) else {
            // A gateway with nothing (or nothing alive) at that unit id says so.
            let exception = ModbusPDU.exception(functionByte: pdu.first ?? 0, code: .gatewayTargetFailedToRespond)
            schedule(MBAP.encode(transactionID: header.transactionID, unit: header.unit, pdu: exception), due: now)
            return
        }
        let reply = machine.handle(pdu: pdu, unit: header.unit, now: now)
        switch reply.action {
        case .silent:
            return
        case .close:
            close()
        case .respond(var response):
            if case .garbled(let noise) = reply.mutation { response = Machine.garbledPDU(response, noise: noise) }
            var frame = MBAP.encode(transactionID: header.transactionID, unit: reply.unit, pdu: response)
            if reply.mutation == .truncated { frame = Array(frame.prefix(max(1, frame.count / 2))) }
            schedule(frame, due: now + reply.delay)
        }
    }

    /// Queues a frame; later frames never overtake earlier ones (a device answers in order).
    private func schedule(_ frame: [UInt8], due: Double) {
        if scheduled.isEmpty, due <= MonotonicClock.now() {
            output += frame
            return
        }
        scheduled.append((max(due, scheduled.last?.due ?? 0), frame))
        scheduledBytes += frame.count
    }

    private func flush() {
        while !isClosed, outputOffset < output.count {
            let sent = output.withUnsafeBytes { bytes in
                send(fd, bytes.baseAddress.map { $0 + outputOffset }, bytes.count - outputOffset, Int32(MSG_NOSIGNAL))
            }
            if sent > 0 {
                outputOffset += sent
            } else if sent < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR {
                break
            } else {
                close()
                return
            }
        }
        if outputOffset == output.count {
            output.removeAll(keepingCapacity: true)
            outputOffset = 0
        }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
        fd = -1
        input = []
        output = []
        scheduled = []
        listener.connectionClosed(self)
    }
}

// MARK: - Modbus RTU

/// A serial line (pty master or device) with the machines (unit ids) on it. Frames are cut by
/// length (from the function code) and by line silence, checked by CRC; frames for absent units
/// are ignored, as on a real bus.
final class SerialLine: LoopHandler {
    let bus: SerialBusDefinition
    private(set) var fd: Int32
    let machinesByUnit: [UInt8: Machine]
    private let characterTime: Double
    private let silence: Double
    /// How long an incomplete frame may wait for its rest.
    private let staleAfter: Double
    private var input: [UInt8] = []
    private var firstByteAt = 0.0
    private var lastByteAt = 0.0
    private var output: [UInt8] = []
    private var scheduled: [(due: Double, bytes: [UInt8])] = []
    private var busyUntil = 0.0
    private(set) var isClosed = false
    private var readBuffer = [UInt8](repeating: 0, count: 4096)
    private(set) var droppedFrames = 0

    init(fd: Int32, bus: SerialBusDefinition, machines: [Machine]) {
        self.fd = fd
        self.bus = bus
        var byUnit: [UInt8: Machine] = [:]
        for machine in machines { byUnit[machine.definition.endpoint.unit] = machine }
        machinesByUnit = byUnit
        characterTime = RTUFraming.characterTime(baud: bus.baud, dataBits: bus.dataBits, parity: true, stopBits: bus.stopBits)
        silence = RTUFraming.frameSilence(baud: bus.baud, characterTime: characterTime)
        // Without timing emulation a pty delivers a frame in one piece, but a scheduler hiccup
        // can split it; 50 ms of quiet is then the end of a frame.
        staleAfter = bus.timing ? silence : max(silence, 0.05)
    }

    var events: Int16 {
        guard !isClosed else { return 0 }
        return Int16(POLLIN) | (output.isEmpty ? 0 : Int16(POLLOUT))
    }

    var deadline: Double? {
        var next = scheduled.first?.due
        if !input.isEmpty { next = min(next ?? .infinity, lastByteAt + staleAfter) }
        return next
    }

    func handle(revents: Int16, now: Double) {
        if revents & Int16(POLLNVAL) != 0 { close(); return }
        if revents & Int16(POLLIN) != 0 {
            let count = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                // Silence longer than t3.5 ends a frame: whatever came before is finished.
                if !input.isEmpty, now - lastByteAt > staleAfter { finishSilentFrame(now: now) }
                if input.isEmpty { firstByteAt = now }
                input.append(contentsOf: readBuffer[0..<count])
                lastByteAt = now
                processFrames(now: now)
            }
        }
        flush()
    }

    func handleTimers(now: Double) {
        if !input.isEmpty, now - lastByteAt >= staleAfter { finishSilentFrame(now: now) }
        while let first = scheduled.first, first.due <= now {
            output += first.bytes
            scheduled.removeFirst()
        }
        flush()
    }

    private func processFrames(now: Double) {
        while !input.isEmpty {
            switch RTUFraming.requestLength(input) {
            case .needMore, .unknown:
                return
            case .bytes(let length):
                guard length <= RTUFraming.maximumFrame else {
                    droppedFrames += 1
                    input.removeAll()
                    return
                }
                guard input.count >= length else { return }
                let frame = Array(input.prefix(length))
                input.removeFirst(length)
                handleFrame(frame, now: now)
                firstByteAt = now
            }
        }
    }

    /// The line went quiet: a frame of unknown length is complete, a short one is lost.
    private func finishSilentFrame(now: Double) {
        let frame = input
        input.removeAll()
        if case .unknown = RTUFraming.requestLength(frame), frame.count <= RTUFraming.maximumFrame {
            handleFrame(frame, now: now)
        } else {
            droppedFrames += 1
        }
    }

    private func handleFrame(_ frame: [UInt8], now: Double) {
        guard RTUFraming.hasValidCRC(frame) else {
            droppedFrames += 1
            return
        }
        // A new request on the bus: a slave that hasn't answered the last one keeps quiet now.
        scheduled.removeAll()
        let unit = frame[0]
        let pdu = Array(frame[1..<(frame.count - 2)])
        if unit == 0 {
            for machine in machinesByUnit.values where !machine.isOffline(now: now) { machine.handleBroadcast(pdu: pdu) }
            return
        }
        guard let machine = machinesByUnit[unit] else { return }
        let reply = machine.handle(pdu: pdu, unit: unit, now: now)
        guard case .respond(let response) = reply.action else { return }
        var out = RTUFraming.encode(unit: reply.unit, pdu: response)
        switch reply.mutation {
        case .garbled(let noise): out = Machine.garbledRTU(out, noise: noise)
        case .truncated: out = Array(out.prefix(max(1, out.count / 2)))
        case .none: break
        }
        var due = now + reply.delay
        if bus.timing {
            // The request occupied the line for its length in characters even if the pty
            // delivered it at once; the answer follows after t3.5 and takes its own length.
            let requestEnd = max(now, firstByteAt + Double(frame.count) * characterTime)
            let start = max(requestEnd + silence + reply.delay, busyUntil)
            due = start + Double(out.count) * characterTime
            busyUntil = due
        }
        if output.count > 65536 {
            // Nobody reads the line: a real slave's answers would be lost on the wire too.
            return
        }
        if due <= now, scheduled.isEmpty {
            output += out
        } else {
            scheduled.append((due, out))
        }
    }

    private func flush() {
        while !output.isEmpty, !isClosed {
            let written = output.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written > 0 {
                output.removeFirst(written)
            } else {
                // A full pty buffer (nobody reading): keep the bytes for the next POLLOUT.
                return
            }
        }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
        fd = -1
    }
}
