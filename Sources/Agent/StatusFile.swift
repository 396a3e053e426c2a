import Foundation

/// What the daemon tells `uplink status` through `status.json` in the state directory, rewritten
/// atomically (write + rename) every few seconds, so a reader never sees half a file and never
/// disturbs the daemon.
public struct StatusSnapshot: Codable, Sendable, Equatable {
    public struct Broker: Codable, Sendable, Equatable {
        public var url: String
        public var connected: Bool
        public var lastError: String?
        public var inflight: Int
        public var publishedMessages: UInt64
        public var lastPublishAckAt: Int64?
    }

    public struct DeviceStatus: Codable, Sendable, Equatable {
        public var device: String
        public var state: String
        public var detail: String?
        public var lastPoll: Int64?
        public var lastGood: Int64?
        public var polls: Int
        public var failedPolls: Int
    }

    public var pid: Int32
    public var version: String
    public var config: String
    public var startedAt: Int64
    public var updatedAt: Int64
    public var broker: Broker
    public var devices: [DeviceStatus]

    public static let fileName = "status.json"

    public func write(to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(self)
        let target = directory.appendingPathComponent(Self.fileName)
        let temporary = directory.appendingPathComponent(".\(Self.fileName).\(pid).tmp")
        do {
            try data.write(to: temporary)
            if rename(temporary.path, target.path) != 0 {
                throw CocoaError(.fileWriteUnknown)
            }
        } catch {
            // A full disk leaves a partial temporary file behind: do not let it take more space.
            unlink(temporary.path)
            throw error
        }
    }

    public static func read(from directory: URL) throws -> StatusSnapshot {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(StatusSnapshot.self, from: Data(contentsOf: directory.appendingPathComponent(fileName)))
    }

    /// Whether the process that wrote the snapshot is still running.
    public var writerIsAlive: Bool { kill(pid, 0) == 0 || errno == EPERM }
}

public enum UplinkVersion {
    public static let current = "0.1.0"
}
