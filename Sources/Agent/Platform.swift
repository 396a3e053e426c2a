// Issue 7 wiring: the payload profile of `mqtt.payload`, report by exception before the buffer,
// the last-value cache for births, the per-connection will (Sparkplug bdSeq), the ThingsBoard
// token as username, and commands from the platform to the collector.
import Buffer
import Collector
import Foundation
import MQTT
import Publisher
import Synchronization
import UplinkConfig
import UplinkCore

/// The platform side of the agent, shared by the poll threads, the publisher and the MQTT events.
final class PlatformRuntime: Sendable {
    let kind: PayloadKind
    /// The newest reading of every signal (before report by exception): births, attributes, `get`.
    let lastValues = LastValueCache()
    /// Sparkplug's birth/death sequence, persisted in the state directory; nil for other profiles.
    let bdSeq: BirthDeathSequence?
    private let filter: Mutex<ExceptionFilter>
    private let sparkplug: SparkplugSettings?

    init(config: UplinkConfiguration, mqtt: MQTTSettings, stateDirectory: URL) {
        kind = PayloadKind(rawValue: mqtt.payload) ?? .json
        filter = Mutex(ExceptionFilter(devices: config.devices))
        sparkplug = kind == .sparkplug
            ? (mqtt.sparkplug ?? SparkplugSettings(groupID: config.agent.site, edgeNodeID: config.agent.name)) : nil
        bdSeq = kind == .sparkplug ? BirthDeathSequence(stateDirectory: stateDirectory) : nil
    }

    /// Uplink's own retained status topic (birth `online`, will `offline`) belongs to the JSON
    /// profile; ThingsBoard and Sparkplug have their own ways of saying it.
    var usesStatusTopic: Bool { kind == .json }

    /// The session profile for the publisher.
    func makeSession(config: UplinkConfiguration, mqtt: MQTTSettings, identity: AgentIdentity) -> any SessionProfile {
        switch kind {
        case .json:
            return PerBatchSession(JSONPayloadProfile(), context: PayloadContext(
                agent: identity.name, site: identity.site, topicPrefix: mqtt.topicPrefix, dataTopic: mqtt.dataTopic,
                maxMessageBytes: mqtt.maxMessageBytes, lateAfterMs: config.buffer.lateAfterMs))
        case .thingsboard:
            return ThingsBoardProfile(devices: config.devices, maxMessageBytes: mqtt.maxMessageBytes, lastValues: lastValues)
        case .sparkplug:
            return SparkplugProfile(settings: sparkplug ?? SparkplugSettings(groupID: identity.site, edgeNodeID: identity.name),
                                    devices: config.devices, bdSeq: bdSeq ?? BirthDeathSequence(stateDirectory: nil),
                                    lastValues: lastValues, maxMessageBytes: mqtt.maxMessageBytes, lateAfterMs: config.buffer.lateAfterMs)
        }
    }

    /// What the MQTT connections' wills are.
    func willPolicy(statusWill: MQTTWill?) -> BrokerConnection.WillPolicy {
        switch kind {
        case .json:
            return .fixed(statusWill)
        case .thingsboard:
            // ThingsBoard sees the gateway go with its session; a will on another topic would be refused.
            return .fixed(nil)
        case .sparkplug:
            guard let bdSeq, let sparkplug else { return .fixed(nil) }
            let topic = "\(SparkplugProfile.namespace)/\(sparkplug.groupID)/NDEATH/\(sparkplug.edgeNodeID)"
            // A new bdSeq for every new connection, persisted before the CONNECT that carries it.
            return .perConnection {
                let value = bdSeq.advance()
                return MQTTWill(topic: topic, payload: SparkplugProfile.deathPayload(bdSeq: value, now: Int64(Date().timeIntervalSince1970 * 1000)),
                                qos: .atLeastOnce, retain: false)
            }
        }
    }

    /// A poll on its way to the buffer: remembered as the newest values, then reduced to what report
    /// by exception lets through. nil when nothing is left to store.
    func admit(_ batch: PollBatch) -> PollBatch? {
        if kind != .json { lastValues.update(batch) }
        let kept = filter.withLock { $0.filter(batch) }
        return kept.records.isEmpty ? nil : kept
    }

    /// The devices were reloaded: report by exception starts over (every signal is sent once).
    func reload(devices: [Device]) {
        filter.withLock { $0 = ExceptionFilter(devices: devices) }
        lastValues.keep(only: Set(devices.map(\.name)))
    }

