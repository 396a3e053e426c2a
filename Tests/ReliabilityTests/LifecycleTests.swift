// Issue 6, part 7: clean shutdown and restart. SIGTERM under load exits within 5 s without loss;
// SIGHUP with a broken config keeps the running one; the watchdog stops being fed when the agent
// hangs (the whole process stopped, or only its buffer thread stuck on a frozen disk), and a
// supervisor doing what systemd does (WatchdogSec=, Restart=always) restarts it without loss.
// systemd is not PID 1 on the test machine: the test plays its part on an AF_UNIX datagram socket
// given to the agent as $NOTIFY_SOCKET.

import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

extension Reliability {
    @Suite("7. Clean shutdown and restart", needsBroker) struct Lifecycle {
        @Test("SIGTERM while catching up a large backlog and polling 120 signals every 50 ms: exit 0 within 5 s, nothing lost across the restart",
              .timeLimit(.minutes(3)))
        func sigtermUnderLoad() async throws {
            let sandbox = Sandbox("sigterm")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            // The agent reaches the broker through a proxy that refuses it until the backlog is big.
            let proxy = try FaultProxy(upstreamPort: broker.port)
            sandbox.onCleanup("stop proxy") { proxy.stop() }
            proxy.set(.reset)
            let fleet = machines(4, registers: 30)
            _ = try Sim(sandbox, machines: fleet)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: proxy.url, interval: "50ms")
            let state = sandbox.path("state")
            let agent = try Agent(sandbox, config: config, stateDirectory: state)
            #expect(await agent.waitForLog("msg=ready"), "\(agent.output)")
            #expect(try await TestSupport.waitUntil(timeout: 90, interval: 0.5) { try agent.status().backlog.records >= 30_000 })
            let backlog = try agent.status().backlog.records
            // Under load: SIGTERM the moment it connects, while it publishes the backlog as fast as acks
            // come and keeps polling 120 signals every 50 ms.
            proxy.set(.pass)
            #expect(await TestSupport.waitUntil(timeout: 30, interval: 0.01) { agent.output.contains("connected to the broker") })
            let signalled = Date()
            agent.signal(SIGTERM)
            let receivedAtSignal = subscriber.ledger.seqs.count
            let exit = agent.process.waitForExit(timeout: 5)
            let took = Date().timeIntervalSince(signalled)
            #expect(exit == 0, "no clean exit within 5 s of SIGTERM (\(took) s): \(agent.output.suffix(1500))")
            if exit == nil { agent.kill9() }
            #expect(receivedAtSignal < Int(backlog), "the backlog was gone before SIGTERM")
            #expect(agent.output.contains("msg=stopped"))
            let stopped = try agent.status()
            #expect(stopped.dropped.total == 0, "\(stopped.text)")

            let second = try Agent(sandbox, config: config, stateDirectory: state)
            #expect(await second.waitForLog("connected to the broker"), "\(second.output)")
            let target = try second.status().nextSeq
            _ = await subscriber.waitForAll(below: target, timeout: 90)
            #expect(second.terminate() == 0, "\(second.output)")
            let final = try second.status()
            #expect(final.backlog.records == 0 && final.dropped.total == 0, "\(final.text)")
            let ledger = await subscriber.waitForAll(below: final.nextSeq)
            expectDelivered(ledger, nextSeq: final.nextSeq)
            report("SIGTERM under load: \(backlog) records in the backlog when the broker became reachable, \(receivedAtSignal) delivered when SIGTERM was sent; exit \(exit.map(String.init) ?? "none") after \(String(format: "%.2f", took)) s; \(stopped.backlog.records) records left on disk, sent by the next start; \(final.nextSeq - 1) records all delivered, \(ledger.repeatedCount) repeats")
        }

