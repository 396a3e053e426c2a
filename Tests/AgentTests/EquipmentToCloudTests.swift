// Issue 4, "Equipment-on-cloud path": the real binaries end to end. uplink-sim serves machines,
// `uplink run` polls them, buffers every record on disk and publishes to a real mosquitto, and a
// persistent mosquitto_sub session checks what arrived: every seq, in order, nothing lost across
// broker outages, crashes, full buffers, TLS and credential problems, and reloads.
//
// Every wait is on a count or a condition with a generous timeout (no timing assertions), and the
// tests run one at a time: each starts four processes and the VM has two cores.

import Foundation
import Testing
import TestSupport

@Suite("Equipment-on-cloud path (uplink-sim -> uplink run -> mosquitto)", .serialized,
       .enabled(if: Mosquitto.isAvailable, "needs mosquitto, mosquitto_sub and mosquitto_pub (PITFALLS G19)"))
struct EquipmentToCloudTests {
    // MARK: 1. The happy path

    @Test("every seq arrives once in order per device; SIGTERM exits 0 with an empty backlog; retained status online, then offline")
    func deliversEveryRecordAndStopsCleanly() async throws {
        let scene = try Scene(machines: 2)
        defer { scene.stop() }
        let subscriber = try await scene.subscribe()
        defer { subscriber.stop() }
        let agent = try scene.startAgent(try scene.config())
        defer { agent.stop() }
        #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")

        var retained: String?
        let online = await TestSupport.waitUntil(timeout: 15, interval: 0.3) {
            retained = try? scene.broker.retainedMessage(topic: scene.statusTopic, timeout: 2)
            return statusState(retained) == "online"
        }
        #expect(online, "retained status while running: \(retained ?? "none")")

        let enough = await TestSupport.waitUntil(timeout: 30) {
            let devices = DeliveryCheck(received: subscriber.messages).messages.map(\.device)
            return devices.filter { $0 == "m1" }.count >= 15 && devices.filter { $0 == "m2" }.count >= 15
        }
        #expect(enough, "data messages: \(DeliveryCheck(received: subscriber.messages).messages.count)")

        #expect(agent.terminate(timeout: 5) == 0, "\(agent.output)")
        let final = try agent.status()
        #expect(final.backlog.records == 0, "\(final.text)")
        #expect(final.dropped.total == 0, "\(final.text)")
        #expect(!final.running)
        #expect(final.broker?.connected == false, "a stopped agent's status says connected: \(final.text)")
        #expect(final.nextSeq > 60, "\(final.text)")

        let check = try await waitForCompleteDelivery(subscriber, nextSeq: final.nextSeq)
        expectCompleteAndOrdered(check, nextSeq: final.nextSeq, devices: ["m1", "m2"])
        // The payload and topic format the platform relies on.
        let misaddressed = check.messages.filter { $0.topic != "uplink/s1/\($0.device)/data" || $0.agent != "gw" || $0.site != "s1" }
        #expect(misaddressed.isEmpty, "\(misaddressed.prefix(2))")
        let malformed = check.messages.filter { message in
            Set(message.points.map(\.signal)) != ["r0", "r1", "r2"] || !message.points.allSatisfy { $0.quality == "good" && $0.ts == message.ts }
        }
        #expect(malformed.isEmpty, "\(malformed.prefix(2))")
        #expect(check.messages.contains { $0.points.contains { $0.signal == "r2" && $0.value == "2" } })

        retained = try scene.broker.retainedMessage(topic: scene.statusTopic, timeout: 5)
        #expect(statusState(retained) == "offline", "retained status after SIGTERM: \(retained ?? "none")")
        let statusFlow = subscriber.messages.filter { $0.topic == scene.statusTopic }.compactMap { statusState($0.payload) }
        #expect(statusFlow.first == "online" && statusFlow.last == "offline", "\(statusFlow)")
    }

    // MARK: 2. Broker outage

