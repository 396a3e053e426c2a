// DiskBuffer: the blocking, thread-safe core of the buffer. Every method runs under one lock and
// may wait for an fsync: call it from a dedicated thread (BufferWriter does), not from the Swift
// cooperative pool.
import CSQLite
import Foundation
import Synchronization
import UplinkCore

/// The durable FIFO of records in one state directory (see the module header for its guarantees).
///
/// Blocking and thread-safe: calls are serialized by an internal lock, and writes wait for the
/// commit's fsync (milliseconds; longer on a slow SD card). Use it from dedicated threads, or
/// through `BufferWriter`, which owns a thread and group-commits for many producers.
///
/// One process at a time: the state directory is locked (`flock` on `buffer.lock`) while open.
public final class DiskBuffer: Sendable {
    public let stateDirectory: URL
    public let options: BufferOptions
    /// Set when the file was damaged at start-up and was rebuilt; log it.
    public let recovery: RecoveryReport?
    private let core: Mutex<Core>

    /// Opens the buffer in `stateDirectory` (created if missing), recovering a damaged file.
    /// Blocking: may run `quick_check` over the whole file and replay the WAL.
    public init(stateDirectory: URL, options: BufferOptions = BufferOptions()) throws(BufferError) {
        let (core, report) = try Core.open(directory: stateDirectory, options: options)
        self.stateDirectory = stateDirectory
        self.options = options
        self.recovery = report
        self.core = Mutex(core)
    }

    /// Commits `batches` in one transaction (one fsync), assigning `seq`s, and applies the size
    /// and age bounds. Returns after the commit. With the `.reject` policy it throws
    /// `BufferError.full` and stores nothing if the batches do not fit.
    @discardableResult
    public func append(_ batches: [PollBatch]) throws(BufferError) -> AppendResult {
        let outcome = core.withLock { $0.write(submissions: [batches], acks: []) }
        switch outcome.results.first {
        case .stored(let committed): return AppendResult(committed: committed, drops: outcome.drops)
        case .rejected(let error), .failed(let error): throw error
        case .none: return AppendResult(committed: [], drops: outcome.drops)
        }
    }

    /// The next batches not yet handed out, oldest first, at most `max` batches (and at most about
    /// `maxRecords` records, never splitting a batch). Advances the hand-out cursor past them, so
    /// they are not returned again until `rewind()` or a restart.
    public func nextBatches(max: Int, maxRecords: Int = .max) throws(BufferError) -> [BufferedBatch] {
        try core.withLock { (core) throws(BufferError) -> [BufferedBatch] in
            try core.next(maxBatches: max, maxRecords: maxRecords)
        }
    }

    /// Deletes the records in `seqs` (the broker acknowledged them) in one commit. Returns the
    /// number of records removed (0 for seqs already gone: acks are idempotent).
    @discardableResult
    public func acknowledge(_ seqs: ClosedRange<UInt64>) throws(BufferError) -> Int {
        try acknowledge([seqs])
    }

    /// Deletes the records in all `ranges` in one commit.
    @discardableResult
    public func acknowledge(_ ranges: [ClosedRange<UInt64>]) throws(BufferError) -> Int {
        let outcome = core.withLock { $0.write(submissions: [], acks: ranges) }
        if let error = outcome.ackError { throw error }
        return outcome.ackedRecords
    }

    /// Deletes the listed records in one commit.
    @discardableResult
    public func acknowledge(seqs: [UInt64]) throws(BufferError) -> Int {
        try acknowledge(Self.ranges(of: seqs))
    }

    /// Forgets what was handed out: the next `nextBatches` starts again at the oldest
    /// un-acknowledged record, and everything handed out before is flagged `replayed`. Call it
    /// when the publisher lost its in-flight messages (new MQTT session).
    public func rewind() {
        core.withLock { $0.rewind() }
    }

    /// Applies the age bound now (it is also applied on every write and at open).
    @discardableResult
    public func pruneExpired() throws(BufferError) -> [BufferDrop] {
        let outcome = core.withLock { $0.write(submissions: [], acks: []) }
        if let error = outcome.ackError { throw error }
        return outcome.drops
    }

    /// Current statistics of this open buffer.
    public func stats() throws(BufferError) -> BufferStats {
        try core.withLock { (core) throws(BufferError) -> BufferStats in try core.stats() }
    }

