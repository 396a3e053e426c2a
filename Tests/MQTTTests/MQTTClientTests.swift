import Foundation
import Testing
import TestSupport
@testable import MQTT

@Suite("MQTTClient: options and errors (no broker)")
struct MQTTOptionsTests {
    @Test func invalidOptionsAreRefusedWithAReason() {
        func refused(_ change: (inout MQTTOptions) -> Void) -> MQTTError? {
            var o = MQTTOptions(host: "127.0.0.1", clientID: "x")
            change(&o)
            do { _ = try MQTTClient(o); return nil } catch { return error }
        }
        #expect(refused { $0.clientID = "" } == .invalidOptions("client id must be 1...65535 bytes"))
        #expect(refused { $0.port = 0 } == .invalidOptions("port 0 is not in 1...65535"))
        #expect(refused { $0.host = "" } == .invalidOptions("host is empty"))
        #expect(refused { $0.keepAlive = .seconds(2) } != nil)
        #expect(refused { $0.password = "secret" } == .invalidOptions("a password needs a username"))
        #expect(refused { $0.will = MQTTWill(topic: "a/#", payload: "x") } == .invalidTopic("a/#"))
        #expect(refused { $0.tls = MQTTTLSOptions(certificateFile: "/etc/hostname") } != nil)
        #expect(refused { _ in } == nil)
    }

    @Test func aMissingCAFileNamesThePath() {
        #expect {
            _ = try MQTTClient(MQTTOptions(host: "h", clientID: "x", tls: MQTTTLSOptions(caFile: "/nonexistent/ca.pem")))
        } throws: { error in
            guard case MQTTError.tlsSetup(let message) = error else { return false }
            return message.contains("/nonexistent/ca.pem") && message.contains("No such file")
        }
    }

    @Test func thePasswordNeverAppearsInDescriptions() {
        let options = MQTTOptions(host: "broker", clientID: "gw", username: "user", password: "hunter2-secret")
        #expect(!"\(options)".contains("hunter2"))
        #expect("\(options)".contains("password ***"))
        #expect(!String(reflecting: MQTTError.badCredentials(code: 4)).contains("hunter2"))
    }

    @Test func reconnectDelaysGrowExponentiallyUpToTheCap() {
        let policy = MQTTReconnectPolicy(initialDelay: .seconds(1), maxDelay: .seconds(10), multiplier: 2, jitter: 0.2)
        #expect((0..<6).map { policy.delay(afterFailures: $0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10), .seconds(10)])
        #expect(policy.delay(afterFailures: 1, random: 0) == .milliseconds(1600))
        #expect(policy.delay(afterFailures: 1, random: 1) == .milliseconds(2400))
    }

    @Test func connackCodesMapToClearErrors() {
        #expect(ClientCore.connackError(4, v5: false) == .badCredentials(code: 4))
        #expect(ClientCore.connackError(5, v5: false) == .notAuthorized(code: 5))
        #expect(ClientCore.connackError(0x86, v5: true) == .badCredentials(code: 0x86))
        #expect(ClientCore.connackError(0x87, v5: true) == .notAuthorized(code: 0x87))
        #expect("\(ClientCore.connackError(2, v5: false))".contains("identifier rejected"))
        #expect("\(MQTTError.notAuthorized(code: 5))".contains("not authorized"))
        #expect("\(MQTTError.badCredentials(code: 4))".contains("bad username or password"))
    }

    @Test func disconnectBeforeStartEndsTheEventStream() async throws {
        let client = try MQTTClient(MQTTOptions(host: "127.0.0.1", clientID: "never-started"))
        await client.disconnect()
        var events: [MQTTEvent] = []
        for await event in client.events { events.append(event) }
        #expect(events == [.stopped])
        #expect(throws: MQTTError.stopped) { try client.start() }
        #expect(throws: MQTTError.stopped) { try client.publish(topic: "a", text: "x") }
    }
}

