import Buffer
import Collector
import Foundation
import MQTT
import Publisher
import Synchronization
import UplinkConfig
import UplinkCore

/// How `uplink run` was asked to run.
public struct RunOptions: Sendable {
    public var configPath: String
    public var stateDirectory: URL
    /// `--broker`, overriding `mqtt.broker`.
    public var broker: BrokerURL?
    public var logLevel: Log.Level

    public init(configPath: String, stateDirectory: URL, broker: BrokerURL? = nil, logLevel: Log.Level = .info) {
        self.configPath = configPath
        self.stateDirectory = stateDirectory
        self.broker = broker
        self.logLevel = logLevel
    }
}

/// Why the daemon could not start; each says what to do. `uplink run` exits with `exitCode`.
public enum AgentError: Error, CustomStringConvertible {
    case config(ConfigError)
    case noBroker(String)
    case password(String)
    case stateDirectory(String)
    case buffer(BufferError)
    case mqtt(MQTTError)

    public var exitCode: Int32 {
        switch self {
        case .config, .noBroker, .password: 78
        case .stateDirectory, .buffer: 73
        case .mqtt: 78
        }
    }

    public var description: String {
        switch self {
        case .config(let e): e.description
        case .noBroker(let file): "\(file): no broker; expected an mqtt.broker key in the config or --broker mqtt://HOST:PORT"
        case .password(let why): why
        case .stateDirectory(let why): why
        case .buffer(let e): e.description
        case .mqtt(let e): e.description
        }
    }
}

/// The running agent: collector -> buffer writer -> publisher -> broker.
public final class AgentDaemon: Sendable {
    private let options: RunOptions
    private let log: Log
    private let notifier = SystemdNotifier()
    private let writer: BufferWriter
    private let client: BrokerConnection
    private let publisher: Publisher
    /// Payload profile, report by exception, last values, commands (Platform.swift).
    private let platform: PlatformRuntime
    private let mqtt: MQTTSettings
    private let identity: AgentIdentity
    private let brokerText: String
    private let collector: Mutex<Collector?>
    private let configuration: Mutex<UplinkConfiguration>
    private let startedAt = Int64(Date().timeIntervalSince1970 * 1000)

    /// Loads everything that can fail before anything starts, so a bad config exits at once.
    public init(options: RunOptions, log: Log) throws(AgentError) {
        self.options = options
        self.log = log
        let config: UplinkConfiguration
        do { config = try ConfigLoader.load(path: options.configPath) } catch { throw .config(error) }
        var mqtt = config.mqtt ?? MQTTSettings()
        if let broker = options.broker {
            mqtt.host = broker.host
            mqtt.port = broker.port
            if broker.tls && mqtt.tls == nil { mqtt.tls = MQTTSettings.TLS() }
            if !broker.tls { mqtt.tls = nil }
        } else if config.mqtt == nil {
            throw .noBroker(options.configPath)
        }
        self.mqtt = mqtt
        // Secure by default: a config holding credentials, a password file or a client key readable by
        // every user is reported at every start (Security.swift).
        for warning in SecurityCheck.warnings(configPath: options.configPath, mqtt: mqtt) + PlatformRuntime.warnings(mqtt) {
            log.warning("insecure file permissions", ["detail": warning])
        }
        identity = config.agent
        configuration = Mutex(config)
        brokerText = "\(mqtt.tls == nil ? "mqtt" : "mqtts")://\(mqtt.host):\(mqtt.port)"

        try Self.prepareStateDirectory(options.stateDirectory)
        for warning in SecurityCheck.stateDirectoryWarnings(options.stateDirectory) {
            log.warning("insecure file permissions", ["detail": warning])
        }
        let disk: DiskBuffer
        do {
            disk = try DiskBuffer(stateDirectory: options.stateDirectory, options: BufferOptions(
                maxBytes: config.buffer.maxBytes, maxAge: .milliseconds(config.buffer.maxAgeMs),
                overflowPolicy: config.buffer.whenFull == .dropOldest ? .dropOldest : .dropNewest))
        } catch { throw .buffer(error) }
        if let recovery = disk.recovery {
            log.error("buffer recovered from a damaged file", ["detail": recovery.description])
        }
        // Polls due at the same moment (every device on the same interval) share one commit and one
        // fsync, and the broker's acknowledgements ride along with the next one (or wait 1 s at most).
        writer = BufferWriter(buffer: disk, linger: .milliseconds(10), ackDelay: .seconds(1))

        let platform = PlatformRuntime(config: config, mqtt: mqtt, stateDirectory: options.stateDirectory)
        self.platform = platform
        let clientOptions = try Self.clientOptions(mqtt, identity: identity)
        do { client = try BrokerConnection(options: clientOptions, will: platform.willPolicy(statusWill: clientOptions.will)) } catch { throw .mqtt(error) }
        if mqtt.tls?.insecure == true {
            log.warning("TLS certificate verification is OFF (mqtt.tls.insecure: true): the broker is not authenticated")
        }
        let log = self.log
        publisher = Publisher(
            buffer: writer, link: client, session: platform.makeSession(config: config, mqtt: mqtt, identity: identity),
            qos: mqtt.qos, maxInflight: mqtt.maxInflight,
            onError: { log.warning("publisher", ["detail": $0]) })
        collector = Mutex(nil)
    }