    @Test("a 20 s broker outage loses nothing: all seqs arrive in order, waiting records marked late, loss and reconnect logged")
    func brokerOutageLosesNothing() async throws {
        let scene = try Scene(machines: 2)
        defer { scene.stop() }
        let subscriber = try await scene.subscribe()
        defer { subscriber.stop() }
        let lateAfterMs: Int64 = 3000
        let agent = try scene.startAgent(try scene.config(buffer: ["late_after: 3s"]))
        defer { agent.stop() }
        #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
        #expect(await TestSupport.waitUntil(timeout: 30) { DeliveryCheck(received: subscriber.messages).messages.count >= 10 })

        scene.broker.stop()
        #expect(await agent.waitForLog("lost the broker"), "\(agent.output)")
        let lossSeenAt = TestSupport.nowMs
        try await Task.sleep(for: .seconds(20))
        let duringOutage = try agent.status()
        #expect(duringOutage.backlog.records > 0, "\(duringOutage.text)")
        let restartedAt = TestSupport.nowMs
        try scene.broker.start()

        #expect(await agent.waitForLog("connected to the broker", count: 2, timeout: 30), "\(agent.output)")
        let target = try agent.status().nextSeq
        let caughtUp = try await waitForCompleteDelivery(subscriber, nextSeq: target, timeout: 60)
        #expect(caughtUp.isComplete(nextSeq: target), "\(caughtUp) of \(target - 1)")
        let caughtUpAt = TestSupport.nowMs
        try await Task.sleep(for: .seconds(2))

        #expect(agent.terminate(timeout: 5) == 0, "\(agent.output)")
        let final = try agent.status()
        #expect(final.backlog.records == 0 && final.dropped.total == 0, "\(final.text)")
        #expect(final.nextSeq > duringOutage.nextSeq)
        let check = try await waitForCompleteDelivery(subscriber, nextSeq: final.nextSeq)
        expectCompleteAndOrdered(check, nextSeq: final.nextSeq, devices: ["m1", "m2"])

        // Logged: the loss, one line for the refused reconnects (not one per retry), the reconnect.
        #expect(agent.logLines(containing: "lost the broker").count == 1)
        let refusals = agent.logLines(containing: "cannot connect to the broker")
        #expect((1...2).contains(refusals.count), "\(refusals)")
        #expect(refusals.first?.contains("Connection refused") == true, "\(refusals)")

        // Polled during the outage and sent after it (> late_after later): late. Polled once the
        // backlog was gone: on time.
        let waited = check.messages.filter { $0.ts > lossSeenAt + 1000 && $0.ts < restartedAt - lateAfterMs - 1000 }
        #expect(waited.count >= 20, "messages polled during the outage: \(waited.count)")
        #expect(waited.allSatisfy { $0.late }, "not late: \(waited.filter { !$0.late }.map(\.seqs).prefix(5))")
        let fresh = check.firstOccurrences.filter { $0.ts > caughtUpAt + 500 }
        #expect(!fresh.isEmpty)
        #expect(fresh.allSatisfy { !$0.late }, "late after catching up: \(fresh.filter(\.late).map(\.seqs).prefix(5))")
    }

    // MARK: 3. Crash during an outage