@Suite("MQTTClient against a real mosquitto", .enabled(if: Broker.available))
struct MQTTBrokerTests {
    @Test func publishesAtQoS0And1And2ReachASubscriber() async throws {
        let broker = try Broker()
        let (sub, subLog) = try await subscriber(broker.port, "plant/#")
        let (pub, pubLog) = try await connectedClient(testOptions(broker.port))
        var mids: [MQTTMessageID] = []
        for qos in MQTTQoS.allCases {
            mids.append(try pub.publish(topic: "plant/qos\(qos.rawValue)", text: "payload \(qos.rawValue)", qos: qos))
        }
        #expect(await subLog.wait { $0.messages.count == 3 })
        let received = subLog.messages.sorted { $0.topic < $1.topic }
        #expect(received.map(\.topic) == ["plant/qos0", "plant/qos1", "plant/qos2"])
        #expect(received.map(\.text) == ["payload 0", "payload 1", "payload 2"])
        #expect(received.map(\.qos) == [.atMostOnce, .atLeastOnce, .exactlyOnce])
        // Every publish is confirmed by mid: sent for QoS 0, PUBACK for 1, PUBCOMP for 2.
        #expect(await pubLog.wait { Set($0.acked) == Set(mids) })
        #expect(pub.pendingAcks == 0)
        await pub.disconnect()
        await sub.disconnect()
    }

    @Test func everyQoS1PublishIsAckedByItsMid() async throws {
        let broker = try Broker()
        var options = testOptions(broker.port)
        options.sendMaximum = 20
        let (client, log) = try await connectedClient(options)
        let payload = [UInt8](repeating: 0x42, count: 200)
        var mids = Set<MQTTMessageID>()
        for i in 0..<1000 { mids.insert(try client.publish(topic: "load/\(i % 10)", payload: payload, qos: .atLeastOnce)) }
        #expect(mids.count == 1000)
        #expect(await log.wait { $0.acked.count >= 1000 })
        #expect(Set(log.acked) == mids)
        #expect(log.acked.count == 1000)
        #expect(client.pendingAcks == 0)
        await client.disconnect()
    }

