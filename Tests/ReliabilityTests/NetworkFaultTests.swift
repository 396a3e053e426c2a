// Issue 6, part 2: network and broker faults. The broker stopped and restarted repeatedly; a "broker"
// that accepts TCP and never answers CONNECT; one that drops connections mid-flight; latency and
// packet loss on a veth link into a network namespace; a broker name that does not resolve. Through
// all of it the agent keeps polling and buffering, reconnects with backoff, and in the end the
// subscriber has every seq.

import Foundation
import Testing
import TestSupport

extension Reliability {
    @Suite("2. Network and broker faults", needsBroker) struct NetworkFaults {
        @Test("the broker stopped and restarted six times: polling and buffering go on through every outage, every seq arrives",
              .timeLimit(.minutes(3)))
        func brokerRestartedRepeatedly() async throws {
            let sandbox = Sandbox("restarts")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(2)
            _ = try Sim(sandbox, machines: fleet)
            let agent = try Agent(sandbox, config: try writeAgentConfig(sandbox, machines: fleet, broker: broker.url),
                                  stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            let cycles = Environment.soak ? 30 : 6
            for cycle in 1...cycles {
                broker.stop()
                #expect(await agent.waitForLog("lost the broker", count: cycle), "cycle \(cycle): \(agent.output)")
                let before = try agent.status()
                // Still polling and committing while the broker is away.
                #expect(try await TestSupport.waitUntil(timeout: 20, interval: 0.3) {
                    let now = try agent.status()
                    return now.nextSeq >= before.nextSeq + 40 && now.backlog.records > before.backlog.records
                }, "cycle \(cycle): nothing buffered during the outage")
                try broker.start()
                #expect(await agent.waitForLog("connected to the broker", count: cycle + 1), "cycle \(cycle): \(agent.output)")
                subscriber.ensureRunning()
                await pause(1)
            }
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            #expect(status.backlog.records == 0 && status.dropped.total == 0, "\(status.text)")
            #expect(status.devices.allSatisfy { $0.state == "good" }, "\(status.text)")
            let ledger = await subscriber.waitForAll(below: status.nextSeq)
            expectDelivered(ledger, nextSeq: status.nextSeq)
            if !ledger.orderViolations.isEmpty {
                let publisherLines = agent.logLines(containing: "msg=publisher") + agent.logLines(containing: "libmosquitto")
                report("broker restarts, order violation; publisher/libmosquitto log lines: \(publisherLines.prefix(10).joined(separator: " | "))")
            }
            report("broker restarts: \(cycles) outages, \(status.nextSeq - 1) records, all delivered, \(ledger.repeatedCount) repeats; 'lost the broker' logged \(agent.logLines(containing: "lost the broker").count) times")
        }

        @Test("through a proxy: connections reset (backoff), CONNECT never answered (black hole), connections cut mid-flight; every seq arrives",
              .timeLimit(.minutes(3)))
        func refusedSilentAndCutConnections() async throws {
            let sandbox = Sandbox("proxy")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let proxy = try FaultProxy(upstreamPort: broker.port)
            sandbox.onCleanup("stop proxy") { proxy.stop() }
            let fleet = machines(2, registers: 10)
            _ = try Sim(sandbox, machines: fleet)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: proxy.url, reconnectMax: "2s")
            let agent = try Agent(sandbox, config: config, stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { subscriber.ledger.messages.count >= 10 })

            // Reset: every attempt is accepted and closed at once. Backoff doubles from 200 ms to 2 s:
            // about 7 attempts in 8 s; a client without backoff would make 40.
            proxy.set(.reset)
            await pause(8)
            let resets = proxy.counts.acceptedByMode["reset"] ?? 0
            #expect((3...14).contains(resets), "\(resets) connection attempts in 8 s of resets")
            let refusals = agent.logLines(containing: "cannot connect to the broker")
            #expect((1...2).contains(refusals.count), "one line per distinct reason, not per retry: \(refusals)")

