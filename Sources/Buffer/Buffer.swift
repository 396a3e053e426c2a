/// Buffer: the durable, bounded store-and-forward queue between the pollers and the publisher.
///
/// Its job: take `PollBatch`es from the pollers, give every record a per-agent `seq`, keep them on
/// disk (SQLite in WAL mode, `synchronous=FULL`, one file in the state directory) until the broker
/// has acknowledged them, and hand them to the publisher oldest first, one `PollBatch` at a time.
///
/// Guarantees:
/// - A record is accepted only once its transaction is committed and fsynced; `append` returns
///   (or the `submit` completion fires) after that, never before.
/// - `seq` is assigned at commit, strictly increasing, persisted with the records in the same
///   transaction, and never reused: not after acknowledgements, drops, restarts, `kill -9`, a
///   power cut, or recovery from a damaged file. A gap in `seq` means a counted drop.
/// - Records leave the disk only by `acknowledge` (the broker acked them) or by the stated drop
///   policy (size bound, age bound, disk full), and every drop is counted in a persisted counter
///   and reported to the caller as a `BufferDrop`.
/// - After a restart every un-acknowledged record is handed out again, in `seq` order, flagged
///   `replayed`.
/// - A full buffer never blocks a producer and never crashes the agent; a damaged file is moved
///   aside, what was readable is kept, and the caller gets a `RecoveryReport` to log.
///
/// Two faces: `DiskBuffer` is the blocking, thread-safe core (every call may wait for an fsync:
/// call it from a dedicated thread, never from the Swift cooperative pool); `BufferWriter` runs a
/// `DiskBuffer` on its own thread, group-commits what many producers submit, and offers `async`
/// methods for the publisher. See docs/buffer.md for the schema, the PRAGMAs and the policies.
import UplinkCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Options

/// What to do when the size bound (`BufferOptions.maxBytes`) is reached.
public enum OverflowPolicy: String, Sendable, Hashable, CaseIterable {
    /// Delete the oldest whole batches that are not in flight (then in-flight ones if that is not
    /// enough) to make room. Counted as `DropReason.overflow`. The default: fresh data matters most.
    case dropOldest = "drop-oldest"
    /// Keep what is stored; discard each incoming batch that does not fit. Counted as
    /// `DropReason.overflow`.
    case dropNewest = "drop-newest"
    /// Refuse the whole `append` call with `BufferError.full`; nothing of it is stored and the
    /// caller still owns the data. Counted in `DropCounters.rejected`.
    case reject
}

/// How a buffer is bounded and checked.
public struct BufferOptions: Sendable {
    /// Upper bound of the records' accounted size (see `BufferStats.backlogBytes`). The file on disk
    /// is typically 1.3-2x this, plus the WAL (bounded by `journal_size_limit`, 8 MiB).
    public var maxBytes: Int64
    /// Records committed longer ago than this are deleted (counted as `.expired`); nil keeps them
    /// until acknowledged or pushed out by the size bound.
    public var maxAge: Duration?
    public var overflowPolicy: OverflowPolicy
    /// A hard cap on the database file (SQLite `max_page_count`); reaching it is handled exactly
    /// like a full disk. nil means only the disk's own size limits the file.
    public var maxFileBytes: Int64?
    /// Run `PRAGMA quick_check` at open (O(file size); catches damaged pages before they are read).
    public var verifyOnOpen: Bool
    /// The wall clock in UTC milliseconds; replaceable for tests of the age bound.
    public var clock: @Sendable () -> Int64

    public init(maxBytes: Int64 = 256 << 20, maxAge: Duration? = .seconds(7 * 86_400),
                overflowPolicy: OverflowPolicy = .dropOldest, maxFileBytes: Int64? = nil,
                verifyOnOpen: Bool = true, clock: @escaping @Sendable () -> Int64 = systemMillis) {
        self.maxBytes = maxBytes
        self.maxAge = maxAge
        self.overflowPolicy = overflowPolicy
        self.maxFileBytes = maxFileBytes
        self.verifyOnOpen = verifyOnOpen
        self.clock = clock
    }
}

/// The current UTC time in milliseconds.
@Sendable public func systemMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

// MARK: - Results