    /// The MQTT username: `username`, or read from `username_file` / `username_env` (a ThingsBoard
    /// access token). Never logged.
    static func username(_ mqtt: MQTTSettings) throws(AgentError) -> String? {
        switch mqtt.usernameSource {
        case .file(let path)?:
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw .password("mqtt.username_file: cannot read \(path); expected a readable file holding the username (the ThingsBoard access token)")
            }
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !value.isEmpty else { throw .password("mqtt.username_file: \(path) is empty; expected the username (the ThingsBoard access token)") }
            return value
        case .environment(let name)?:
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw .password("mqtt.username_env: \(SecretText.variableName(name)) is not set; expected it to hold the username (the ThingsBoard access token)")
            }
            return value
        case nil:
            return mqtt.username
        }
    }

    /// Warnings about the username file's permissions (it is a secret for ThingsBoard).
    static func warnings(_ mqtt: MQTTSettings) -> [String] {
        guard case .file(let path)? = mqtt.usernameSource else { return [] }
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & 0o004 != 0 else { return [] }
        return ["the MQTT username file \(path) (an access token) is readable by every user; expected chmod 0600 or 0640"]
    }

    /// Runs a checked write on the collector and reports the outcome to the publisher.
    static func execute(_ request: WriteRequest, collector: Collector?, publisher: Publisher) {
        guard let collector else {
            Task { await publisher.writeFinished(request, outcome: .failed("the agent is not polling (starting or reloading); try again")) }
            return
        }
        collector.write(device: request.device, operation: request.operation) { outcome in
            Task { await publisher.writeFinished(request, outcome: outcome) }
        }
    }

    /// One log line per write or refusal, with its origin and result.
    static func log(_ entry: CommandLog, to log: Log) {
        if entry.result == "written" || entry.result == "rebirth" {
            log.info("command", ["origin": entry.origin, "device": entry.device, "signal": entry.signal, "value": entry.value, "result": entry.result])
        } else {
            log.warning("command", ["origin": entry.origin, "device": entry.device, "signal": entry.signal, "value": entry.value, "result": entry.result])
        }
    }
}

/// The agent's MQTT connection. With a per-connection will (Sparkplug's NDEATH carries the bdSeq of
/// its connection) a lost connection is not resumed by the same client: a new client is made with
/// the next will, and its events continue on the same stream. libmosquitto sends the will set at
/// creation with every reconnect, hence the new client.
final class BrokerConnection: BrokerLink, Sendable {
    enum WillPolicy: Sendable {
        case fixed(MQTTWill?)
        /// Called before each new connection for its will.
        case perConnection(@Sendable () -> MQTTWill)
    }

    let events: AsyncStream<MQTTEvent>
    private let continuation: AsyncStream<MQTTEvent>.Continuation
    private let base: MQTTOptions
    private let policy: WillPolicy
    private let state: Mutex<State>

    private struct State {
        var client: MQTTClient
        var subscriptions: [(String, MQTTQoS)] = []
        var stopped = false
    }

    init(options: MQTTOptions, will: WillPolicy) throws(MQTTError) {
        var first = options
        switch will {
        case .fixed(let fixed): first.will = fixed
        case .perConnection(let next): first.will = next()
        }
        let client = try MQTTClient(first)
        base = options
        policy = will
        state = Mutex(State(client: client))
        (events, continuation) = AsyncStream.makeStream(of: MQTTEvent.self)
    }

    private var client: MQTTClient { state.withLock { $0.client } }

    func start() throws(MQTTError) {
        let current = client
        try current.start()
        forward(current)
    }

    /// Passes the client's events on; after a lost connection with a per-connection will, hands
    /// over to a new client.
    private func forward(_ source: MQTTClient) {
        Task { [self] in
            for await event in source.events {
                switch event {
                case .stopped:
                    continue
                case .disconnected:
                    continuation.yield(event)
                    if case .perConnection = policy {
                        await replace(source)
                        return
                    }
                default:
                    continuation.yield(event)
                }
            }
        }
    }

    private func replace(_ old: MQTTClient) async {
        await old.disconnect()
        guard case .perConnection(let next) = policy else { return }
        var options = base
        options.will = next()
        do {
            let fresh = try MQTTClient(options)
            let subscriptions = state.withLock { $0.subscriptions }
            for (filter, qos) in subscriptions { _ = try? fresh.subscribe(filter, qos: qos) }
            let installed = state.withLock { s -> Bool in
                guard !s.stopped else { return false }
                s.client = fresh
                return true
            }
            guard installed else { return }
            try fresh.start()
            forward(fresh)
        } catch {
            continuation.yield(.connectionFailed(error))
        }
    }

    @discardableResult
    func publish(topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce, retain: Bool = false) throws(MQTTError) -> MQTTMessageID {
        try client.publish(topic: topic, payload: payload, qos: qos, retain: retain)
    }

    /// Subscribes now and on every later client.
    func subscribe(_ filter: String, qos: MQTTQoS) throws(MQTTError) {
        state.withLock { $0.subscriptions.append((filter, qos)) }
        _ = try client.subscribe(filter, qos: qos)
    }

    /// Clean DISCONNECT (no will) and the end of `events`.
    func disconnect() async {
        let current = state.withLock { s -> MQTTClient in
            s.stopped = true
            return s.client
        }
        await current.disconnect()
        continuation.yield(.stopped)
        continuation.finish()
    }

    // BrokerLink, for the publisher.
    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) -> PublishOutcome {
        do {
            let mid = try client.publish(topic: topic, payload: payload, qos: MQTTQoS(rawValue: qos) ?? .atLeastOnce, retain: retain)
            return .accepted(mid: Int32(mid))
        } catch {
            return .refused(error.description)
        }
    }
}