            // Black hole: TCP accepted, CONNECT never answered. The attempt times out (10 s), is logged,
            // and retried; records keep buffering.
            let beforeHole = try agent.status()
            proxy.set(.blackhole)
            await pause(14)
            let inHole = try agent.status()
            #expect(inHole.nextSeq > beforeHole.nextSeq + 100 && inHole.backlog.records > beforeHole.backlog.records, "\(inHole.text)")
            #expect(inHole.broker?.connected == false, "\(inHole.text)")
            #expect(inHole.devices.allSatisfy { $0.state == "good" }, "\(inHole.text)")
            let timeoutLines = agent.output.split(separator: "\n").filter { $0.contains("cannot connect") && $0.lowercased().contains("time") }
            #expect(!timeoutLines.isEmpty, "no connect timeout logged: \(agent.output.suffix(1500))")
            #expect((proxy.counts.acceptedByMode["blackhole"] ?? 0) >= 1)

            // Cut mid-flight: relayed, then closed after 2-30 KB, while PUBLISHes and PUBACKs are in flight.
            proxy.set(.cut(2_000...30_000))
            #expect(await TestSupport.waitUntil(timeout: 40, interval: 0.5) { proxy.counts.cut >= 4 }, "cuts: \(proxy.counts.cut)")
            let cuts = proxy.counts.cut