/// Why records left the buffer without an acknowledgement.
public enum DropReason: String, Sendable, Hashable, CaseIterable {
    /// The size bound was reached (drop-oldest deleted old records, or drop-newest discarded new ones).
    case overflow
    /// Older than `BufferOptions.maxAge`.
    case expired
    /// The disk (or `maxFileBytes`) was full and nothing could be freed in time.
    case diskFull = "disk-full"
    /// `BufferWriter`'s in-memory queue was full because commits could not keep up (disk stalled).
    case queueOverflow = "queue-overflow"
    /// The commit failed with an I/O error (disk failing).
    case writeError = "write-error"
    /// A stored row could not be decoded; it was removed so the queue keeps moving.
    case corrupt
}

/// One drop, for the caller to log.
public struct BufferDrop: Sendable, Hashable, CustomStringConvertible {
    public var reason: DropReason
    public var records: Int
    public var batches: Int
    /// First and last `seq` of the dropped records when they had been committed: the platform will
    /// see this gap. nil when the records were never committed (no `seq` was spent on them).
    public var seqs: ClosedRange<UInt64>?

    public init(reason: DropReason, records: Int, batches: Int, seqs: ClosedRange<UInt64>?) {
        self.reason = reason
        self.records = records
        self.batches = batches
        self.seqs = seqs
    }

    public var description: String {
        let range = seqs.map { " seq \($0.lowerBound)...\($0.upperBound)" } ?? " (never committed)"
        return "dropped \(records) records in \(batches) batches, reason \(reason.rawValue),\(range)"
    }
}

/// What an `append` did.
public struct AppendResult: Sendable {
    /// The stored batches in input order, `seq` set on every record. Batches that were not stored
    /// (drop-newest, disk full) are absent and listed in `drops`; empty batches are ignored.
    public var committed: [PollBatch]
    /// Every drop made while committing: old records deleted to make room or expired, and incoming
    /// batches that could not be stored.
    public var drops: [BufferDrop]

    public init(committed: [PollBatch], drops: [BufferDrop]) {
        self.committed = committed
        self.drops = drops
    }
}

/// A batch handed to the publisher: one device's records from one poll, oldest first.
public struct BufferedBatch: Sendable, Hashable {
    /// The records, with `seq` set, in `seq` order.
    public var batch: PollBatch
    /// First and last `seq` of the records; `acknowledge(batch.seqs)` removes exactly this batch.
    public var seqs: ClosedRange<UInt64>
    /// When the batch was committed (UTC ms).
    public var committedAt: Int64
    /// Handed out before (previous run, or before `rewind()`): the platform may already have it.
    public var replayed: Bool

    public init(batch: PollBatch, seqs: ClosedRange<UInt64>, committedAt: Int64, replayed: Bool) {
        self.batch = batch
        self.seqs = seqs
        self.committedAt = committedAt
        self.replayed = replayed
    }

    /// Whether the publisher should mark this batch as late: replayed, or committed more than
    /// `threshold` before `now`.
    public func isLate(now: Int64, threshold: Duration) -> Bool {
        replayed || now - committedAt > threshold.milliseconds
    }
}

/// Persisted drop counters (never reset; they survive restarts and recovery when readable).
public struct DropCounters: Sendable, Hashable {
    public var overflow: UInt64 = 0
    public var expired: UInt64 = 0
    public var diskFull: UInt64 = 0
    public var queueOverflow: UInt64 = 0
    public var writeError: UInt64 = 0
    public var corrupt: UInt64 = 0
    /// Records refused by the `.reject` policy: not stored, the caller kept them. Not in `total`.
    public var rejected: UInt64 = 0

    public init() {}

    /// Records lost by the buffer, all reasons (not counting `rejected`).
    public var total: UInt64 { overflow + expired + diskFull + queueOverflow + writeError + corrupt }

    public subscript(reason: DropReason) -> UInt64 {
        get {
            switch reason {
            case .overflow: overflow
            case .expired: expired
            case .diskFull: diskFull
            case .queueOverflow: queueOverflow
            case .writeError: writeError
            case .corrupt: corrupt
            }
        }
        set {
            switch reason {
            case .overflow: overflow = newValue
            case .expired: expired = newValue
            case .diskFull: diskFull = newValue
            case .queueOverflow: queueOverflow = newValue
            case .writeError: writeError = newValue
            case .corrupt: corrupt = newValue
            }
        }
    }
}