    @Test("kill -9 of the agent during a broker outage, restart on the same state dir: everything still arrives")
    func crashDuringOutageLosesNothing() async throws {
        let scene = try Scene(machines: 2)
        defer { scene.stop() }
        let subscriber = try await scene.subscribe()
        defer { subscriber.stop() }
        let config = try scene.config(buffer: ["late_after: 3s"])
        let first = try scene.startAgent(config)
        defer { first.stop() }
        #expect(await first.waitForLog("connected to the broker"), "\(first.output)")
        #expect(await TestSupport.waitUntil(timeout: 30) { DeliveryCheck(received: subscriber.messages).messages.count >= 10 })

        scene.broker.stop()
        #expect(await first.waitForLog("lost the broker"), "\(first.output)")
        let lossSeenAt = TestSupport.nowMs
        try await Task.sleep(for: .seconds(3))
        let beforeKill = try first.status()
        #expect(beforeKill.backlog.records > 0, "\(beforeKill.text)")
        first.kill9()
        let killedAt = TestSupport.nowMs
        #expect(first.process.process.terminationReason == .uncaughtSignal)
        #expect(!first.output.contains("msg=stopped"))

        let second = try scene.startAgent(config)
        defer { second.stop() }
        #expect(await second.waitForLog("cannot connect to the broker"), "\(second.output)")
        try await Task.sleep(for: .seconds(2))
        try scene.broker.start()
        #expect(await second.waitForLog("connected to the broker", timeout: 30), "\(second.output)")

        let target = try second.status().nextSeq
        #expect(target > beforeKill.nextSeq)
        _ = try await waitForCompleteDelivery(subscriber, nextSeq: target, timeout: 60)
        try await Task.sleep(for: .seconds(1))
        #expect(second.terminate(timeout: 5) == 0, "\(second.output)")
        let final = try second.status()
        #expect(final.backlog.records == 0 && final.dropped.total == 0, "\(final.text)")
        let check = try await waitForCompleteDelivery(subscriber, nextSeq: final.nextSeq)
        expectCompleteAndOrdered(check, nextSeq: final.nextSeq, devices: ["m1", "m2"])

        // What the killed agent had buffered was sent by the new one, replayed: marked late.
        let replayed = check.messages.filter { $0.ts > lossSeenAt + 1000 && $0.ts < killedAt - 500 }
        #expect(replayed.count >= 10, "messages polled between the loss and the kill: \(replayed.count)")
        #expect(replayed.allSatisfy { $0.late }, "not late: \(replayed.filter { !$0.late }.map(\.seqs).prefix(5))")
    }

    // MARK: 4. Full buffer