        @Test("SIGHUP with a broken config (syntax error, missing file, empty file, invalid value) keeps the old one running; a valid one is applied",
              .timeLimit(.minutes(2)))
        func reloadWithBrokenConfigs() async throws {
            let sandbox = Sandbox("sighup")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(1)
            _ = try Sim(sandbox, machines: fleet)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url)
            let good = try String(contentsOf: config, encoding: .utf8)
            let agent = try Agent(sandbox, config: config, stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            let count = { subscriber.ledger.messages.count }
            #expect(await TestSupport.waitUntil(timeout: 20) { count() >= 5 })

            let broken: [(String, () throws -> Void)] = [
                ("a YAML syntax error", { try (good + "devices: [ {\n").write(to: config, atomically: true, encoding: .utf8) }),
                ("a missing file", { try FileManager.default.removeItem(at: config) }),
                ("an empty file", { try "".write(to: config, atomically: true, encoding: .utf8) }),
                ("an invalid value", { try good.replacingOccurrences(of: "interval: 100ms", with: "interval: 100").write(to: config, atomically: true, encoding: .utf8) }),
                ("binary garbage", { try Data((0..<512).map { UInt8(truncatingIfNeeded: $0 &* 97) }).write(to: config) }),
            ]
            var refusals: [String] = []
            for (index, (what, breakIt)) in broken.enumerated() {
                try breakIt()
                agent.signal(SIGHUP)
                #expect(await agent.waitForLog("reload refused", count: index + 1), "\(what): \(agent.output.suffix(1500))")
                let after = count()
                #expect(await TestSupport.waitUntil(timeout: 20) { count() >= after + 5 }, "\(what): polling stopped")
                #expect(agent.isRunning, "\(what)")
                #expect(await TestSupport.waitUntil(timeout: 10, interval: 0.5) { (try? agent.status().broker?.connected) == true }, "\(what)")
                refusals.append(agent.logLines(containing: "reload refused").last.map(String.init) ?? "")
            }
            // Valid again, with a change: applied.
            try good.replacingOccurrences(of: "name: r1,", with: "name: pressure,").write(to: config, atomically: true, encoding: .utf8)
            agent.signal(SIGHUP)
            #expect(await agent.waitForLog("msg=reloaded"), "\(agent.output.suffix(1500))")
            #expect(await TestSupport.waitUntil(timeout: 20) {
                subscriber.ledger.messages.contains { $0.points.contains { $0.signal == "pressure" } }
            })
            #expect(agent.terminate() == 0)
            let status = try agent.status()
            expectDelivered(await subscriber.waitForAll(below: status.nextSeq), nextSeq: status.nextSeq)
            for line in refusals { report("SIGHUP refused: \(line.split(separator: " ").dropFirst().joined(separator: " ").prefix(300))") }
        }

        @Test("watchdog: READY=1 then WATCHDOG=1 every half period; a stopped agent stops pinging, is killed and restarted by the supervisor, and loses nothing",
              .timeLimit(.minutes(2)))
        func watchdogStoppedProcess() async throws {
            let sandbox = Sandbox("watchdog")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(2)
            _ = try Sim(sandbox, machines: fleet)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url)
            let notify = try NotifySocket(path: sandbox.path("notify").path)
            sandbox.onCleanup("close notify socket") { notify.stop() }
            let environment = ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"]
            let state = sandbox.path("state")
            let agent = try Agent(sandbox, config: config, stateDirectory: state, environment: environment)
            #expect(await TestSupport.waitUntil(timeout: 20) { notify.count("READY=1") == 1 }, "\(notify.messages)")
            #expect(await TestSupport.waitUntil(timeout: 20) { notify.count("WATCHDOG=1") >= 4 }, "\(notify.messages)")

            // Hung: SIGSTOP. No ping arrives while it is stopped.
            agent.signal(SIGSTOP)
            await pause(0.3)
            let pingsAtStop = notify.count("WATCHDOG=1")
            let supervisor = Supervisor(notify: notify, watchdogSeconds: 1)
            #expect(await supervisor.waitForTimeout(limit: 10), "pings went on while stopped")
            #expect(notify.count("WATCHDOG=1") == pingsAtStop)
            // What systemd does on a watchdog timeout: SIGABRT (WatchdogSignal), then SIGKILL, then restart.
            supervisor.kill(agent.process)
            #expect(!agent.isRunning)

            let restarted = try Agent(sandbox, config: config, stateDirectory: state, environment: environment)
            #expect(await TestSupport.waitUntil(timeout: 20) { notify.count("READY=1") == 2 }, "\(notify.messages.suffix(5))")
            #expect(await TestSupport.waitUntil(timeout: 20) { notify.count("WATCHDOG=1") >= pingsAtStop + 3 })
            #expect(await restarted.waitForLog("connected to the broker"), "\(restarted.output)")
            await pause(1)
            #expect(restarted.terminate() == 0)
            #expect(notify.count("STOPPING=1") >= 1)
            let status = try restarted.status()
            expectDelivered(await subscriber.waitForAll(below: status.nextSeq), nextSeq: status.nextSeq)
            report("watchdog (SIGSTOP): \(pingsAtStop) pings before the stop, none for \(String(format: "%.1f", supervisor.silentFor)) s after; killed and restarted: READY=1 again, pings resumed; \(status.nextSeq - 1) records all delivered")
        }

        @Test("watchdog: a buffer thread stuck on a frozen disk stops the pings while the process still runs; killed, thawed, restarted: nothing committed is lost",
              .timeLimit(.minutes(2)), .enabled(if: Facilities.loopExt4, "needs root, loop devices, mkfs.ext4 and fsfreeze"))
        func watchdogHungBufferThread() async throws {
            let sandbox = Sandbox("frozen")
            defer { sandbox.cleanUp() }
            let disk = try Ext4Disk(sandbox, name: "data")
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(2)
            let sim = try Sim(sandbox, machines: fleet, control: true)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url)
            let notify = try NotifySocket(path: sandbox.path("notify").path)
            sandbox.onCleanup("close notify socket") { notify.stop() }
            let environment = ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"]
            let state = disk.mountPoint.appendingPathComponent("state")
            let agent = try Agent(sandbox, config: config, stateDirectory: state, environment: environment)
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { notify.count("WATCHDOG=1") >= 4 })

            try disk.freeze()
            let supervisor = Supervisor(notify: notify, watchdogSeconds: 1)
            let timedOut = await supervisor.waitForTimeout(limit: 15)
            #expect(timedOut, "the watchdog was still fed with the buffer thread stuck: \(notify.messages.suffix(5))")
            #expect(agent.isRunning, "the agent exited by itself")
            // The process is alive and its pollers still run; only the buffer (and so the watchdog) is stuck.
            let requests = try sim.requests(of: "m1")
            await pause(1)
            #expect(try sim.requests(of: "m1") > requests, "polling stopped too")
            supervisor.kill(agent.process, thaw: { disk.unfreeze() })
            #expect(!agent.isRunning)

            let restarted = try Agent(sandbox, config: config, stateDirectory: state, environment: environment)
            #expect(await restarted.waitForLog("connected to the broker"), "\(restarted.output)")
            #expect(!restarted.output.contains("damaged"))
            #expect(await TestSupport.waitUntil(timeout: 20) { notify.count("READY=1") == 2 })
            await pause(1)
            #expect(restarted.terminate() == 0)
            let status = try restarted.status()
            expectDelivered(await subscriber.waitForAll(below: status.nextSeq), nextSeq: status.nextSeq)
            report("watchdog (frozen disk): pings stopped for \(String(format: "%.1f", supervisor.silentFor)) s while the process ran and polled; killed after thaw-pending SIGKILL, restarted cleanly; \(status.nextSeq - 1) records all delivered")
        }
    }
}

/// The part of systemd the tests play: watch the WATCHDOG=1 pings, and on a timeout send
/// WatchdogSignal (SIGABRT) and then SIGKILL, as `WatchdogSec=` with `Restart=always` does.
final class Supervisor {
    let notify: NotifySocket
    let watchdogSeconds: Double
    private(set) var silentFor = 0.0

    init(notify: NotifySocket, watchdogSeconds: Double) {
        self.notify = notify
        self.watchdogSeconds = watchdogSeconds
    }

    /// Waits until no ping arrived for three watchdog periods (systemd acts after one).
    func waitForTimeout(limit: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(limit)
        while Date() < deadline {
            let last = notify.messages.last { $0.text.contains("WATCHDOG=1") }?.at ?? .distantPast
            silentFor = Date().timeIntervalSince(last)
            if silentFor > 3 * watchdogSeconds { return true }
            await pause(0.1)
        }
        return false
    }

    func kill(_ child: ChildProcess, thaw: () -> Void = {}) {
        child.signal(SIGABRT)
        usleep(500_000)
        child.signal(SIGKILL)
        // A thread blocked on a frozen file system dies only once the file system thaws.
        thaw()
        child.signal(SIGCONT)
        child.waitForExit(timeout: 15)
    }
}