/// A snapshot of the buffer, for `uplink status`, health and metrics.
public struct BufferStats: Sendable, Hashable {
    /// Records on disk not yet acknowledged (including those in flight).
    public var backlogRecords: Int64
    /// Their accounted size in bytes (the bound `maxBytes` applies to this).
    public var backlogBytes: Int64
    /// The limit the writer runs with (0 if unknown).
    public var maxBytes: Int64
    /// Commit time (UTC ms) of the oldest record on disk; nil when empty.
    public var oldestCommittedAt: Int64?
    /// The `seq` the next committed record will get.
    public var nextSeq: UInt64
    /// Highest `seq` removed by an acknowledgement; 0 if none yet.
    public var lastAckedSeq: UInt64
    /// When the last acknowledgement was committed (UTC ms); nil if none yet.
    public var lastAckAt: Int64?
    /// Records acknowledged over the buffer's life.
    public var ackedRecords: UInt64
    public var dropped: DropCounters
    /// Size of the database file plus its WAL on disk.
    public var fileBytes: Int64

    public init(backlogRecords: Int64 = 0, backlogBytes: Int64 = 0, maxBytes: Int64 = 0,
                oldestCommittedAt: Int64? = nil, nextSeq: UInt64 = 1, lastAckedSeq: UInt64 = 0,
                lastAckAt: Int64? = nil, ackedRecords: UInt64 = 0, dropped: DropCounters = DropCounters(),
                fileBytes: Int64 = 0) {
        self.backlogRecords = backlogRecords
        self.backlogBytes = backlogBytes
        self.maxBytes = maxBytes
        self.oldestCommittedAt = oldestCommittedAt
        self.nextSeq = nextSeq
        self.lastAckedSeq = lastAckedSeq
        self.lastAckAt = lastAckAt
        self.ackedRecords = ackedRecords
        self.dropped = dropped
        self.fileBytes = fileBytes
    }

    /// Age of the oldest record in milliseconds at `now`; nil when empty.
    public func oldestAge(now: Int64 = systemMillis()) -> Int64? {
        oldestCommittedAt.map { max(0, now - $0) }
    }
}

/// What start-up recovery did with a damaged buffer file. Log it: data may have been lost.
public struct RecoveryReport: Sendable, Hashable, CustomStringConvertible {
    /// Why the file was not usable (SQLite's message or the failed check).
    public var reason: String
    /// Where the damaged file was moved (its `-wal` next to it, if there was one).
    public var movedAsideTo: String
    /// Records copied into the fresh file (with their original `seq`).
    public var salvagedRecords: Int
    /// Whether the `seq` counter and drop counters could be read from the damaged file. If not, the
    /// next `seq` is raised to `max(salvaged + 1, now_ms * 1000)` so no earlier `seq` is reused.
    public var countersRecovered: Bool
    /// The `seq` the fresh file continues with.
    public var nextSeq: UInt64

    public var description: String {
        "buffer file was damaged (\(reason)); moved aside to \(movedAsideTo); salvaged \(salvagedRecords) records; "
            + (countersRecovered ? "counters recovered" : "counters lost, seq raised")
            + "; continuing at seq \(nextSeq)"
    }
}

// MARK: - Errors

/// Errors of the buffer. Each says what to do about it.
public enum BufferError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The state directory or the database could not be opened or created.
    case cannotOpen(path: String, reason: String)
    /// Another process (or another `DiskBuffer` in this one) holds this state directory.
    case inUse(path: String)
    /// `.reject` policy: the call would exceed `maxBytes`; nothing was stored.
    case full(neededBytes: Int64, freeBytes: Int64)
    /// The disk (or `maxFileBytes`) is full and nothing could be freed; nothing was stored.
    case diskFull(String)
    /// SQLite reported an I/O or other unexpected error; nothing of the call was stored.
    case io(code: Int32, message: String)
    /// `readStats`: no buffer exists in that directory yet.
    case notFound(path: String)
    /// The buffer was closed.
    case closed

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            "cannot open the buffer at \(path): \(reason); check that the state directory exists and is writable by this user"
        case .inUse(let path):
            "the buffer at \(path) is in use by another process; run one agent per state directory"
        case .full(let needed, let free):
            "the buffer is full (needed \(needed) bytes, \(free) free) and the policy is reject; retry later or raise buffer.max_bytes"
        case .diskFull(let message):
            "the disk holding the buffer is full (\(message)); free space or lower buffer.max_bytes"
        case .io(let code, let message):
            "buffer I/O error \(code): \(message); check the disk and its free space"
        case .notFound(let path):
            "no buffer at \(path); the agent has not run with this state directory yet"
        case .closed:
            "the buffer is closed"
        }
    }
}

extension Duration {
    /// Whole milliseconds (rounded down).
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