    /// Closes the database (checkpointing the WAL) and releases the directory lock. Later calls
    /// throw `BufferError.closed`. Safe to call twice.
    public func close() {
        core.withLock { $0.close() }
    }

    /// Reads the statistics of the buffer in `stateDirectory` without disturbing a writer that
    /// may be running in another process (a read-only WAL reader; takes no lock). For `uplink status`.
    public static func readStats(stateDirectory: URL) throws(BufferError) -> BufferStats {
        try Core.readStats(directory: stateDirectory)
    }

    /// Internal entry for `BufferWriter`: one commit for many producers' submissions and acks.
    func write(submissions: [[PollBatch]], acks: [ClosedRange<UInt64>],
               uncommittedDrops: [DropReason: Int] = [:]) -> WriteOutcome {
        core.withLock { $0.write(submissions: submissions, acks: acks, uncommittedDrops: uncommittedDrops) }
    }

    /// Splits `ranges` into ranges of at most `records` seqs each.
    static func pieces(of ranges: [ClosedRange<UInt64>], records: Int) -> [ClosedRange<UInt64>] {
        let step = UInt64(max(1, records))
        var out: [ClosedRange<UInt64>] = []
        for range in ranges {
            var low = range.lowerBound
            while true {
                let high = range.upperBound - low >= step ? low + step - 1 : range.upperBound
                out.append(low...high)
                if high == range.upperBound { break }
                low = high + 1
            }
        }
        return out
    }

    /// Collapses a list of seqs into sorted, merged ranges.
    static func ranges(of seqs: [UInt64]) -> [ClosedRange<UInt64>] {
        var out: [ClosedRange<UInt64>] = []
        for seq in seqs.sorted() {
            if let last = out.last, last.upperBound == seq || last.upperBound &+ 1 == seq {
                out[out.count - 1] = last.lowerBound...seq
            } else {
                out.append(seq...seq)
            }
        }
        return out
    }
}

/// What happened to one producer's submission in a commit.
enum SubmissionResult: Sendable {
    /// Stored: the committed batches (those dropped by drop-newest or disk full are absent).
    case stored([PollBatch])
    /// The `.reject` policy refused it (the caller keeps the data).
    case rejected(BufferError)
    /// The commit failed; nothing of it was stored (counted as a drop).
    case failed(BufferError)
}

struct WriteOutcome: Sendable {
    var results: [SubmissionResult] = []
    var drops: [BufferDrop] = []
    var ackedRecords = 0
    /// Set when the acknowledgements (or the prune) of this write could not be committed.
    var ackError: BufferError?
}

// MARK: - Core

/// Everything behind the lock: the connection, its statements and the in-memory state.
final class Core {
    let db: SQLiteDatabase
    let options: BufferOptions
    let directory: URL
    private var lockFD: Int32
    private var meta: Meta
    /// Highest seq handed out by `next` (0: nothing yet).
    private var cursor: UInt64 = 0
    /// Records with seq <= this were (possibly) handed out before: flagged `replayed`.
    private var replayBoundary: UInt64
    /// Rows that failed to decode, deleted (and counted) by the next write.
    private var pendingCorrupt: [UInt64] = []
    /// `meta` holds counts not yet persisted (drops counted while a commit failed).
    private var metaDirty = false
    private var closed = false
    /// Space given back to the file system when the disk is full (see `DiskReserve`).
    private let reserve: DiskReserve
    /// Set when the disk filled up: the backlog may not grow past this many accounted bytes (new
    /// records then push out the oldest, counted `disk-full`). Lifted once the disk has room again.
    private var diskCap: Int64?

    private let insertStmt: SQLiteStatement
    private let upsertMetaStmt: SQLiteStatement
    private let deleteRangeStmt: SQLiteStatement
    private let scanStmt: SQLiteStatement
    private let readStmt: SQLiteStatement
    private let oldestStmt: SQLiteStatement