    static func prepareStateDirectory(_ url: URL) throws(AgentError) {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if mkdir(url.path, 0o700) != 0 {
                throw .stateDirectory("cannot create the state directory \(url.path) (\(String(cString: strerror(errno)))); create it or pass --state-dir")
            }
        } else if !isDirectory.boolValue {
            throw .stateDirectory("\(url.path) is not a directory; expected a state directory (--state-dir)")
        }
        if access(url.path, W_OK) != 0 {
            throw .stateDirectory("the state directory \(url.path) is not writable by this user; fix its owner or pass --state-dir")
        }
    }

    static func clientOptions(_ mqtt: MQTTSettings, identity: AgentIdentity) throws(AgentError) -> MQTTOptions {
        var password: String?
        switch mqtt.password {
        case .file(let path)?:
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw .password("mqtt.password_file: cannot read \(path); expected a readable file holding the password")
            }
            password = text.hasSuffix("\n") ? String(text.dropLast()) : text
        case .environment(let name)?:
            guard let value = ProcessInfo.processInfo.environment[name] else {
                throw .password("mqtt.password_env: \(SecretText.variableName(name)) is not set; expected it to hold the password")
            }
            password = value
        case nil: break
        }
        let statusTopic = TopicTemplate.expand(mqtt.statusTopic, prefix: mqtt.topicPrefix, site: identity.site, agent: identity.name, device: "")
        let tls = mqtt.tls.map { MQTTTLSOptions(caFile: $0.caFile, caDirectory: $0.caPath, certificateFile: $0.certFile, keyFile: $0.keyFile, insecure: $0.insecure) }
        return MQTTOptions(
            host: mqtt.host, port: mqtt.port, clientID: mqtt.clientID ?? "uplink-\(identity.name)",
            protocolVersion: mqtt.protocolVersion == .v5 ? .v5 : .v311, cleanSession: true,
            username: try PlatformRuntime.username(mqtt), password: password, tls: tls, keepAlive: .seconds(mqtt.keepaliveSeconds),
            will: MQTTWill(topic: statusTopic, payload: StatusMessage.offline(identity), qos: .atLeastOnce, retain: true),
            reconnect: MQTTReconnectPolicy(initialDelay: .milliseconds(mqtt.reconnectMinMs), maxDelay: .milliseconds(mqtt.reconnectMaxMs)),
            connectTimeout: .seconds(10), sendMaximum: min(mqtt.maxInflight, 65535))
    }

    var statusTopic: String {
        TopicTemplate.expand(mqtt.statusTopic, prefix: mqtt.topicPrefix, site: identity.site, agent: identity.name, device: "")
    }

    /// Runs until SIGTERM or SIGINT; returns the exit status.
    public func run() async -> Int32 {
        let signals = SignalEvents()
        let config = configuration.withLock { $0 }
        log.info("starting", ["version": UplinkVersion.current, "config": options.configPath, "state_dir": options.stateDirectory.path,
                              "devices": String(config.devices.count), "broker": brokerText])
        // Commands from the platform: checked by the profile, run by the collector, logged and answered.
        let publisher = self.publisher, log = self.log
        await publisher.setCommandHandlers(execute: { [self] request in
            PlatformRuntime.execute(request, collector: collector.withLock { $0 }, publisher: publisher)
        }, log: { PlatformRuntime.log($0, to: log) })
        for filter in await publisher.subscriptions() {
            do { try client.subscribe(filter, qos: .atLeastOnce) } catch {
                log.error("cannot subscribe for commands", ["topic": filter, "detail": error.description])
            }
        }
        do { try client.start() } catch {
            log.error("cannot start the MQTT client", ["detail": error.description])
            return 78
        }
        let eventsTask = Task { await self.followBrokerEvents() }
        let dropsTask = Task { await self.followDrops() }
        let publisherTask = Task { await self.publisher.run() }
        startCollector(config)
        let statusTask = Task { await self.writeStatusPeriodically() }
        let watchdogTask = Task { await self.feedWatchdog() }
        notifier.ready(status: "polling \(config.devices.count) devices, publishing to \(brokerText)")
        log.info("ready", ["devices": String(config.devices.count)])

        for await signal in signals.stream {
            if signal == SIGHUP {
                reload()
                continue
            }
            log.info("stopping", ["signal": signal == SIGTERM ? "SIGTERM" : "SIGINT"])
            break
        }
        notifier.stopping()
        // Finish the current polls, commit what was accepted, give in-flight messages a moment.
        collector.withLock { $0 }?.stop()
        try? await writer.flush()
        await drainBacklog(timeout: .seconds(2))
        await publisher.stop()
        if platform.usesStatusTopic {
            _ = try? client.publish(topic: statusTopic, payload: StatusMessage.offline(identity), qos: .atLeastOnce, retain: true)
        }
        // The profile's goodbye (a Sparkplug NDEATH) before the clean DISCONNECT.
        await publisher.endSession()
        try? await Task.sleep(for: .milliseconds(100))
        await client.disconnect()
        statusTask.cancel()
        watchdogTask.cancel()
        await publisherTask.value
        eventsTask.cancel()
        dropsTask.cancel()
        // The disconnect event may not have been handled yet: the last status.json must not say connected.
        await publisher.handle(.disconnected(reason: "the agent stopped"))
        await writeStatus()
        await writer.close()
        log.info("stopped")
        return 0
    }

    /// At a clean stop: lets the publisher send what the last polls committed and waits for the acks,
    /// until the backlog is empty, the broker is gone, or `timeout` passes. (Waiting only for the
    /// messages already in flight raced with the publisher picking up the final commit, and left
    /// the last poll in the backlog.)
    private func drainBacklog(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let stats = await publisher.snapshot()
            guard stats.connected else { return }
            if stats.inflight == 0, let buffered = try? await writer.stats(), buffered.backlogRecords == 0 { return }
            publisher.notify()
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    private func startCollector(_ config: UplinkConfiguration) {
        let plans = config.devices.compactMap { try? Planner.plan($0).get() }
        let writer = self.writer, publisher = self.publisher, log = self.log
        let platform = self.platform
        let refusals = LogThrottle()
        let collector = Collector(plans: plans, onBatch: { polled in
            // Report by exception: unchanged readings never reach the disk.
            guard let batch = platform.admit(polled) else { return }
            writer.submit(batch) { result in
                if case .failure(let error) = result, let held = refusals.admit() {
                    log.error("buffer refused a poll", ["device": batch.device, "detail": error.description,
                                                        "similar_lines_held_back": String(held)])
                }
                publisher.notify()
            }
        }, onEvent: { event in
            switch event {
            case .deviceState(let device, let quality, let detail):
                if quality.isGood {
                    log.info("device is good", ["device": device])
                } else {
                    log.warning("device is bad", ["device": device, "quality": quality.code, "detail": detail ?? ""])
                }
            }
        })
        self.collector.withLock { $0 = collector }
        collector.start()
    }

    /// SIGHUP: validate the new config first; a bad one keeps the running one.
    private func reload() {
        notifier.reloading()
        defer { notifier.ready(status: "reloaded") }
        let fresh: UplinkConfiguration
        do {
            fresh = try ConfigLoader.load(path: options.configPath)
        } catch {
            log.error("reload refused: the new config is invalid; the running config stays", ["detail": error.description])
            return
        }
        let old = configuration.withLock { $0 }
        if fresh.mqtt != old.mqtt || fresh.buffer != old.buffer || fresh.agent != old.agent {
            log.warning("reload: agent, mqtt and buffer changes take effect at the next restart; devices are reloaded now")
        }
        collector.withLock { $0 }?.stop()
        configuration.withLock { $0.devices = fresh.devices }
        platform.reload(devices: fresh.devices)
        startCollector(fresh)
        let publisher = self.publisher
        Task { await publisher.devicesChanged(fresh.devices) }
        log.info("reloaded", ["devices": String(fresh.devices.count)])
    }

    private func followBrokerEvents() async {
        var connected = false
        var lastFailure = ""
        for await event in client.events {
            switch event {
            case .connected:
                connected = true
                lastFailure = ""
                log.info("connected to the broker", ["broker": brokerText])
                if platform.usesStatusTopic {
                    _ = try? client.publish(topic: statusTopic, payload: StatusMessage.online(identity), qos: .atLeastOnce, retain: true)
                }
                await publisher.handle(.connected)
            case .connectionFailed(let error):
                // Logged once per distinct reason, not once per retry.
                if error.description != lastFailure {
                    lastFailure = error.description
                    log.error("cannot connect to the broker; retrying with backoff, records keep buffering", ["broker": brokerText, "detail": error.description])
                }
                await publisher.handle(.disconnected(reason: error.description))
            case .disconnected(let reason, _):
                if connected { log.warning("lost the broker; reconnecting, records keep buffering", ["detail": reason]) }
                connected = false
                await publisher.handle(.disconnected(reason: reason))
            case .published(let mid, let reasonCode):
                if reasonCode >= 0x80 {
                    await publisher.handle(.refused(mid: Int32(mid), reason: "broker reason code \(reasonCode)"))
                } else {
                    await publisher.handle(.acknowledged(mid: Int32(mid)))
                }
            case .log(let level, let text):
                if level >= .warning { log.debug("libmosquitto", ["detail": text]) }
            case .message(let message):
                await publisher.received(InboundMessage(topic: message.topic, payload: message.payload))
            case .subscribed, .stopped:
                break
            }
        }
    }

    /// Logs the first drop at once, then at most one summary per 10 s while drops go on (a full
    /// buffer drops on every poll; one line per drop would flood the journal). The counts are exact.
    private func followDrops() async {
        var pending: (records: Int, batches: Int, reasons: Set<String>, seqs: ClosedRange<UInt64>?) = (0, 0, [], nil)
        var lastLog = ContinuousClock.now - .seconds(10)
        for await drop in writer.drops {
            pending.records += drop.records
            pending.batches += drop.batches
            pending.reasons.insert(drop.reason.rawValue)
            if let seqs = drop.seqs {
                pending.seqs = pending.seqs.map { min($0.lowerBound, seqs.lowerBound)...max($0.upperBound, seqs.upperBound) } ?? seqs
            }
            guard ContinuousClock.now - lastLog >= .seconds(10) else { continue }
            lastLog = ContinuousClock.now
            log.warning("buffer dropped records", ["records": String(pending.records), "batches": String(pending.batches),
                                                   "reason": pending.reasons.sorted().joined(separator: ","),
                                                   "seqs": pending.seqs.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "-",
                                                   "detail": "counted in uplink status; at most one line per 10 s"])
            pending = (0, 0, [], nil)
        }
    }

    private func writeStatusPeriodically() async {
        while !Task.isCancelled {
            await writeStatus()
            try? await Task.sleep(for: .seconds(2))
        }
    }

    private func writeStatus() async {
        let stats = await publisher.snapshot()
        let health = collector.withLock { $0 }?.health() ?? []
        let snapshot = StatusSnapshot(
            pid: getpid(), version: UplinkVersion.current, config: options.configPath, startedAt: startedAt,
            updatedAt: Int64(Date().timeIntervalSince1970 * 1000),
            broker: .init(url: brokerText, connected: stats.connected, lastError: stats.lastError, inflight: stats.inflight,
                          publishedMessages: stats.publishedMessages, lastPublishAckAt: stats.lastAckAt),
            devices: health.map { h in
                .init(device: h.device, state: h.state?.code ?? "unknown", detail: h.detail, lastPoll: h.lastPoll, lastGood: h.lastGood,
                      polls: h.polls, failedPolls: h.failedPolls)
            })
        do { try snapshot.write(to: options.stateDirectory) } catch {
            log.warning("cannot write status.json", ["detail": "\(error)"])
        }
    }

    /// Pings systemd's watchdog only while the publisher and the buffer thread answer, so a hung
    /// agent is restarted.
    private func feedWatchdog() async {
        guard let interval = notifier.watchdogInterval else { return }
        while !Task.isCancelled {
            _ = await publisher.snapshot()
            if (try? await writer.stats()) != nil { notifier.watchdog() }
            try? await Task.sleep(for: interval)
        }
    }
}

/// The retained status messages: birth and last will.
enum StatusMessage {
    static func online(_ agent: AgentIdentity) -> [UInt8] { text("online", agent) }
    static func offline(_ agent: AgentIdentity) -> [UInt8] { text("offline", agent) }
    static func text(_ state: String, _ agent: AgentIdentity) -> [UInt8] {
        var out = "{\"state\":\"\(state)\",\"agent\":"
        JSONText.appendString(agent.name, to: &out)
        out += ",\"site\":"
        JSONText.appendString(agent.site, to: &out)
        out += ",\"version\":\"\(UplinkVersion.current)\"}"
        return Array(out.utf8)
    }
}

/// Adapts `MQTTClient` to the publisher's `BrokerLink`.
struct ClientLink: BrokerLink {
    let client: MQTTClient
    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) -> PublishOutcome {
        do {
            let mid = try client.publish(topic: topic, payload: payload, qos: MQTTQoS(rawValue: qos) ?? .atLeastOnce, retain: retain)
            return .accepted(mid: Int32(mid))
        } catch {
            return .refused(error.description)
        }
    }
}
