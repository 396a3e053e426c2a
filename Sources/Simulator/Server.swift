// Starts a scenario: binds every port and opens every serial line up front (so a port in use is
// an error before "ready", not a surprise later), then hands the descriptors to the event-loop
// thread and starts simulated time.

import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where a machine was found to listen, once started.
public struct ServedEndpoint: Sendable, Equatable {
    public var machine: String
    public var kind: String
    public var unit: UInt8
    /// TCP: host and the port actually bound (port 0 in a profile picks a free one).
    public var host: String?
    public var port: Int?
    /// RTU: the serial path (pty slave or device) and the symlink to it, if any.
    public var serialPath: String?
    public var link: String?
    public var lineSettings: String?

    public var text: String {
        if let host, let port { return "tcp \(host):\(port) unit \(unit)" }
        let path = link.map { "\($0) -> \(serialPath ?? "?")" } ?? serialPath ?? "?"
        return "rtu \(path) unit \(unit) (\(lineSettings ?? ""))"
    }
}

public final class SimulatorServer: Sendable {
    public let scenario: ScenarioDefinition
    public let simulation: Simulation
    private let controlPortRequest: Int?
    private let stopRequested = Atomic<Bool>(false)
    private let loopFinished = Atomic<Bool>(false)
    private let resources = Mutex(Resources())

    private struct Resources: Sendable {
        var started = false
        var wakeWrite: Int32 = -1
        var wakeRead: Int32 = -1
        var slaveFDs: [Int32] = []
        var links: [(link: String, target: String)] = []
        var endpoints: [ServedEndpoint] = []
        var controlPort: Int?
    }

    /// `controlPort` overrides the scenario's `control:` (nil keeps it; the interface runs only
    /// when one of them asks for it).
    public init(scenario: ScenarioDefinition, controlPort: Int? = nil) {
        self.scenario = scenario
        self.simulation = Simulation(scenario: scenario)
        self.controlPortRequest = controlPort ?? scenario.controlPort
    }

    public var endpoints: [ServedEndpoint] { resources.withLock { $0.endpoints } }
    /// The control interface's port on 127.0.0.1 once started, if it runs.
    public var controlPort: Int? { resources.withLock { $0.controlPort } }

    /// Raises the open-file limit to the hard limit (100 machines and their masters need more
    /// than 1024 descriptors on some systems).
    public static func raiseOpenFileLimit() { Posix.raiseOpenFileLimit() }