    private init(db: SQLiteDatabase, options: BufferOptions, directory: URL, lockFD: Int32, meta: Meta,
                 reserve: DiskReserve) throws(SQLiteError) {
        insertStmt = try db.prepare(Layout.insertRecord, persistent: true)
        upsertMetaStmt = try db.prepare(Layout.upsertMeta, persistent: true)
        deleteRangeStmt = try db.prepare("DELETE FROM record WHERE seq BETWEEN ?1 AND ?2 RETURNING seq, size", persistent: true)
        scanStmt = try db.prepare("SELECT seq, batch, size, committed FROM record WHERE seq > ?1 ORDER BY seq", persistent: true)
        readStmt = try db.prepare("SELECT \(Layout.recordColumns) FROM record WHERE seq > ?1 ORDER BY seq", persistent: true)
        oldestStmt = try db.prepare("SELECT committed FROM record ORDER BY seq LIMIT 1", persistent: true)
        self.db = db
        self.options = options
        self.directory = directory
        self.lockFD = lockFD
        self.meta = meta
        self.replayBoundary = meta.nextSeq &- 1
        self.reserve = reserve
        // Keep the WAL smaller than the reserve, so that freeing the reserve always lets a
        // checkpoint finish on a full disk.
        try db.exec("PRAGMA wal_autocheckpoint=\(reserve.walCheckpointPages)")
        try db.exec("PRAGMA journal_size_limit=\(min(Int64(Layout.journalSizeLimit), reserve.size))")
        if !reserve.take() {
            // The disk is already full: do not grow until it has room again.
            diskCap = meta.backlogBytes
        }
    }

    deinit {
        if lockFD >= 0 { systemClose(lockFD) }
    }

    // MARK: Open