            proxy.set(.pass)
            #expect(await TestSupport.waitUntil(timeout: 30, interval: 0.3) { (try? agent.status().broker?.connected) == true })
            let target = try agent.status().nextSeq
            _ = await subscriber.waitForAll(below: target, timeout: 90)
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            #expect(status.backlog.records == 0 && status.dropped.total == 0, "\(status.text)")
            let ledger = await subscriber.waitForAll(below: status.nextSeq)
            expectDelivered(ledger, nextSeq: status.nextSeq)
            report("proxy: \(resets) attempts in 8 s of resets (backoff 200ms..2s); black hole 14 s: \(timeoutLines.count) timeout line(s) '\(timeoutLines.first.map(String.init) ?? "")'; \(cuts) connections cut mid-flight; \(status.nextSeq - 1) records all delivered, \(ledger.repeatedCount) repeats")
        }

        @Test("latency and packet loss on a veth link into a network namespace (netem, else a tbf bottleneck that drops): data keeps flowing, every seq arrives",
              .timeLimit(.minutes(3)),
              .enabled(if: Facilities.netns && (Facilities.netem || Facilities.tbf), "needs root, ip netns, veth and tc (netem or tbf)"))
        func lossyLink() async throws {
            let sandbox = Sandbox("netns")
            defer { sandbox.cleanUp() }
            let namespace = try NetworkNamespace(sandbox)
            let broker = try Broker(sandbox, namespace: namespace)
            let subscriber = try await Subscriber(sandbox, broker: broker, insideNamespace: namespace)
            let fleet = machines(2, registers: 30)
            _ = try Sim(sandbox, machines: fleet)
            let agent = try Agent(sandbox, config: try writeAgentConfig(sandbox, machines: fleet, broker: broker.url),
                                  stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { subscriber.ledger.messages.count >= 10 })

            let shaping: NetworkNamespace.Shaping = Facilities.netem ? .netem(delayMs: 150, lossPercent: 10) : .tbf(rateKbit: 64, latencyMs: 40)
            report("lossy link: \(shaping) on both directions of \(namespace.hostInterface) (\(Facilities.summary))")
            try namespace.shape(shaping)
            let receivedBefore = subscriber.ledger.seqs.count
            await pause(Environment.soak ? 120 : 12)
            let receivedDuring = subscriber.ledger.seqs.count - receivedBefore
            let dropped = namespace.droppedPackets()
            let during = try agent.status()
            namespace.unshape()

            #expect(dropped > 0, "the link dropped no packets")
            #expect(receivedDuring > 0, "nothing arrived over the lossy link")
            #expect(during.devices.allSatisfy { $0.state == "good" }, "\(during.text)")
            let target = try agent.status().nextSeq
            _ = await subscriber.waitForAll(below: target, timeout: 90)
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            #expect(status.backlog.records == 0 && status.dropped.total == 0, "\(status.text)")
            let ledger = await subscriber.waitForAll(below: status.nextSeq)
            expectDelivered(ledger, nextSeq: status.nextSeq)
            report("lossy link: \(dropped) packets dropped by the link, \(receivedDuring) records arrived during the 12 s of loss (backlog then \(during.backlog.records)), \(status.nextSeq - 1) records all delivered after, \(ledger.repeatedCount) repeats; disconnects logged: \(agent.logLines(containing: "lost the broker").count)")
        }

        @Test("a broker name that does not resolve: logged once, polling and buffering go on; once it resolves (the namespace's /etc/hosts), every seq arrives",
              .timeLimit(.minutes(2)),
              .enabled(if: Facilities.netns, "needs root and ip netns (for a private /etc/hosts)"))
        func unresolvableBrokerName() async throws {
            let sandbox = Sandbox("dns")
            defer { sandbox.cleanUp() }
            let namespace = try NetworkNamespace(sandbox)
            // Name resolution inside the namespace: its own hosts file (no entry yet) and a resolver
            // that answers nothing, so the lookup fails at once instead of waiting for the host's DNS.
            try FileManager.default.createDirectory(at: namespace.etcFile(""), withIntermediateDirectories: true)
            try "127.0.0.1 localhost\n".write(to: namespace.etcFile("hosts"), atomically: false, encoding: .utf8)
            try "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n".write(to: namespace.etcFile("resolv.conf"), atomically: false, encoding: .utf8)
            let broker = try Broker(sandbox, namespace: namespace)
            let subscriber = try await Subscriber(sandbox, broker: broker, insideNamespace: namespace)
            let fleet = machines(2)
            _ = try Sim(sandbox, machines: fleet, namespace: namespace)
            let name = "broker.uplink.invalid"
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: "mqtt://\(name):\(broker.port)")
            let agent = try Agent(sandbox, config: config, stateDirectory: sandbox.path("state"), namespace: namespace)
            #expect(await agent.waitForLog("cannot connect to the broker"), "\(agent.output)")
            await pause(6)
            let waiting = try agent.status()
            #expect(waiting.backlog.records > 100, "\(waiting.text)")
            #expect(waiting.broker?.connected == false)
            #expect(waiting.devices.count == 2 && waiting.devices.allSatisfy { $0.state == "good" }, "\(waiting.text)")
            let failures = agent.logLines(containing: "cannot connect to the broker")
            #expect(failures.count == 1, "one line, not one per retry: \(failures)")
            #expect(failures.first?.contains("resolve") == true, "\(failures)")

            // The name appears (DNS fixed): written in place, so the bind-mounted file sees it.
            let hosts = try FileHandle(forWritingTo: namespace.etcFile("hosts"))
            hosts.seekToEndOfFile()
            hosts.write(Data("127.0.0.1 \(name)\n".utf8))
            try hosts.close()
            #expect(await agent.waitForLog("connected to the broker", timeout: 30), "\(agent.output)")
            let target = try agent.status().nextSeq
            _ = await subscriber.waitForAll(below: target, timeout: 60)
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            #expect(status.backlog.records == 0 && status.dropped.total == 0, "\(status.text)")
            let ledger = await subscriber.waitForAll(below: status.nextSeq)
            expectDelivered(ledger, nextSeq: status.nextSeq)
            report("DNS: '\(failures.first.map(String.init) ?? "")'; \(waiting.backlog.records) records buffered while unresolvable; all \(status.nextSeq - 1) delivered once it resolved")
        }
    }
}