    @Test func mosquittoSubReceivesOurMessages() async throws {
        let broker = try Broker()
        let mosquittoSub = try #require(TestSupport.which("mosquitto_sub"))
        let sub = try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(broker.port)", "-i", "interop-sub",
                                                  "-t", "interop/#", "-q", "1", "-v", "-C", "2"])
        #expect(await broker.waitForLog("Sending SUBACK to interop-sub"))
        let (client, _) = try await connectedClient(testOptions(broker.port))
        try client.publish(topic: "interop/a", text: "first", qos: .atLeastOnce)
        try client.publish(topic: "interop/b", text: "温度=21.5", qos: .exactlyOnce)
        #expect(sub.waitForExit(timeout: 10) == 0)
        #expect(sub.outputText.contains("interop/a first"))
        #expect(sub.outputText.contains("interop/b 温度=21.5"))
        await client.disconnect()
    }

    @Test func invalidTopicsAreRefusedBeforeSending() async throws {
        let broker = try Broker()
        let (client, _) = try await connectedClient(testOptions(broker.port))
        #expect(throws: MQTTError.invalidTopic("a/#")) { try client.publish(topic: "a/#", text: "x") }
        #expect(throws: MQTTError.invalidTopic("a/+")) { try client.publish(topic: "a/+", text: "x") }
        #expect(throws: MQTTError.invalidTopic("a/#/b")) { try client.subscribe("a/#/b") }
        await client.disconnect()
    }

    @Test func theWillIsPublishedWhenTheClientDiesAbruptly() async throws {
        if let port = ProcessInfo.processInfo.environment["UPLINK_MQTT_WILL_CHILD"].flatMap(Int.init) {
            await Self.runWillVictim(port: port)  // never returns
        }
        let broker = try Broker()
        let (sub, subLog) = try await subscriber(broker.port, "gateways/+/status")
        let victim = try ChildProcess(CommandLine.arguments[0],
                                      ["--testing-library", "swift-testing", "--filter", "theWillIsPublishedWhenTheClientDiesAbruptly"],
                                      environment: ["UPLINK_MQTT_WILL_CHILD": "\(broker.port)"])
        #expect(victim.waitForOutput(containing: "UPLINK-VICTIM-CONNECTED", timeout: 30))
        #expect(subLog.messages.isEmpty)
        victim.signal(SIGKILL)
        #expect(await subLog.wait { !$0.messages.isEmpty })
        #expect(subLog.messages.first?.topic == "gateways/victim/status")
        #expect(subLog.messages.first?.text == "offline")
        await sub.disconnect()
    }

    /// The child side: connect with a will, say so, and wait to be killed.
    static func runWillVictim(port: Int) async -> Never {
        var options = testOptions(port, id: "will-victim")
        options.will = MQTTWill(topic: "gateways/victim/status", payload: "offline", qos: .atLeastOnce)
        do {
            let (client, _) = try await connectedClient(options)
            let line = "UPLINK-VICTIM-CONNECTED\n"
            _ = line.withCString { write(1, $0, strlen($0)) }
            while true {
                try await Task.sleep(for: .seconds(60))
                _ = client.isConnected
            }
        } catch {
            let line = "UPLINK-VICTIM-ERROR \(error)\n"
            _ = line.withCString { write(1, $0, strlen($0)) }
            exit(3)
        }
    }

    @Test func theWillIsNotPublishedAfterACleanDisconnect() async throws {
        let broker = try Broker()
        let (sub, subLog) = try await subscriber(broker.port, "gateways/+/status")
        var options = testOptions(broker.port, id: "clean-leaver")
        options.will = MQTTWill(topic: "gateways/clean/status", payload: "offline")
        let (client, log) = try await connectedClient(options)
        await client.disconnect()
        #expect(await log.wait { $0.all.last == .stopped })
        // The broker has processed the DISCONNECT (and dropped the will) once it logs it.
        #expect(await broker.waitForLog("Client clean-leaver disconnected."))
        try sub.publish(topic: "gateways/marker/status", text: "marker")
        #expect(await subLog.wait { $0.messages.contains { $0.text == "marker" } })
        #expect(subLog.messages.map(\.text) == ["marker"])
        await sub.disconnect()
    }

    @Test func afterABrokerRestartItReconnectsAndDeliversWhatWasPublishedMeanwhile() async throws {
        let broker = try Broker()
        let (client, log) = try await connectedClient(testOptions(broker.port))
        broker.stop()
        #expect(await log.wait { $0.disconnects == 1 })
        #expect(!client.isConnected)
        // QoS 1 while disconnected: accepted with a mid (libmosquitto queues it, PITFALLS G9).
        let mid = try client.publish(topic: "state/retained", text: "published while offline", qos: .atLeastOnce, retain: true)
        #expect(client.pendingAcks == 1)
        #expect(throws: MQTTError.notConnected) { try client.publish(topic: "state/q0", text: "lost", qos: .atMostOnce) }
        try broker.start()
        #expect(await log.wait { $0.connects == 2 })
        #expect(await log.wait { $0.acked.contains(mid) })
        #expect(client.pendingAcks == 0)
        // It really reached the broker: a new subscriber gets it as the retained message.
        let (sub, subLog) = try await subscriber(broker.port, "state/retained")
        #expect(await subLog.wait { $0.messages.contains { $0.text == "published while offline" && $0.retain } })
        // And publishing works again.
        let again = try client.publish(topic: "state/after", text: "x", qos: .atLeastOnce)
        #expect(await log.wait { $0.acked.contains(again) })
        await client.disconnect()
        await sub.disconnect()
    }

    @Test func aQoS1PublishBeforeTheFirstConnectionIsSentOnceConnected() async throws {
        let broker = try Broker()
        let (sub, subLog) = try await subscriber(broker.port, "early/#")
        let client = try MQTTClient(testOptions(broker.port))
        let log = EventLog(client)
        let mid = try client.publish(topic: "early/x", text: "before start", qos: .atLeastOnce)
        #expect(client.pendingAcks == 1)
        try client.start()
        #expect(await log.wait { $0.acked.contains(mid) })
        #expect(await subLog.wait { $0.messages.map(\.text) == ["before start"] })
        await client.disconnect()
        await sub.disconnect()
    }

    @Test func aSubscriptionMadeWhileDisconnectedIsSentOnConnect() async throws {
        let broker = try Broker()
        let client = try MQTTClient(testOptions(broker.port))
        let log = EventLog(client)
        #expect(try client.subscribe("late/#") == nil)
        try client.start()
        #expect(await log.wait { $0.subacks == 1 })
        let (pub, _) = try await connectedClient(testOptions(broker.port))
        try pub.publish(topic: "late/x", text: "hello")
        #expect(await log.wait { $0.messages.map(\.text) == ["hello"] })
        await pub.disconnect()
        await client.disconnect()
    }

    @Test func subscriptionsAreRenewedAfterAReconnect() async throws {
        let broker = try Broker()
        let (sub, subLog) = try await subscriber(broker.port, "renewed/#")
        broker.stop()
        #expect(await subLog.wait { $0.disconnects == 1 })
        try broker.start()
        #expect(await subLog.wait { $0.connects == 2 && $0.subacks == 2 })
        let (pub, _) = try await connectedClient(testOptions(broker.port))
        try pub.publish(topic: "renewed/x", text: "after restart")
        #expect(await subLog.wait { $0.messages.map(\.text) == ["after restart"] })
        await pub.disconnect()
        await sub.disconnect()
    }

    @Test func nothingListeningIsAConnectionRefusedFailureAndItKeepsRetrying() async throws {
        let port = TestSupport.freeTCPPort()
        let client = try MQTTClient(testOptions(port))
        let log = EventLog(client)
        try client.start()
        await #expect {
            try await client.waitUntilConnected(timeout: .seconds(10))
        } throws: { error in
            guard case MQTTError.network(let message, _) = error else { return false }
            return message.contains("Connection refused")
        }
        // It keeps trying (libmosquitto's own loop would not after this kind of failure).
        #expect(await log.wait { $0.failures.count >= 2 })
        #expect(log.failures.allSatisfy { if case .network = $0 { true } else { false } })
        #expect(throws: MQTTError.notConnected) { try client.publish(topic: "a", text: "x", qos: .atMostOnce) }
        await client.disconnect()
        #expect(await log.wait { $0.all.last == .stopped })
    }

    @Test func aBrokerThatAppearsLaterIsConnectedToByTheRetries() async throws {
        let broker = try Broker()
        broker.stop()
        let client = try MQTTClient(testOptions(broker.port))
        let log = EventLog(client)
        try client.start()
        #expect(await log.wait { $0.failures.count >= 1 })
        try broker.start()
        try await client.waitUntilConnected(timeout: .seconds(10))
        #expect(await log.wait { $0.connects == 1 })
        await client.disconnect()
    }

    @Test func mqtt5ConnectsAndAcksCarryAcceptingReasonCodes() async throws {
        let broker = try Broker()
        var options = testOptions(broker.port)
        options.protocolVersion = .v5
        let (client, log) = try await connectedClient(options)
        let mid = try client.publish(topic: "v5/test", text: "hello", qos: .atLeastOnce)
        #expect(await log.wait { $0.acked.contains(mid) })
        let reason = log.all.compactMap { if case .published(mid, let r) = $0 { r } else { nil } }.first
        #expect(reason.map { $0 < 0x80 } == true)  // 0 or 0x10 "no matching subscribers"
        await client.disconnect()
    }

    @Test func aPersistentSessionIsReportedAsPresent() async throws {
        let broker = try Broker()
        var options = testOptions(broker.port, id: "persistent-gw")
        options.cleanSession = false
        let (first, firstLog) = try await connectedClient(options)
        #expect(await firstLog.wait { $0.all.contains(.connected(sessionPresent: false)) })
        await first.disconnect()
        let (second, secondLog) = try await connectedClient(options)
        #expect(await secondLog.wait { $0.all.contains(.connected(sessionPresent: true)) })
        await second.disconnect()
    }
}