    /// Opens everything, starts the loop and the clock. Throws before anything runs if a port or
    /// serial line can't be had.
    @discardableResult
    public func start(onLag: (@Sendable (String) -> Void)? = nil) throws(SimulatorError) -> [ServedEndpoint] {
        var opened: [Int32] = []
        var links: [(link: String, target: String)] = []
        func cleanUp() {
            for fd in opened { close(fd) }
            for (link, target) in links { Posix.removeSymlink(link, ifPointingTo: target) }
        }

        // TCP: one listener per port; machines sharing a port are unit ids behind it.
        var groups: [(host: String, port: Int, machines: [Machine])] = []
        for machine in simulation.machines {
            guard case .tcp(let host, let port, _) = machine.definition.endpoint else { continue }
            if port != 0, let index = groups.firstIndex(where: { $0.port == port }) {
                groups[index].machines.append(machine)
            } else {
                groups.append((host, port, [machine]))
            }
        }
        var listeners: [(fd: Int32, host: String, port: Int, machines: [Machine])] = []
        var endpoints: [String: ServedEndpoint] = [:]
        do throws(SimulatorError) {
            for group in groups {
                let (fd, port) = try Posix.listenTCP(host: group.host, port: group.port)
                opened.append(fd)
                listeners.append((fd, group.host, port, group.machines))
                for machine in group.machines {
                    endpoints[machine.name] = ServedEndpoint(machine: machine.name, kind: machine.definition.kind,
                                                             unit: machine.definition.endpoint.unit, host: group.host, port: port)
                }
            }

            var serialLines: [(fd: Int32, bus: SerialBusDefinition, machines: [Machine])] = []
            var slaves: [Int32] = []
            for bus in scenario.serialBuses {
                let machines = simulation.machines.filter {
                    if case .rtu(let name, _) = $0.definition.endpoint { return name == bus.name }
                    return false
                }
                guard !machines.isEmpty else { continue }
                let fd: Int32, path: String
                if let device = bus.device {
                    fd = try Posix.openSerialDevice(bus, path: device)
                    path = device
                    opened.append(fd)
                } else {
                    let pty = try Posix.openPseudoTerminal(bus: bus.name)
                    opened += [pty.master, pty.slave]
                    slaves.append(pty.slave)
                    fd = pty.master
                    path = pty.path
                    if let link = bus.link {
                        try Posix.replaceSymlink(link, to: path, bus: bus.name)
                        links.append((link, path))
                    }
                }
                serialLines.append((fd, bus, machines))
                for machine in machines {
                    endpoints[machine.name] = ServedEndpoint(machine: machine.name, kind: machine.definition.kind,
                                                             unit: machine.definition.endpoint.unit, serialPath: path,
                                                             link: bus.link, lineSettings: bus.lineSettings)
                }
            }

            var control: (fd: Int32, port: Int)?
            if let port = controlPortRequest {
                // Loopback only, by design: the interface can take machines offline.
                control = try Posix.listenTCP(host: "127.0.0.1", port: port)
                if let control { opened.append(control.fd) }
            }

            var pipeFDs: [Int32] = [-1, -1]
            guard pipe(&pipeFDs) == 0 else { throw .invalidArgument("pipe() failed: \(Posix.errorText(errno))") }
            Posix.setNonBlocking(pipeFDs[0])
            Posix.setNonBlocking(pipeFDs[1])
            Posix.setCloseOnExec(pipeFDs[0])
            Posix.setCloseOnExec(pipeFDs[1])

            let ordered = simulation.machines.compactMap { endpoints[$0.name] }
            let api = ControlAPI(simulation: simulation,
                                 endpoints: Dictionary(uniqueKeysWithValues: ordered.map { ($0.machine, $0.text) }))
            resources.withLock {
                $0.started = true
                $0.wakeRead = pipeFDs[0]
                $0.wakeWrite = pipeFDs[1]
                $0.slaveFDs = slaves
                $0.links = links
                $0.endpoints = ordered
                $0.controlPort = control?.port
            }

            let wakeFD = pipeFDs[0]
            let listenerSpecs = listeners, serialSpecs = serialLines, controlSpec = control
            let thread = Thread { [self] in
                let loop = EventLoop(wakeFD: wakeFD)
                for listener in listenerSpecs {
                    loop.add(TCPListener(fd: listener.fd, host: listener.host, port: listener.port,
                                         machines: listener.machines, loop: loop))
                }
                for line in serialSpecs { loop.add(SerialLine(fd: line.fd, bus: line.bus, machines: line.machines)) }
                if let control = controlSpec { loop.add(ControlListener(fd: control.fd, api: api, loop: loop)) }
                loop.run { stopRequested.load(ordering: .acquiring) }
                loopFinished.store(true, ordering: .releasing)
            }
            thread.name = "uplink-sim.io"
            thread.stackSize = 1 << 20
            thread.start()
            simulation.start(onLag: onLag)
            return ordered
        } catch {
            cleanUp()
            throw error
        }
    }

    /// Stops the loop (closing every socket and line), the clock, and removes symlinks.
    public func stop() {
        simulation.stop()
        let (wasStarted, wake) = resources.withLock { ($0.started, $0.wakeWrite) }
        guard wasStarted, !stopRequested.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wake, &byte, 1)
        let deadline = MonotonicClock.now() + 5
        while !loopFinished.load(ordering: .acquiring), MonotonicClock.now() < deadline { usleep(2000) }
        resources.withLock {
            for fd in $0.slaveFDs { close(fd) }
            for (link, target) in $0.links { Posix.removeSymlink(link, ifPointingTo: target) }
            close($0.wakeRead)
            close($0.wakeWrite)
            $0.slaveFDs = []
            $0.links = []
        }
    }

    deinit {
        stop()
    }
}
