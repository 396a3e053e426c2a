import Agent
import ArgumentParser
import Buffer
import Foundation
import UplinkConfig

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the backlog, drops, last publish and per-device health of a running (or stopped) agent.",
        discussion: "Reads the state directory only (the buffer through SQLite's WAL readers, and status.json); the daemon is not disturbed. Exits 69 when the directory holds no buffer."
    )

    @Option(name: .customLong("state-dir"), help: "The agent's state directory.")
    var stateDir: String = ProcessInfo.processInfo.environment["STATE_DIRECTORY"] ?? "/var/lib/uplink"

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let directory = URL(fileURLWithPath: stateDir)
        let stats: BufferStats
        do {
            stats = try DiskBuffer.readStats(stateDirectory: directory)
        } catch {
            printError("uplink status: \(error)")
            throw ExitCode(ExitStatus.unavailable)
        }
        let snapshot = try? StatusSnapshot.read(from: directory)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if json {
            print(renderJSON(stats, snapshot, now: now))
        } else {
            print(renderText(stats, snapshot, now: now))
        }
    }

    /// The `--json` shape (keys without a value, such as `last_publish_at` before any publish, are left out).
    struct Report: Encodable {
        struct Backlog: Encodable {
            var records: Int64, bytes: Int64, maxBytes: Int64, oldestAgeMs: Int64?, fileBytes: Int64
        }
        struct Dropped: Encodable {
            var total, overflow, expired, diskFull, queueOverflow, writeError, corrupt: UInt64
        }
        var stateDir: String
        var running: Bool
        var pid: Int32?
        var updatedAt: Int64?
        var backlog: Backlog
        var dropped: Dropped
        var nextSeq: UInt64
        var lastAckedSeq: UInt64
        var ackedRecords: UInt64
        var lastPublishAt: Int64?
        var broker: StatusSnapshot.Broker?
        var devices: [StatusSnapshot.DeviceStatus]
    }

    func renderJSON(_ stats: BufferStats, _ snapshot: StatusSnapshot?, now: Int64) -> String {
        let d = stats.dropped
        let report = Report(
            stateDir: stateDir, running: snapshot?.writerIsAlive ?? false, pid: snapshot?.pid, updatedAt: snapshot?.updatedAt,
            backlog: .init(records: stats.backlogRecords, bytes: stats.backlogBytes, maxBytes: stats.maxBytes,
                           oldestAgeMs: stats.oldestAge(now: now), fileBytes: stats.fileBytes),
            dropped: .init(total: d.total, overflow: d.overflow, expired: d.expired, diskFull: d.diskFull,
                           queueOverflow: d.queueOverflow, writeError: d.writeError, corrupt: d.corrupt),
            nextSeq: stats.nextSeq, lastAckedSeq: stats.lastAckedSeq, ackedRecords: stats.ackedRecords, lastPublishAt: stats.lastAckAt,
            broker: snapshot?.broker, devices: snapshot?.devices ?? [])
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(report)) ?? Data(), as: UTF8.self)
    }

    func renderText(_ stats: BufferStats, _ snapshot: StatusSnapshot?, now: Int64) -> String {
        var lines: [String] = []
        if let snapshot {
            let state = snapshot.writerIsAlive ? "running (pid \(snapshot.pid))" : "not running (last pid \(snapshot.pid))"
            lines.append("agent:     \(state), status updated \(age(now - snapshot.updatedAt)) ago")
            let broker = snapshot.broker
            lines.append("broker:    \(broker.url) \(broker.connected ? "connected" : "disconnected")\(broker.lastError.map { " (\($0))" } ?? ""), \(broker.inflight) in flight")
        } else {
            lines.append("agent:     no status.json (the daemon has not run here, or not yet written it)")
        }
        let oldest = stats.oldestAge(now: now).map { "oldest \(age($0))" } ?? "empty"
        lines.append("backlog:   \(stats.backlogRecords) records, \(bytes(stats.backlogBytes)) of \(bytes(stats.maxBytes)), \(oldest)")
        let d = stats.dropped
        lines.append("dropped:   \(d.total) records (overflow \(d.overflow), expired \(d.expired), disk full \(d.diskFull), queue \(d.queueOverflow), write errors \(d.writeError), corrupt \(d.corrupt))")
        lines.append("published: \(stats.ackedRecords) records acknowledged, last \(stats.lastAckAt.map { "\(age(now - $0)) ago" } ?? "never"), next seq \(stats.nextSeq)")
        if let snapshot, !snapshot.devices.isEmpty {
            var rows = [["device", "state", "last poll", "last good", "polls", "failed", "detail"]]
            for device in snapshot.devices {
                rows.append([device.device, device.state, device.lastPoll.map { age(now - $0) + " ago" } ?? "-",
                             device.lastGood.map { age(now - $0) + " ago" } ?? "never", String(device.polls), String(device.failedPolls), device.detail ?? ""])
            }
            lines.append("devices:")
            lines += PlanReport.table(rows).map { "  " + $0 }
        }
        return lines.joined(separator: "\n")
    }

    func age(_ ms: Int64) -> String {
        let ms = max(0, ms)
        if ms < 1000 { return "\(ms)ms" }
        if ms < 120_000 { return String(format: "%.1fs", Double(ms) / 1000) }
        if ms < 7_200_000 { return "\(ms / 60_000)m" }
        return "\(ms / 3_600_000)h"
    }

    func bytes(_ n: Int64) -> String {
        if n >= 1 << 30 { return String(format: "%.1f GiB", Double(n) / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MiB", Double(n) / Double(1 << 20)) }
        if n >= 1 << 10 { return String(format: "%.1f KiB", Double(n) / Double(1 << 10)) }
        return "\(n) B"
    }
}