    static func open(directory: URL, options: BufferOptions) throws(BufferError) -> (Core, RecoveryReport?) {
        let dirPath = directory.path
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw .cannotOpen(path: dirPath, reason: "cannot create the state directory: \(error.localizedDescription)")
        }
        let lockPath = directory.appendingPathComponent(Layout.lockName).path
        let fd = systemOpen(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw .cannotOpen(path: lockPath, reason: reason)
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let err = errno
            systemClose(fd)
            if err == EWOULDBLOCK { throw .inUse(path: dirPath) }
            throw .cannotOpen(path: lockPath, reason: String(cString: strerror(err)))
        }
        // From here on the lock must be released on every error path.
        do {
            let path = directory.appendingPathComponent(Layout.databaseName).path
            let reserve = DiskReserve(directory: directory)
            // On a disk that is already full, opening needs room too (the WAL index, the WAL).
            if reserve.freeBytes < reserve.size { reserve.release() }
            var report: RecoveryReport?
            let db: SQLiteDatabase
            do {
                db = try Opening.openChecked(path: path, options: options)
            } catch {
                switch error {
                case .damaged(let reason):
                    let recovered = try Opening.recover(path: path, reason: reason, options: options)
                    db = recovered.db
                    report = recovered.report
                case .failed(let message):
                    throw BufferError.cannotOpen(path: path, reason: message)
                }
            }
            let meta = try Opening.reconcileMeta(db: db, options: options)
            let core: Core
            do {
                core = try Core(db: db, options: options, directory: directory, lockFD: fd, meta: meta,
                                reserve: reserve)
            } catch {
                throw BufferError.cannotOpen(path: path, reason: "\(error)")
            }
            // Apply the age bound now, so a long-stopped agent does not send stale data first.
            if options.maxAge != nil { _ = core.write(submissions: [], acks: []) }
            return (core, report)
        } catch let error as BufferError {
            systemClose(fd)
            throw error
        } catch {
            systemClose(fd)
            throw .cannotOpen(path: dirPath, reason: "\(error)")
        }
    }

    // MARK: Write

    private struct Deleted {
        var records: Int64 = 0
        var bytes: Int64 = 0
        var minSeq: UInt64 = .max
        var maxSeq: UInt64 = 0
        var seqs: ClosedRange<UInt64>? { records > 0 ? minSeq...maxSeq : nil }
    }

    private func deleteRange(_ range: ClosedRange<UInt64>) throws(SQLiteError) -> Deleted {
        var d = Deleted()
        deleteRangeStmt.reset()
        deleteRangeStmt.bind(1, Int64(bitPattern: range.lowerBound))
        deleteRangeStmt.bind(2, Int64(bitPattern: min(range.upperBound, UInt64(Int64.max))))
        while try deleteRangeStmt.step() {
            let seq = UInt64(bitPattern: deleteRangeStmt.int64(0))
            d.records += 1
            d.bytes += deleteRangeStmt.int64(1)
            d.minSeq = min(d.minSeq, seq)
            d.maxSeq = max(d.maxSeq, seq)
        }
        deleteRangeStmt.reset()
        return d
    }

    /// Deletes the oldest whole batches with seq > `after` until `needed` bytes are freed.
    private func dropOldest(after: UInt64, needed: Int64, reason: DropReason, meta m: inout Meta,
                            drops: inout [BufferDrop]) throws(SQLiteError) -> Int64 {
        var freed: Int64 = 0
        var first: UInt64?
        var last: UInt64 = 0
        var lastBatch: UInt64?
        var batches = 0
        scanStmt.reset()
        scanStmt.bind(1, Int64(bitPattern: after))
        while try scanStmt.step() {
            let seq = UInt64(bitPattern: scanStmt.int64(0))
            let batch = UInt64(bitPattern: scanStmt.int64(1))
            if batch != lastBatch {
                if freed >= needed { break }
                batches += 1
                lastBatch = batch
            }
            freed += scanStmt.int64(2)
            if first == nil { first = seq }
            last = seq
        }
        scanStmt.reset()
        guard let first else { return 0 }
        let d = try deleteRange(first...last)
        m.backlogRecords -= d.records
        m.backlogBytes -= d.bytes
        m.dropped[reason] += UInt64(d.records)
        if d.records > 0 {
            drops.append(BufferDrop(reason: reason, records: Int(d.records), batches: batches, seqs: d.seqs))
        }
        return d.bytes
    }

    /// Deletes records committed before `cutoff` (oldest first; stops at the first younger one).
    private func expire(cutoff: Int64, meta m: inout Meta, drops: inout [BufferDrop]) throws(SQLiteError) {
        oldestStmt.reset()
        guard try oldestStmt.step() else { oldestStmt.reset(); return }
        let oldest = oldestStmt.int64(0)
        oldestStmt.reset()
        guard oldest < cutoff else { return }
        var last: UInt64?
        var batches = 0
        var lastBatch: UInt64?
        scanStmt.reset()
        scanStmt.bind(1, Int64(0))
        while try scanStmt.step() {
            guard scanStmt.int64(3) < cutoff else { break }
            let batch = UInt64(bitPattern: scanStmt.int64(1))
            if batch != lastBatch { batches += 1; lastBatch = batch }
            last = UInt64(bitPattern: scanStmt.int64(0))
        }
        scanStmt.reset()
        guard let last else { return }
        let d = try deleteRange(0...last)
        m.backlogRecords -= d.records
        m.backlogBytes -= d.bytes
        m.dropped.expired += UInt64(d.records)
        if d.records > 0 {
            drops.append(BufferDrop(reason: .expired, records: Int(d.records), batches: batches, seqs: d.seqs))
        }
    }

    private func insert(_ batch: PollBatch, size: Int64, now: Int64, meta m: inout Meta) throws(SQLiteError) -> PollBatch {
        var records = batch.records
        let first = m.nextSeq
        for i in records.indices {
            records[i].seq = m.nextSeq
            let row = StoredRow(seq: m.nextSeq, batch: first, device: batch.device, batchTimestamp: batch.timestamp,
                                record: records[i], committed: now,
                                size: RowCodec.accountedSize(records[i], device: batch.device))
            row.bind(to: insertStmt)
            try insertStmt.run()
            m.nextSeq += 1
        }
        m.backlogRecords += Int64(records.count)
        m.backlogBytes += size
        return PollBatch(device: batch.device, timestamp: batch.timestamp, records: records)
    }

    private struct Transaction {
        var meta: Meta
        var results: [SubmissionResult] = []
        var drops: [BufferDrop] = []
        var acked = 0
    }

    private static func note(_ drop: BufferDrop, in drops: inout [BufferDrop]) {
        if let last = drops.last, last.reason == drop.reason, last.seqs == nil, drop.seqs == nil {
            drops[drops.count - 1].records += drop.records
            drops[drops.count - 1].batches += drop.batches
        } else {
            drops.append(drop)
        }
    }

    /// One transaction: acks, corrupt-row removal, expiry, then the submissions in order.
    /// `allowInserts: false` keeps only the deletions (the disk-full fallback).
    private func transact(_ submissions: [[PollBatch]], acks: [ClosedRange<UInt64>], allowInserts: Bool,
                          now: Int64, extraDrops: [BufferDrop]) throws(SQLiteError) -> Transaction {
        var t = Transaction(meta: meta, drops: extraDrops)
        try db.exec("BEGIN IMMEDIATE")
        for range in acks {
            let d = try deleteRange(range)
            t.meta.backlogRecords -= d.records
            t.meta.backlogBytes -= d.bytes
            if d.records > 0 {
                t.meta.ackedRecords += UInt64(d.records)
                t.meta.lastAckedSeq = max(t.meta.lastAckedSeq, d.maxSeq)
                t.meta.lastAckAt = now
            }
            t.acked += Int(d.records)
        }
        for range in DiskBuffer.ranges(of: pendingCorrupt) {
            let d = try deleteRange(range)
            t.meta.backlogRecords -= d.records
            t.meta.backlogBytes -= d.bytes
            t.meta.dropped.corrupt += UInt64(d.records)
            if d.records > 0 {
                t.drops.append(BufferDrop(reason: .corrupt, records: Int(d.records), batches: 1, seqs: d.seqs))
            }
        }
        if let maxAge = options.maxAge {
            try expire(cutoff: now - maxAge.milliseconds, meta: &t.meta, drops: &t.drops)
        }
        // Past the configured bound the drops are `overflow`; past the bound a full disk set, `disk-full`.
        let maxBytes = min(options.maxBytes, diskCap ?? .max)
        let boundReason: DropReason = maxBytes < options.maxBytes ? .diskFull : .overflow
        for submission in submissions {
            let batches = submission.filter { !$0.records.isEmpty }
            let sizes = batches.map { b in b.records.reduce(Int64(0)) { $0 + RowCodec.accountedSize($1, device: b.device) } }
            let recordCount = batches.reduce(0) { $0 + $1.records.count }
            if !allowInserts {
                if options.overflowPolicy == .reject {
                    t.meta.dropped.rejected += UInt64(recordCount)
                    t.results.append(.rejected(.diskFull("no space left for new records")))
                } else {
                    t.meta.dropped.diskFull += UInt64(recordCount)
                    if recordCount > 0 {
                        Self.note(BufferDrop(reason: .diskFull, records: recordCount, batches: batches.count, seqs: nil), in: &t.drops)
                    }
                    t.results.append(.stored([]))
                }
                continue
            }
            if options.overflowPolicy == .reject {
                let total = sizes.reduce(0, +)
                if t.meta.backlogBytes + total > maxBytes {
                    t.meta.dropped.rejected += UInt64(recordCount)
                    t.results.append(.rejected(boundReason == .diskFull
                        ? .diskFull("no space left for new records")
                        : .full(neededBytes: total, freeBytes: max(0, maxBytes - t.meta.backlogBytes))))
                    continue
                }
            }
            var committed: [PollBatch] = []
            for (batch, size) in zip(batches, sizes) {
                if t.meta.backlogBytes + size > maxBytes {
                    var fits = false
                    if options.overflowPolicy == .dropOldest && size <= maxBytes {
                        var needed = t.meta.backlogBytes + size - maxBytes
                        // Not-in-flight records first; in-flight ones only if that is not enough.
                        needed -= try dropOldest(after: cursor, needed: needed, reason: boundReason, meta: &t.meta, drops: &t.drops)
                        if needed > 0 {
                            _ = try dropOldest(after: 0, needed: needed, reason: boundReason, meta: &t.meta, drops: &t.drops)
                        }
                        fits = t.meta.backlogBytes + size <= maxBytes
                    }
                    if !fits {
                        t.meta.dropped[boundReason] += UInt64(batch.records.count)
                        Self.note(BufferDrop(reason: boundReason, records: batch.records.count, batches: 1, seqs: nil), in: &t.drops)
                        continue
                    }
                }
                committed.append(try insert(batch, size: size, now: now, meta: &t.meta))
            }
            t.results.append(.stored(committed))
        }
        t.meta.maxBytes = maxBytes
        if metaDirty || t.meta != meta {
            try t.meta.save(to: upsertMetaStmt)
        }
        try db.exec("COMMIT")
        return t
    }

    /// Commits submissions and acknowledgements together. Never throws: failures become
    /// per-submission results, counted drops and `ackError`.
    func write(submissions: [[PollBatch]], acks: [ClosedRange<UInt64>],
               uncommittedDrops: [DropReason: Int] = [:]) -> WriteOutcome {
        guard !closed else {
            return WriteOutcome(results: submissions.map { _ in .failed(.closed) }, ackError: .closed)
        }
        for (reason, records) in uncommittedDrops where records > 0 {
            meta.dropped[reason] += UInt64(records)
            metaDirty = true
        }
        let now = options.clock()
        var outcome = WriteOutcome()
        var extraDrops: [BufferDrop] = []
        var ackedInPieces = 0
        var lastError: SQLiteError
        do {
            return finish(try transact(submissions, acks: acks, allowInserts: true, now: now, extraDrops: []))
        } catch {
            db.rollbackQuietly()
            lastError = error
        }
        if lastError.isFull {
            // Disk (or maxFileBytes) full. Every transaction, even a deleting one, needs room in
            // the WAL: give the reserve back, checkpoint, and work in pieces small enough for
            // that room. Acknowledgements first, then (drop-oldest) the oldest records, a tenth of
            // the backlog (at least twice the incoming size); then cap the backlog where it
            // stands, so the file stops growing and new records reuse the freed pages. The cap
            // stays until the disk has room again (`recoverFromFullDisk`).
            relieveFullDisk()
            let backlogAtFull = meta.backlogBytes
            let incoming = submissions.joined().reduce(Int64(0)) { total, batch in
                batch.records.reduce(total) { $0 + RowCodec.accountedSize($1, device: batch.device) }
            }
            let target = options.overflowPolicy == .dropOldest
                ? max(0, backlogAtFull - max(2 * incoming, backlogAtFull / 10, 16 * 1024)) : backlogAtFull
            let acked = acknowledgeInPieces(acks, now: now)
            ackedInPieces = acked.records
            extraDrops += acked.drops
            if let error = acked.error { lastError = error }
            if options.overflowPolicy == .dropOldest {
                let dropped = dropOldestInPieces(downTo: target)
                extraDrops += dropped.drops
                if let error = dropped.error { lastError = error }
            }
            diskCap = min(diskCap ?? .max, max(meta.backlogBytes, target))
            // The submissions under the cap; if even that does not fit, only the counters.
            for allowInserts in [true, false] where allowInserts || lastError.isFull {
                if !allowInserts { relieveFullDisk() }
                do {
                    var done = finish(try transact(submissions, acks: [], allowInserts: allowInserts, now: now,
                                                   extraDrops: extraDrops))
                    done.ackedRecords += ackedInPieces
                    if acked.error != nil { done.ackError = .diskFull("acknowledgements could not be stored: the disk is full") }
                    return done
                } catch {
                    db.rollbackQuietly()
                    lastError = error
                }
            }
        }
        // Nothing could be committed: count the new records in memory (persisted by the next
        // successful commit) and report every submission as failed.
        let error: BufferError = lastError.isFull ? .diskFull(lastError.message) : .io(code: lastError.extendedCode, message: lastError.description)
        let reason: DropReason = lastError.isFull ? .diskFull : .writeError
        outcome.drops = extraDrops
        for submission in submissions {
            let batches = submission.filter { !$0.records.isEmpty }
            let records = batches.reduce(0) { $0 + $1.records.count }
            if options.overflowPolicy == .reject {
                meta.dropped.rejected += UInt64(records)
                outcome.results.append(.rejected(error))
            } else {
                meta.dropped[reason] += UInt64(records)
                if records > 0 {
                    Self.note(BufferDrop(reason: reason, records: records, batches: batches.count, seqs: nil), in: &outcome.drops)
                }
                outcome.results.append(.failed(error))
            }
        }
        metaDirty = true
        outcome.ackError = error
        outcome.ackedRecords = ackedInPieces
        return outcome
    }

    private func finish(_ t: Transaction, recover: Bool = true) -> WriteOutcome {
        meta = t.meta
        metaDirty = false
        pendingCorrupt.removeAll()
        if recover && diskCap != nil { recoverFromFullDisk() }
        return WriteOutcome(results: t.results, drops: t.drops, ackedRecords: t.acked, ackError: nil)
    }

    // MARK: Full disk

    private func checkpointWAL() {
        try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// Commits `acks` a piece at a time, checkpointing after each; a piece that does not fit is
    /// halved, down to one record. Stops at the first piece that cannot be committed (`error`).
    private func acknowledgeInPieces(_ acks: [ClosedRange<UInt64>], now: Int64)
        -> (records: Int, drops: [BufferDrop], error: SQLiteError?) {
        var records = 0
        var drops: [BufferDrop] = []
        let stored = acks.compactMap { range -> ClosedRange<UInt64>? in
            let low = max(range.lowerBound, 1), high = min(range.upperBound, meta.nextSeq &- 1)
            return low <= high ? low...high : nil
        }
        var queue = DiskBuffer.pieces(of: stored, records: reserve.pieceRecords)
        while !queue.isEmpty {
            let piece = queue.removeFirst()
            do {
                let done = finish(try transact([], acks: [piece], allowInserts: true, now: now, extraDrops: []), recover: false)
                records += done.ackedRecords
                drops += done.drops
                checkpointWAL()
            } catch {
                db.rollbackQuietly()
                checkpointWAL()
                guard error.isFull, piece.count > 1 else { return (records, drops, error) }
                let middle = piece.lowerBound + UInt64(piece.count / 2)
                queue.insert(contentsOf: [piece.lowerBound...middle - 1, middle...piece.upperBound], at: 0)
            }
        }
        return (records, drops, nil)
    }

    /// Deletes the oldest records (not in flight first), counted `disk-full`, until the backlog is
    /// at most `target` accounted bytes: a piece per transaction, checkpointing after each, halving
    /// a piece that does not fit. Stops early at an error it cannot work around (`error`).
    private func dropOldestInPieces(downTo target: Int64) -> (drops: [BufferDrop], error: SQLiteError?) {
        var drops: [BufferDrop] = []
        var piece = Int64(reserve.pieceRecords) * 64
        while meta.backlogBytes > target {
            do {
                var t = Transaction(meta: meta)
                try db.exec("BEGIN IMMEDIATE")
                var freed = try dropOldest(after: cursor, needed: piece, reason: .diskFull, meta: &t.meta, drops: &t.drops)
                if freed == 0 {
                    freed = try dropOldest(after: 0, needed: piece, reason: .diskFull, meta: &t.meta, drops: &t.drops)
                }
                try t.meta.save(to: upsertMetaStmt)
                try db.exec("COMMIT")
                meta = t.meta
                metaDirty = false
                drops += t.drops
                checkpointWAL()
                if freed == 0 { break }
            } catch {
                db.rollbackQuietly()
                checkpointWAL()
                guard error.isFull, piece > 64 else { return (drops, error) }
                piece /= 2
            }
        }
        return (drops, nil)
    }

    /// Frees what can be freed without a transaction: the reserve, then the WAL (checkpointed into
    /// the database file, whose freed pages it can reuse, and truncated).
    private func relieveFullDisk() {
        reserve.release()
        checkpointWAL()
    }

    /// After each commit while capped: keep the WAL empty, take the reserve back when there is room,
    /// and lift the cap once the disk has plenty of room again (an operator freed space).
    private func recoverFromFullDisk() {
        checkpointWAL()
        guard reserve.take() else { return }
        let capByFile = options.maxFileBytes.map {
            Core.fileSize(db.path) + Core.fileSize(db.path + "-wal") > $0 * 3 / 4
        } ?? false
        if !capByFile && reserve.freeBytes >= 8 * reserve.size {
            diskCap = nil
        }
    }

    // MARK: Read

    func next(maxBatches: Int, maxRecords: Int) throws(BufferError) -> [BufferedBatch] {
        guard !closed else { throw .closed }
        guard maxBatches > 0 else { return [] }
        var out: [BufferedBatch] = []
        var current: (id: UInt64, device: String, timestamp: Int64, committed: Int64, records: [Record])?
        var recordCount = 0
        var consumedUpTo = cursor
        func finish(_ c: (id: UInt64, device: String, timestamp: Int64, committed: Int64, records: [Record])) {
            guard let first = c.records.first?.seq, let last = c.records.last?.seq else { return }
            out.append(BufferedBatch(batch: PollBatch(device: c.device, timestamp: c.timestamp, records: c.records),
                                     seqs: first...last, committedAt: c.committed,
                                     replayed: first <= replayBoundary))
        }
        readStmt.reset()
        readStmt.bind(1, Int64(bitPattern: cursor))
        do {
            while try readStmt.step() {
                let seq = UInt64(bitPattern: readStmt.int64(0))
                let batchID = UInt64(bitPattern: readStmt.int64(1))
                if current?.id != batchID {
                    if let c = current {
                        finish(c)
                        current = nil
                        if out.count >= maxBatches || recordCount >= maxRecords { break }
                    }
                    current = (batchID, readStmt.text(2) ?? "", readStmt.int64(3), readStmt.int64(10), [])
                }
                consumedUpTo = seq
                guard let row = StoredRow.read(readStmt) else {
                    pendingCorrupt.append(seq)
                    continue
                }
                current?.records.append(row.record)
                recordCount += 1
            }
        } catch {
            readStmt.reset()
            throw .io(code: error.extendedCode, message: error.description)
        }
        readStmt.reset()
        if let c = current { finish(c) }
        cursor = consumedUpTo
        return out
    }

    func rewind() {
        replayBoundary = max(replayBoundary, cursor)
        cursor = 0
    }

    // MARK: Stats

    func stats() throws(BufferError) -> BufferStats {
        guard !closed else { throw .closed }
        var oldest: Int64?
        oldestStmt.reset()
        do {
            if try oldestStmt.step() { oldest = oldestStmt.int64(0) }
        } catch {
            oldestStmt.reset()
            throw .io(code: error.extendedCode, message: error.description)
        }
        oldestStmt.reset()
        return Core.makeStats(meta, oldest: oldest, path: db.path)
    }

    static func makeStats(_ meta: Meta, oldest: Int64?, path: String) -> BufferStats {
        BufferStats(backlogRecords: meta.backlogRecords, backlogBytes: meta.backlogBytes, maxBytes: meta.maxBytes,
                    oldestCommittedAt: oldest, nextSeq: meta.nextSeq, lastAckedSeq: meta.lastAckedSeq,
                    lastAckAt: meta.lastAckAt > 0 ? meta.lastAckAt : nil, ackedRecords: meta.ackedRecords,
                    dropped: meta.dropped, fileBytes: fileSize(path) + fileSize(path + "-wal"))
    }

    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : 0
    }

    static func readStats(directory: URL) throws(BufferError) -> BufferStats {
        let path = directory.appendingPathComponent(Layout.databaseName).path
        guard FileManager.default.fileExists(atPath: path) else { throw .notFound(path: path) }
        do {
            let db = try SQLiteDatabase(path: path, flags: SQLITE_OPEN_READONLY)
            sqlite3_busy_timeout(db.handle, 2000)
            let appID = try db.scalarInt("PRAGMA application_id") ?? 0
            guard appID == Layout.applicationID else {
                // A new file gets its id in the agent's first transaction: a reader can come first.
                let tables = appID == 0 ? try db.scalarInt("SELECT count(*) FROM sqlite_master") ?? 0 : 1
                let reason = tables == 0
                    ? "not initialised yet (an agent is creating it); try again in a moment"
                    : "not an Uplink buffer file"
                throw BufferError.cannotOpen(path: path, reason: reason)
            }
            try db.exec("BEGIN")  // one consistent snapshot for meta and the oldest row
            var meta = Meta()
            try meta.load(from: db)
            let oldest = try db.scalarInt("SELECT committed FROM record ORDER BY seq LIMIT 1")
            try db.exec("COMMIT")
            return makeStats(meta, oldest: oldest, path: path)
        } catch let error as SQLiteError {
            throw .cannotOpen(path: path, reason: error.description)
        } catch let error as BufferError {
            throw error
        } catch {
            throw .cannotOpen(path: path, reason: "\(error)")
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        for stmt in [insertStmt, upsertMetaStmt, deleteRangeStmt, scanStmt, readStmt, oldestStmt] { stmt.finalize() }
        // The last connection to close checkpoints the WAL into the database file.
        checkpointWAL()
        db.close()
        if lockFD >= 0 {
            systemClose(lockFD)
            lockFD = -1
        }
    }
}

/// open(2) and close(2), named apart from the methods called `open` and `close`.
func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
    #if canImport(Glibc)
    Glibc.open(path, flags, mode)
    #elseif canImport(Darwin)
    Darwin.open(path, flags, mode)
    #endif
}

func systemClose(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #elseif canImport(Darwin)
    _ = Darwin.close(fd)
    #endif
}