@Suite("MQTTClient: credentials", .enabled(if: Broker.available && TestSupport.which("mosquitto_passwd") != nil))
struct MQTTCredentialTests {
    func brokerWithPasswords() throws -> Broker {
        let dir = TestSupport.temporaryDirectory("uplink-passwd")
        let file = dir.appendingPathComponent("passwd").path
        let (status, output) = try ChildProcess.run(try #require(TestSupport.which("mosquitto_passwd")),
                                                    ["-b", "-c", file, "gateway", "right-password"])
        guard status == 0 else { throw TestError("mosquitto_passwd: \(output)") }
        return try Broker(extra: ["password_file \(file)"], allowAnonymous: false)
    }

    @Test(arguments: [MQTTProtocolVersion.v311, .v5])
    func wrongPasswordIsAClearRefusal(version: MQTTProtocolVersion) async throws {
        let broker = try brokerWithPasswords()
        var options = testOptions(broker.port)
        options.protocolVersion = version
        options.username = "gateway"
        options.password = "wrong-password"
        let client = try MQTTClient(options)
        let log = EventLog(client)
        try client.start()
        await #expect {
            try await client.waitUntilConnected(timeout: .seconds(10))
        } throws: { error in
            switch error {
            case MQTTError.notAuthorized, MQTTError.badCredentials:
                let text = "\(error)"
                return text.contains("not authorized") || text.contains("bad username or password")
            default: return false
            }
        }
        #expect(log.connects == 0)
        await client.disconnect()
    }

    @Test func rightPasswordConnects() async throws {
        let broker = try brokerWithPasswords()
        var options = testOptions(broker.port)
        options.username = "gateway"
        options.password = "right-password"
        let (client, _) = try await connectedClient(options)
        #expect(client.isConnected)
        await client.disconnect()
    }

    @Test func noCredentialsOnAClosedBrokerIsRefused() async throws {
        let broker = try brokerWithPasswords()
        let client = try MQTTClient(testOptions(broker.port))
        try client.start()
        await #expect(throws: MQTTError.notAuthorized(code: 5)) {
            try await client.waitUntilConnected(timeout: .seconds(10))
        }
        await client.disconnect()
    }
}

