// Issue 6, part 6: secure by default. TLS verification is on whenever TLS is used (the insecure switch
// warns at every start); mutual TLS with client certificates against mosquitto; secrets only from
// files or the environment, never logged, never in `uplink check` output; tight permissions on the
// state directory and warnings for readable secrets; no listening socket; the systemd unit's exposure.

import Agent
import Foundation
import Testing
import TestSupport
import UplinkCore
#if canImport(Glibc)
import Glibc
#endif

extension Reliability {
    @Suite("6. Secure by default", needsBroker) struct SecureByDefault {
        @Test("mutual TLS: with its client certificate the agent delivers over mqtts; without one, or with one from another CA, the broker refuses it and it buffers",
              .timeLimit(.minutes(2)), .enabled(if: PKI.isAvailable, "needs openssl"))
        func mutualTLS() async throws {
            let sandbox = Sandbox("mtls")
            defer { sandbox.cleanUp() }
            let pki = try PKI(sandbox)
            let broker = try Broker(sandbox, tls: .init(port: TestSupport.freeTCPPort(), caFile: pki.caFile, certificateFile: pki.serverCertificate,
                                                        keyFile: pki.serverKey, requireClientCertificate: true))
            let tlsURL = try #require(broker.tlsURL)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(1)
            _ = try Sim(sandbox, machines: fleet)

            let good = try writeAgentConfig(sandbox, name: "mtls.yaml", machines: fleet, broker: tlsURL,
                                            mqtt: ["tls: { ca_file: \(pki.caFile), cert_file: \(pki.clientCertificate), key_file: \(pki.clientKey) }"])
            let agent = try Agent(sandbox, config: good, stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { subscriber.ledger.messages.count >= 10 })
            #expect(agent.terminate() == 0, "\(agent.output)")
            let status = try agent.status()
            #expect(status.broker?.url.hasPrefix("mqtts://") == true && status.backlog.records == 0, "\(status.text)")
            expectDelivered(await subscriber.waitForAll(below: status.nextSeq), nextSeq: status.nextSeq)
            // The broker took the certificate's CN as the user name (use_identity_as_username).
            #expect(broker.outputText.contains("uplink-gw-1"), "\(broker.outputText.suffix(1500))")
            let delivered = subscriber.ledger.messages.count

            let refused: [(String, String)] = [
                ("no client certificate", "tls: { ca_file: \(pki.caFile) }"),
                ("a client certificate from another CA",
                 "tls: { ca_file: \(pki.caFile), cert_file: \(pki.otherClientCertificate), key_file: \(pki.otherClientKey) }"),
            ]
            for (index, (what, tls)) in refused.enumerated() {
                let config = try writeAgentConfig(sandbox, name: "refused-\(index).yaml", machines: fleet, broker: tlsURL, mqtt: [tls])
                let state = sandbox.path("state-refused-\(index)")
                let refusedAgent = try Agent(sandbox, config: config, stateDirectory: state)
                #expect(await refusedAgent.waitForLog("cannot connect to the broker"), "\(what): \(refusedAgent.output)")
                let first = try refusedAgent.status()
                #expect(try await TestSupport.waitUntil(timeout: 20, interval: 0.5) {
                    try refusedAgent.status().backlog.records >= first.backlog.records + 20
                }, "\(what): not buffering")
                let later = try refusedAgent.status()
                #expect(later.broker?.connected == false && later.lastAckedSeq == 0, "\(what): \(later.text)")
                #expect(refusedAgent.logLines(containing: "connected to the broker").isEmpty, "\(what)")
                let line = refusedAgent.logLines(containing: "cannot connect to the broker").first.map(String.init) ?? ""
                #expect(refusedAgent.terminate() == 0, "\(what): \(refusedAgent.output)")
                report("mutual TLS, \(what): refused; agent log '\(line)'")
            }
            #expect(subscriber.ledger.messages.count == delivered, "a refused agent's data arrived")
            let brokerSaw = broker.outputText.split(separator: "\n").filter { $0.lowercased().contains("certificate") || $0.contains("OpenSSL") }
            #expect(!brokerSaw.isEmpty, "the broker logged no refused handshake: \(broker.outputText.suffix(1500))")
            report("mutual TLS: with the client certificate connected as uplink-gw-1 and delivered \(status.nextSeq - 1) records; broker on the refused ones: \(brokerSaw.prefix(2).joined(separator: " | "))")
        }

        @Test("TLS verification is on whenever TLS is used (mqtts:// alone, a wrong CA); insecure: true connects but warns at every start",
              .timeLimit(.minutes(2)), .enabled(if: PKI.isAvailable, "needs openssl"))
        func verificationOnByDefault() async throws {
            let sandbox = Sandbox("tlsverify")
            defer { sandbox.cleanUp() }
            let pki = try PKI(sandbox)
            let broker = try Broker(sandbox, tls: .init(port: TestSupport.freeTCPPort(), caFile: pki.caFile, certificateFile: pki.serverCertificate,
                                                        keyFile: pki.serverKey, requireClientCertificate: false))
            let tlsURL = try #require(broker.tlsURL)
            let fleet = machines(1)
            _ = try Sim(sandbox, machines: fleet)

            // mqtts:// with no tls section: verified against the system's CAs, which do not know the test CA.
            let plain = try writeAgentConfig(sandbox, name: "plain.yaml", machines: fleet, broker: broker.url)
            let byScheme = try Agent(sandbox, config: plain, stateDirectory: sandbox.path("s1"), arguments: ["--broker", tlsURL])
            #expect(await byScheme.waitForLog("certificate verify failed"), "\(byScheme.output)")
            await pause(2)
            #expect(byScheme.logLines(containing: "connected to the broker").isEmpty)
            #expect(byScheme.terminate() == 0)

            let wrongCA = try writeAgentConfig(sandbox, name: "wrong.yaml", machines: fleet, broker: tlsURL, mqtt: ["tls: { ca_file: \(pki.otherCAFile) }"])
            let wrong = try Agent(sandbox, config: wrongCA, stateDirectory: sandbox.path("s2"))
            #expect(await wrong.waitForLog("certificate verify failed"), "\(wrong.output)")
            #expect(wrong.logLines(containing: "connected to the broker").isEmpty)
            #expect(wrong.terminate() == 0)

            // The explicit switch: connects to the same broker, and says so at every start.
            let insecure = try writeAgentConfig(sandbox, name: "insecure.yaml", machines: fleet, broker: tlsURL,
                                                mqtt: ["tls: { ca_file: \(pki.otherCAFile), insecure: true }"])
            for start in 1...2 {
                let agent = try Agent(sandbox, config: insecure, stateDirectory: sandbox.path("s3"))
                #expect(await agent.waitForLog("connected to the broker"), "start \(start): \(agent.output)")
                let warnings = agent.logLines(containing: "verification is OFF")
                #expect(warnings.count == 1 && warnings.allSatisfy { $0.contains("level=warning") }, "start \(start): \(agent.output)")
                #expect(agent.terminate() == 0)
                if start == 1 { report("insecure switch: '\(warnings.first.map(String.init) ?? "")'") }
            }
        }

        @Test("secrets come from the environment or a file, are never logged (even at debug), never in status or `uplink check`; readable secrets are warned about",
              .timeLimit(.minutes(2)))
        func secretsStaySecret() async throws {
            let sandbox = Sandbox("secrets")
            defer { sandbox.cleanUp() }
            let password = "Pw-\(UUID().uuidString.prefix(12))"
            let passwd = sandbox.path("passwd")
            try Mosquitto.writePasswordFile(user: "gateway7", password: password, to: passwd)
            let broker = try Broker(sandbox, passwordFile: passwd.path)
            let fleet = machines(1)
            _ = try Sim(sandbox, machines: fleet)
            let environment = ["MQTT_USER": "gateway7", "MQTT_PASSWORD": password]

            // From the environment, user name substituted: the config holds secrets.
            let fromEnv = try writeAgentConfig(sandbox, name: "env.yaml", machines: fleet, broker: broker.url,
                                               mqtt: ["username: ${MQTT_USER}", "password_env: MQTT_PASSWORD"])
            chmod(fromEnv.path, 0o644)
            let agent = try Agent(sandbox, config: fromEnv, stateDirectory: sandbox.path("state"), arguments: ["--log-level", "debug"],
                                  environment: environment)
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            await pause(2.5)
            let warning = agent.logLines(containing: "insecure file permissions")
            #expect(warning.count == 1 && warning[0].contains(fromEnv.path) && warning[0].contains("0644"), "\(warning)")
            #expect(!warning.joined().contains(password))
            let status = try agent.status()
            #expect(agent.terminate() == 0)
            #expect(!agent.output.contains(password), "the password was logged")
            #expect(!status.text.contains(password), "the password is in uplink status")
            let statusFile = (try? String(contentsOf: sandbox.path("state/status.json"), encoding: .utf8)) ?? ""
            #expect(!statusFile.isEmpty && !statusFile.contains(password))
            let check = try ChildProcess.run(TestSupport.product("uplink"), ["check", fromEnv.path], environment: environment)
            #expect(check.status == 0 && !check.output.contains(password), "\(check.output)")

            // 0640: no warning.
            chmod(fromEnv.path, 0o640)
            let tight = try Agent(sandbox, config: fromEnv, stateDirectory: sandbox.path("state"), environment: environment)
            #expect(await tight.waitForLog("connected to the broker"), "\(tight.output)")
            #expect(tight.logLines(containing: "insecure file permissions").isEmpty, "\(tight.output)")
            #expect(tight.terminate() == 0)

            // From a file: a world-readable password file is warned about, a 0600 one is not.
            let secretFile = sandbox.path("mqtt-password")
            try (password + "\n").write(to: secretFile, atomically: true, encoding: .utf8)
            let fromFile = try writeAgentConfig(sandbox, name: "file.yaml", machines: fleet, broker: broker.url,
                                                mqtt: ["username: gateway7", "password_file: \(secretFile.path)"])
            chmod(fromFile.path, 0o600)
            for mode: mode_t in [0o644, 0o600] {
                chmod(secretFile.path, mode)
                let fileAgent = try Agent(sandbox, config: fromFile, stateDirectory: sandbox.path("state"), arguments: ["--log-level", "debug"])
                #expect(await fileAgent.waitForLog("connected to the broker"), "\(fileAgent.output)")
                let lines = fileAgent.logLines(containing: "insecure file permissions")
                if mode == 0o644 {
                    #expect(lines.count == 1 && lines[0].contains(secretFile.path), "\(lines)")
                } else {
                    #expect(lines.isEmpty, "\(lines)")
                }
                #expect(fileAgent.terminate() == 0)
                #expect(!fileAgent.output.contains(password))
            }

            // No secrets, world-readable: nothing to warn about.
            let open = try writeAgentConfig(sandbox, name: "open.yaml", machines: fleet, broker: "mqtt://127.0.0.1:1")
            chmod(open.path, 0o644)
            let openAgent = try Agent(sandbox, config: open, stateDirectory: sandbox.path("state-open"))
            #expect(await openAgent.waitForLog("msg=ready"), "\(openAgent.output)")
            #expect(openAgent.logLines(containing: "insecure file permissions").isEmpty, "\(openAgent.output)")
            #expect(openAgent.terminate() == 0)

            // A password written in the config is refused, and not repeated in the error.
            let inline = try writeAgentConfig(sandbox, name: "inline.yaml", machines: fleet, broker: broker.url,
                                              mqtt: ["username: gateway7", "password: \(password)"])
            let refused = Shell.run([TestSupport.product("uplink"), "check", inline.path])
            #expect(refused.status == 78 && refused.output.contains("password_file") && !refused.output.contains(password), "\(refused.output)")
            let refusedRun = Shell.run([TestSupport.product("uplink"), "run", inline.path, "--state-dir", sandbox.path("state-inline").path])
            #expect(refusedRun.status == 78 && !refusedRun.output.contains(password), "\(refusedRun.output)")

            // A substituted secret in the wrong key: the start-up error repeats the substituted value.
            let misplaced = try writeAgentConfig(sandbox, name: "misplaced.yaml", machines: fleet, broker: broker.url,
                                                 mqtt: ["username: gateway7", "password_env: ${MQTT_PASSWORD}"])
            let misplacedRun = Shell.run(["/usr/bin/env", "MQTT_PASSWORD=\(password)", TestSupport.product("uplink"), "run", misplaced.path,
                                          "--state-dir", sandbox.path("state-misplaced").path])
            #expect(misplacedRun.status == 78)
            // Found by this test (the error message echoed the substituted value), fixed.
            #expect(!misplacedRun.output.contains(password), "\(misplacedRun.output)")
            report("secrets: password never in logs (debug level), status.json, uplink status or uplink check; warnings: '\(warning.first.map(String.init) ?? "")'; inline password refused: '\(refused.output.split(separator: "\n").first ?? "")'")
        }

        @Test("which configs count as holding secrets, and which permissions are warned about (SecurityCheck)")
        func securityCheckRules() throws {
            let sandbox = Sandbox("rules")
            defer { sandbox.cleanUp() }
            let base = "devices: []\n"
            let holds: [(String, Bool)] = [
                (base + "mqtt:\n  broker: mqtt://h:1\n", false),
                (base + "mqtt:\n  broker: mqtt://h:1\n  username: gw\n", true),
                (base + "mqtt: { broker: \"mqtt://h:1\", password_env: PW }\n", true),
                (base + "mqtt:\n  broker: mqtt://h:1\n  password_file: /etc/uplink/pw\n", true),
                (base + "mqtt:\n  broker: \"${BROKER}\"\n", true),
                (base + "mqtt:\n  # username: old\n  broker: mqtt://h:1\n", false),
                ("agent: { name: \"${NAME}\" }\n" + base + "mqtt:\n  broker: mqtt://h:1\n", false),
                (base + "mqtt:\n  broker: mqtt://h:1\nbuffer:\n  max_size: \"${SIZE}\"\n", false),
                (base + "mqtt:\n  tls:\n    ca_file: /x\n  client_id: \"${HOSTNAME}\"\n", true),
            ]
            for (text, expected) in holds {
                #expect(SecurityCheck.configHoldsSecrets(text: text, mqtt: nil) == expected, "\(text)")
            }
            let config = sandbox.path("c.yaml")
            try (base + "mqtt:\n  username: gw\n").write(to: config, atomically: true, encoding: .utf8)
            let key = sandbox.path("client.key")
            try "k".write(to: key, atomically: true, encoding: .utf8)
            var mqtt = MQTTSettings()
            mqtt.username = "gw"
            mqtt.tls = MQTTSettings.TLS(certFile: "/c", keyFile: key.path)
            for (configMode, keyMode, expected) in [(0o644, 0o644, 2), (0o640, 0o644, 1), (0o600, 0o600, 0), (0o604, 0o640, 1)] {
                chmod(config.path, mode_t(configMode))
                chmod(key.path, mode_t(keyMode))
                let warnings = SecurityCheck.warnings(configPath: config.path, mqtt: mqtt)
                #expect(warnings.count == expected, "config \(String(configMode, radix: 8)), key \(String(keyMode, radix: 8)): \(warnings)")
                #expect(warnings.allSatisfy { !$0.contains("gw") || $0.contains(sandbox.directory.path) })
            }
            let dir = sandbox.path("st")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for (mode, expected) in [(0o700, 0), (0o750, 0), (0o755, 1), (0o777, 1)] {
                chmod(dir.path, mode_t(mode))
                #expect(SecurityCheck.stateDirectoryWarnings(dir).count == expected, "\(String(mode, radix: 8))")
            }
        }

        @Test("the state directory is created 0700 whatever the umask; an existing one open to others is warned about")
        func stateDirectoryPermissions() async throws {
            let sandbox = Sandbox("statedir")
            defer { sandbox.cleanUp() }
            let config = try writeAgentConfig(sandbox, machines: machines(1), broker: "mqtt://127.0.0.1:1")
            let fresh = sandbox.path("fresh-state")
            let child = try ChildProcess("/bin/sh", ["-c", "umask 000; exec \"$0\" \"$@\"", TestSupport.product("uplink"), "run", config.path,
                                                     "--state-dir", fresh.path])
            #expect(child.waitForOutput(containing: "msg=ready", timeout: 30), "\(child.outputText)")
            #expect(permissions(fresh.path) == 0o700, "mode \(String(permissions(fresh.path) ?? 0, radix: 8))")
            #expect(!child.outputText.contains("insecure file permissions"), "\(child.outputText)")
            child.signal(SIGTERM)
            #expect(child.waitForExit(timeout: 10) == 0)

            let open = sandbox.path("open-state")
            try FileManager.default.createDirectory(at: open, withIntermediateDirectories: true)
            chmod(open.path, 0o755)
            let agent = try Agent(sandbox, config: config, stateDirectory: open)
            #expect(await agent.waitForLog("msg=ready"), "\(agent.output)")
            let lines = agent.logLines(containing: "insecure file permissions")
            #expect(lines.count == 1 && lines[0].contains(open.path) && lines[0].contains("0755"), "\(agent.output)")
            #expect(agent.terminate() == 0)
            report("state directory: created 0700 under umask 000; an existing 0755 one: '\(lines.first.map(String.init) ?? "")'")
        }

        @Test("no listening socket: the agent listens nowhere; uplink-sim listens only on 127.0.0.1 (its Modbus ports, and the control port only when asked)")
        func noListeningSockets() async throws {
            let sandbox = Sandbox("listen")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox)
            let fleet = machines(2)
            let plainSim = try Sim(sandbox, machines: fleet, name: "plain.yaml")
            let agent = try Agent(sandbox, config: try writeAgentConfig(sandbox, machines: fleet, broker: broker.url), stateDirectory: sandbox.path("state"))
            #expect(await agent.waitForLog("connected to the broker"), "\(agent.output)")
            await pause(1)
            let agentSockets = SocketInspector.listening(pid: agent.pid)
            #expect(agentSockets.isEmpty, "the agent listens: \(agentSockets)")
            #expect(!SocketInspector.socketInodes(pid: agent.pid).isEmpty, "no sockets seen at all: /proc not readable?")
            if TestSupport.which("ss") != nil {
                let ss = Shell.run(["ss", "-ltnupxH"]).output
                #expect(!ss.contains("pid=\(agent.pid),"), "ss shows the agent listening: \(ss)")
            }
            let simSockets = SocketInspector.listening(pid: plainSim.process.process.processIdentifier)
            #expect(Set(simSockets.map(\.local)) == Set(fleet.map { "127.0.0.1:\($0.port)" }), "\(simSockets)")
            let socketCount = SocketInspector.socketInodes(pid: agent.pid).count
            #expect(agent.terminate() == 0)
            plainSim.stop()

            let controlled = try Sim(sandbox, machines: machines(1, prefix: "c"), control: true, name: "controlled.yaml")
            let controlPort = try #require(controlled.controlPort)
            let sockets = SocketInspector.listening(pid: controlled.process.process.processIdentifier)
            #expect(sockets.contains { $0.local == "127.0.0.1:\(controlPort)" }, "\(sockets)")
            #expect(sockets.allSatisfy { $0.local.hasPrefix("127.0.0.1:") }, "\(sockets)")
            report("listening sockets: agent none (of its \(socketCount) sockets); uplink-sim \(simSockets.map(\.description).sorted()); with --control: \(sockets.map(\.description).sorted())")
        }

        @Test("systemd units: `systemd-analyze security --offline=true` exposure 2.0 or below",
              .enabled(if: TestSupport.which("systemd-analyze") != nil, "needs systemd-analyze (Debian package systemd)"))
        func systemdHardening() throws {
            for unit in ["uplink.service", "uplink-sim.service"] {
                let path = TestSupport.repoRoot.appendingPathComponent("systemd/\(unit)").path
                let (status, output) = Shell.run(["systemd-analyze", "security", "--offline=true", "--no-pager", path], timeout: 120)
                let line = output.split(separator: "\n").first { $0.contains("Overall exposure level") }.map(String.init) ?? ""
                let score = line.split(separator: ":").last.flatMap { Double($0.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") }
                #expect(status == 0 || score != nil, "\(output.suffix(800))")
                let exposure = try #require(score, "no exposure level in: \(output.suffix(800))")
                #expect(exposure <= 2.0, "\(unit): \(line)")
                report("\(unit): \(line.replacingOccurrences(of: "→ ", with: ""))")
            }
        }
    }
}