    @Test("a full buffer drops the oldest records, counts and logs them, keeps polling; received + dropped = every seq")
    func fullBufferDropsOldestAndAccountsForEverything() async throws {
        let scene = try Scene(machines: 1, registers: 120)
        defer { scene.stop() }
        let subscriber = try await scene.subscribe()
        defer { subscriber.stop() }
        scene.broker.stop()
        let agent = try scene.startAgent(try scene.config(interval: "50ms", buffer: ["max_size: 1MB"]))
        defer { agent.stop() }
        #expect(await agent.waitForLog("cannot connect to the broker"), "\(agent.output)")

        var status = try agent.status()
        let dropped = try await TestSupport.waitUntil(timeout: 120, interval: 0.5) {
            status = try agent.status()
            return status.dropped.overflow > 0
        }
        try #require(dropped, "no overflow drop: \(status.text)")
        #expect(await agent.waitForLog("buffer dropped records"), "\(agent.output.suffix(2000))")
        // Still polling while full: the devices stay good and records keep coming (and dropping).
        let earlier = try agent.status()
        #expect(try await TestSupport.waitUntil(timeout: 30, interval: 0.5) {
            let later = try agent.status()
            return later.nextSeq > earlier.nextSeq + 500 && later.dropped.overflow > earlier.dropped.overflow
        })
        let later = try agent.status()
        #expect(!later.devices.isEmpty && later.devices.allSatisfy { $0.state == "good" }, "\(later.text)")
        #expect(later.backlog.bytes <= 1 << 20, "\(later.text)")
        #expect(later.dropped.total == later.dropped.overflow)

        // Until the broker is back nothing is in flight, so every drop so far took the oldest records.
        let droppedWhileDown = try agent.status().dropped.total
        try scene.broker.start()
        #expect(await agent.waitForLog("connected to the broker", timeout: 30), "\(agent.output.suffix(2000))")
        // Caught up once the newest record known now has arrived.
        let newest = try agent.status().nextSeq - 1
        #expect(try await TestSupport.waitUntil(timeout: 90, interval: 0.3) {
            try subscriber.ensureRunning()
            return DeliveryCheck(received: subscriber.messages).seqs.contains(newest)
        })
        #expect(agent.terminate(timeout: 5) == 0, "\(agent.output.suffix(2000))")
        let final = try agent.status()
        #expect(final.backlog.records == 0, "\(final.text)")

        // Wait for the last messages, then account: every seq was either received or dropped.
        var check = DeliveryCheck(received: subscriber.messages)
        _ = await TestSupport.waitUntil(timeout: 30, interval: 0.3) {
            check = DeliveryCheck(received: subscriber.messages)
            return UInt64(check.missing(in: 1...(final.nextSeq - 1)).count) == final.dropped.total
        }
        let missing = check.missing(in: 1...(final.nextSeq - 1))
        #expect(UInt64(missing.count) == final.dropped.total, "missing \(missing.count), dropped \(final.text)")
        #expect(final.dropped.total == final.dropped.overflow)
        // drop_oldest: while nothing could be sent the drops took exactly the oldest seqs, 1...k. (Once
        // connected, the oldest records are in flight and the policy drops the oldest of the rest.)
        let oldestRun = missing.enumerated().prefix { UInt64($0.offset + 1) == $0.element }.count
        #expect(UInt64(oldestRun) >= droppedWhileDown && droppedWhileDown > 0, "dropped seqs are not the oldest: missing \(DeliveryCheck.rangesText(missing)); \(check); \(final.text)")
        #expect(check.seqs.allSatisfy { $0 < final.nextSeq })
        #expect(check.orderViolations.isEmpty, "\(check.orderViolations.prefix(5))")
        #expect(check.inconsistentRepeats.isEmpty, "\(check.inconsistentRepeats.prefix(5))")
    }

    // MARK: 5. TLS

    @Test("TLS: with the right CA the agent delivers over mqtts; with a wrong CA it logs a certificate verification failure, buffers, and still exits 0",
          .enabled(if: TestCertificates.isAvailable, "needs openssl"))
    func tlsVerifiesTheBroker() async throws {
        let authority = TestSupport.temporaryDirectory("uplink-e2e-ca")
        defer { try? FileManager.default.removeItem(at: authority) }
        let certificates = try TestCertificates(directory: authority)
        let scene = try Scene(machines: 1, certificates: certificates)
        defer { scene.stop() }
        let tlsURL = try #require(scene.broker.tlsURL)
        let subscriber = try await scene.subscribe()
        defer { subscriber.stop() }

        let good = try scene.startAgent(try scene.config(broker: tlsURL, mqtt: ["tls: { ca_file: \(certificates.caFile) }"]))
        defer { good.stop() }
        #expect(await good.waitForLog("connected to the broker"), "\(good.output)")
        #expect(await TestSupport.waitUntil(timeout: 30) { DeliveryCheck(received: subscriber.messages).messages.count >= 10 })
        #expect(good.terminate(timeout: 5) == 0, "\(good.output)")
        let goodStatus = try good.status()
        #expect(goodStatus.broker?.url.hasPrefix("mqtts://") == true, "\(goodStatus.text)")
        #expect(goodStatus.backlog.records == 0, "\(goodStatus.text)")
        let check = try await waitForCompleteDelivery(subscriber, nextSeq: goodStatus.nextSeq)
        expectCompleteAndOrdered(check, nextSeq: goodStatus.nextSeq, devices: ["m1"])
        let deliveredBefore = check.messages.count

        let wrongState = scene.directory.appendingPathComponent("state-wrong-ca")
        let wrongConfig = try scene.config(broker: tlsURL, mqtt: ["tls: { ca_file: \(certificates.otherCAFile) }"], file: "wrong-ca.yaml")
        let bad = try scene.startAgent(wrongConfig, stateDirectory: wrongState)
        defer { bad.stop() }
        #expect(await bad.waitForLog("certificate verify"), "\(bad.output)")
        let first = try bad.status()
        var later = first
        #expect(try await TestSupport.waitUntil(timeout: 30, interval: 0.5) {
            later = try bad.status()
            return later.backlog.records >= first.backlog.records + 20
        }, "backlog did not grow: \(later.text)")
        #expect(later.broker?.connected == false, "\(later.text)")
        #expect(later.lastAckedSeq == 0)
        let verifyLines = bad.logLines(containing: "certificate verify")
        #expect((1...2).contains(verifyLines.count), "\(verifyLines)")
        #expect(verifyLines.allSatisfy { $0.contains("level=error") })
        #expect(bad.terminate(timeout: 5) == 0, "\(bad.output)")
        #expect(DeliveryCheck(received: subscriber.messages).messages.count == deliveredBefore)
        #expect(scene.broker.outputText.contains("unknown ca"), "the broker saw no rejected handshake")
    }

    // MARK: 6. Bad credentials

    @Test("a wrong password is logged once as not authorized, retried, never printed; records keep buffering and go out with the right one")
    func wrongPasswordIsLoggedOnceAndRetried() async throws {
        let rightPassword = "Right-\(UUID().uuidString.prefix(8))"
        let wrongPassword = "Wrong-\(UUID().uuidString.prefix(8))"
        let secrets = TestSupport.temporaryDirectory("uplink-e2e-secrets")
        defer { try? FileManager.default.removeItem(at: secrets) }
        let passwd = secrets.appendingPathComponent("passwd")
        try Mosquitto.writePasswordFile(user: "uplink", password: rightPassword, to: passwd)
        let scene = try Scene(machines: 1, passwordFile: passwd)
        defer { scene.stop() }
        let subscriber = try await scene.subscribe(username: "uplink", password: rightPassword)
        defer { subscriber.stop() }
        let secret = try TestSupport.write(wrongPassword + "\n", to: "mqtt-password", in: secrets)
        chmod(secret.path, 0o600)
        let config = try scene.config(mqtt: ["username: uplink", "password_file: \(secret.path)"])

        let agent = try scene.startAgent(config)
        defer { agent.stop() }
        let refusedByBroker = { scene.broker.outputText.components(separatedBy: "not authorised").count - 1 }
        #expect(await TestSupport.waitUntil(timeout: 30) { refusedByBroker() >= 5 }, "broker log: \(scene.broker.outputText.suffix(1500))")
        let authLines = agent.output.split(separator: "\n").filter {
            let line = $0.lowercased()
            return line.contains("not authorized") || line.contains("bad user name or password") || line.contains("bad username or password")
        }
        #expect((1...2).contains(authLines.count), "\(authLines.count) lines for \(refusedByBroker()) refused attempts: \(authLines)")
        #expect(authLines.allSatisfy { $0.contains("level=error") })
        let first = try agent.status()
        var later = first
        #expect(try await TestSupport.waitUntil(timeout: 30, interval: 0.5) {
            later = try agent.status()
            return later.backlog.records >= first.backlog.records + 20
        }, "backlog did not grow: \(later.text)")
        #expect(later.broker?.connected == false)
        #expect(agent.terminate(timeout: 5) == 0)
        #expect(!agent.output.contains(wrongPassword))
        #expect(!later.text.contains(wrongPassword))
        #expect(DeliveryCheck(received: subscriber.messages).messages.isEmpty)

        // The same state directory with the right password: the buffered records go out, none lost.
        try TestSupport.write(rightPassword + "\n", to: "mqtt-password", in: secrets)
        chmod(secret.path, 0o600)
        let fixed = try scene.startAgent(config)
        defer { fixed.stop() }
        #expect(await fixed.waitForLog("connected to the broker"), "\(fixed.output)")
        let target = try fixed.status().nextSeq
        _ = try await waitForCompleteDelivery(subscriber, nextSeq: target, timeout: 60)
        #expect(fixed.terminate(timeout: 5) == 0)
        let final = try fixed.status()
        #expect(final.backlog.records == 0, "\(final.text)")
        let check = try await waitForCompleteDelivery(subscriber, nextSeq: final.nextSeq)
        expectCompleteAndOrdered(check, nextSeq: final.nextSeq, devices: ["m1"])
        #expect(!fixed.output.contains(rightPassword))
    }

    // MARK: 7. Reload

    @Test("SIGHUP with a broken config keeps the running one; SIGHUP with a valid changed config applies it")
    func reloadIsValidatedFirst() async throws {
        let scene = try Scene(machines: 1)
        defer { scene.stop() }
        let subscriber = try await scene.subscribe()
        defer { subscriber.stop() }
        let config = try scene.config()
        let agent = try scene.startAgent(config)
        defer { agent.stop() }
        let dataCount = { DeliveryCheck(received: subscriber.messages).messages.count }
        #expect(await TestSupport.waitUntil(timeout: 30) { dataCount() >= 5 }, "\(agent.output)")

        // Broken: a duration without a unit on line 2.
        _ = try scene.config(interval: "5")
        agent.signal(SIGHUP)
        #expect(await agent.waitForLog("reload refused"), "\(agent.output)")
        let refusal = agent.logLines(containing: "reload refused").first ?? ""
        #expect(refusal.contains("\(config.path):2:"), "\(refusal)")
        let afterRefusal = dataCount()
        #expect(await TestSupport.waitUntil(timeout: 30) { dataCount() >= afterRefusal + 10 }, "polling stopped after a refused reload")
        // status.json is rewritten every 2 s.
        var afterRefusalStatus = try agent.status()
        #expect(try await TestSupport.waitUntil(timeout: 15, interval: 0.5) {
            afterRefusalStatus = try agent.status()
            return afterRefusalStatus.devices.count == 1 && afterRefusalStatus.devices.allSatisfy { $0.state == "good" && $0.polls > 0 }
        }, "\(afterRefusalStatus.text)")
        #expect(DeliveryCheck(received: subscriber.messages).messages.allSatisfy { Set($0.points.map(\.signal)) == ["r0", "r1", "r2"] })
        #expect(agent.process.process.isRunning)

        // Valid: r1 renamed.
        _ = try scene.config(rename: ["r1": "pressure"])
        agent.signal(SIGHUP)
        #expect(await agent.waitForLog("msg=reloaded"), "\(agent.output)")
        // Only devices changed: no "takes effect at the next restart" warning.
        #expect(agent.logLines(containing: "next restart").isEmpty, "\(agent.output)")
        #expect(await TestSupport.waitUntil(timeout: 30) {
            DeliveryCheck(received: subscriber.messages).messages.filter { $0.points.contains { $0.signal == "pressure" } }.count >= 5
        }, "\(agent.output)")
        #expect(agent.terminate(timeout: 5) == 0)
        let final = try agent.status()
        let check = try await waitForCompleteDelivery(subscriber, nextSeq: final.nextSeq)
        expectCompleteAndOrdered(check, nextSeq: final.nextSeq, devices: ["m1"])
        // Once renamed, never the old name again; the value is the same register's.
        let firstRenamed = try #require(check.messages.firstIndex { $0.points.contains { $0.signal == "pressure" } })
        #expect(check.messages[firstRenamed...].allSatisfy { Set($0.points.map(\.signal)) == ["r0", "pressure", "r2"] })
        #expect(check.messages[firstRenamed...].allSatisfy { $0.points.contains { $0.signal == "pressure" && $0.value == "1" } })
    }
}