@Suite("MQTTClient: TLS", .enabled(if: Broker.available && TestSupport.which("openssl") != nil))
struct MQTTTLSTests {
    func material() throws -> TLSMaterial { try TLSMaterial.shared.get() }

    func tlsOptions(_ port: Int, _ tls: MQTTTLSOptions) -> MQTTOptions {
        var options = testOptions(port)
        options.tls = tls
        options.connectTimeout = .seconds(5)
        return options
    }

    @Test func connectsToATLSBrokerSignedByTheGivenCA() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines())
        let (client, log) = try await connectedClient(tlsOptions(broker.port, MQTTTLSOptions(caFile: m.caFile)))
        let mid = try client.publish(topic: "tls/test", text: "encrypted", qos: .atLeastOnce)
        #expect(await log.wait { $0.acked.contains(mid) })
        await client.disconnect()
    }

    @Test func theHostNameIsVerifiedToo() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines())
        var options = tlsOptions(broker.port, MQTTTLSOptions(caFile: m.caFile))
        options.host = "localhost"  // in the certificate as DNS:localhost
        let (client, _) = try await connectedClient(options)
        await client.disconnect()
    }

    @Test func aWrongCAIsACertificateVerificationFailure() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines())
        let client = try MQTTClient(tlsOptions(broker.port, MQTTTLSOptions(caFile: m.wrongCAFile)))
        let log = EventLog(client)
        try client.start()
        await #expect {
            try await client.waitUntilConnected(timeout: .seconds(15))
        } throws: { error in
            guard case MQTTError.tlsVerificationFailed = error else { return false }
            return "\(error)".contains("certificate verify failed")
        }
        // And it retries (libmosquitto's own thread would have stopped silently, PITFALLS G12).
        #expect(await log.wait { $0.failures.count >= 2 })
        await client.disconnect()
    }

    @Test func insecureSkipsVerificationExplicitly() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines())
        let (client, _) = try await connectedClient(tlsOptions(broker.port, MQTTTLSOptions(caFile: m.wrongCAFile, insecure: true)))
        #expect(client.isConnected)
        await client.disconnect()
    }

    @Test func mutualTLSWithAClientCertificateConnects() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines(requireClientCertificate: true))
        let tls = MQTTTLSOptions(caFile: m.caFile, certificateFile: m.clientCert, keyFile: m.clientKey, minimumVersion: "tlsv1.2")
        let (client, log) = try await connectedClient(tlsOptions(broker.port, tls))
        let mid = try client.publish(topic: "mtls/test", text: "hello", qos: .exactlyOnce)
        #expect(await log.wait { $0.acked.contains(mid) })
        await client.disconnect()
    }

    @Test func withoutTheRequiredClientCertificateTheConnectionFails() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines(requireClientCertificate: true))
        let client = try MQTTClient(tlsOptions(broker.port, MQTTTLSOptions(caFile: m.caFile)))
        try client.start()
        await #expect {
            try await client.waitUntilConnected(timeout: .seconds(15))
        } throws: { error in
            switch error {
            case MQTTError.tlsHandshakeFailed, MQTTError.network, MQTTError.timeout: return true
            default: return false
            }
        }
        #expect(!client.isConnected)
        await client.disconnect()
    }

    @Test func aPlainClientOnATLSPortFailsWithinTheConnectTimeout() async throws {
        let m = try material()
        let broker = try Broker(extra: m.brokerLines())
        var options = testOptions(broker.port)
        options.connectTimeout = .seconds(2)
        let client = try MQTTClient(options)
        try client.start()
        await #expect(throws: MQTTError.self) { try await client.waitUntilConnected(timeout: .seconds(15)) }
        #expect(!client.isConnected)
        await client.disconnect()
    }
}