// MARK: 8. Start-up errors

@Suite("uplink run start-up errors")
struct RunStartupErrorTests {
    @Test("a config error exits 78 with FILE:LINE:COLUMN, before touching the state directory")
    func configErrorExits78() throws {
        let directory = TestSupport.temporaryDirectory("uplink-e2e")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = try TestSupport.write("""
        agent: { name: gw, site: s1 }
        devices:
          - name: m1
            tcp: { host: 127.0.0.1, port: 5020 }
            signals:
              - { name: a, area: holding, address: 0, type: uint16, scael: 2 }
        mqtt: { broker: "mqtt://127.0.0.1:1883" }
        """, to: "broken.yaml", in: directory)
        let state = directory.appendingPathComponent("state")
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["run", config.path, "--state-dir", state.path], timeout: 30)
        #expect(status == 78, "\(output)")
        #expect(output.contains("\(config.path):6:"), "\(output)")
        #expect(output.contains("scael") && output.contains("did you mean 'scale'"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: state.path))
    }

    @Test("no broker in the config and no --broker exits 78 saying so")
    func noBrokerExits78() throws {
        let directory = TestSupport.temporaryDirectory("uplink-e2e")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = try TestSupport.write("""
        devices:
          - name: m1
            tcp: { host: 127.0.0.1, port: 5020 }
            signals:
              - { name: a, area: holding, address: 0, type: uint16 }
        """, to: "no-broker.yaml", in: directory)
        let state = directory.appendingPathComponent("state")
        let (status, output) = try ChildProcess.run(TestSupport.product("uplink"), ["run", config.path, "--state-dir", state.path], timeout: 30)
        #expect(status == 78, "\(output)")
        #expect(output.contains("\(config.path): no broker"), "\(output)")
        #expect(output.contains("--broker"), "\(output)")
    }
}
