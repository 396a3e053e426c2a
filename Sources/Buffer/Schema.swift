// The on-disk layout of the buffer (documented in docs/buffer.md): file names, PRAGMAs, tables,
// the encoding of a `Record` into a row and back, and the persisted counters.
import CSQLite
import UplinkCore

enum Layout {
    static let databaseName = "buffer.sqlite"
    static let lockName = "buffer.lock"
    /// 'UPLK': marks the file as ours (PRAGMA application_id).
    static let applicationID: Int64 = 0x5550_4C4B
    static let schemaVersion: Int64 = 1
    /// The WAL is truncated back to this size after checkpoints.
    static let journalSizeLimit = 8 << 20

    static let createSchema = """
        CREATE TABLE IF NOT EXISTS record(
            seq       INTEGER PRIMARY KEY,  -- per-agent sequence number, assigned at commit
            batch     INTEGER NOT NULL,     -- seq of the first record of its PollBatch
            device    TEXT    NOT NULL,
            batch_ts  INTEGER NOT NULL,     -- PollBatch.timestamp (UTC ms)
            signal    TEXT    NOT NULL,
            ts        INTEGER NOT NULL,     -- Record.timestamp (UTC ms)
            kind      INTEGER NOT NULL,     -- 0 none, 1 bool, 2 int, 3 uint, 4 double, 5 string
            value,                          -- INTEGER, REAL or TEXT by kind; NULL for none (and NaN)
            unit      TEXT,
            quality   TEXT    NOT NULL,     -- Quality.code
            committed INTEGER NOT NULL,     -- commit time (UTC ms)
            size      INTEGER NOT NULL      -- accounted bytes, summed against max_bytes
        );
        CREATE TABLE IF NOT EXISTS meta(
            key   TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        """

    static let recordColumns = "seq, batch, device, batch_ts, signal, ts, kind, value, unit, quality, committed, size"
    static let insertRecord = "INSERT INTO record(\(recordColumns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    static let upsertMeta = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
}

/// The counters kept in the `meta` table. Written in the same transaction as the rows they count.
struct Meta: Equatable {
    var nextSeq: UInt64 = 1
    var backlogRecords: Int64 = 0
    var backlogBytes: Int64 = 0
    var ackedRecords: UInt64 = 0
    var lastAckedSeq: UInt64 = 0
    var lastAckAt: Int64 = 0
    var maxBytes: Int64 = 0
    var dropped = DropCounters()

    static let keys = ["next_seq", "backlog_records", "backlog_bytes", "acked_records", "last_acked_seq",
                       "last_ack_ms", "max_bytes", "dropped_overflow", "dropped_expired", "dropped_disk_full",
                       "dropped_queue_overflow", "dropped_write_error", "dropped_corrupt", "rejected"]

    var values: [(String, Int64)] {
        [("next_seq", Int64(bitPattern: nextSeq)), ("backlog_records", backlogRecords),
         ("backlog_bytes", backlogBytes), ("acked_records", Int64(bitPattern: ackedRecords)),
         ("last_acked_seq", Int64(bitPattern: lastAckedSeq)), ("last_ack_ms", lastAckAt),
         ("max_bytes", maxBytes),
         ("dropped_overflow", Int64(bitPattern: dropped.overflow)),
         ("dropped_expired", Int64(bitPattern: dropped.expired)),
         ("dropped_disk_full", Int64(bitPattern: dropped.diskFull)),
         ("dropped_queue_overflow", Int64(bitPattern: dropped.queueOverflow)),
         ("dropped_write_error", Int64(bitPattern: dropped.writeError)),
         ("dropped_corrupt", Int64(bitPattern: dropped.corrupt)),
         ("rejected", Int64(bitPattern: dropped.rejected))]
    }

    mutating func set(_ key: String, _ raw: Int64) {
        let u = UInt64(bitPattern: raw)
        switch key {
        case "next_seq": nextSeq = u
        case "backlog_records": backlogRecords = raw
        case "backlog_bytes": backlogBytes = raw
        case "acked_records": ackedRecords = u
        case "last_acked_seq": lastAckedSeq = u
        case "last_ack_ms": lastAckAt = raw
        case "max_bytes": maxBytes = raw
        case "dropped_overflow": dropped.overflow = u
        case "dropped_expired": dropped.expired = u
        case "dropped_disk_full": dropped.diskFull = u
        case "dropped_queue_overflow": dropped.queueOverflow = u
        case "dropped_write_error": dropped.writeError = u
        case "dropped_corrupt": dropped.corrupt = u
        case "rejected": dropped.rejected = u
        default: break
        }
    }

    /// Reads every key present; returns the keys found.
    @discardableResult
    mutating func load(from db: SQLiteDatabase) throws(SQLiteError) -> Set<String> {
        let stmt = try db.prepare("SELECT key, value FROM meta")
        var found = Set<String>()
        while try stmt.step() {
            guard let key = stmt.text(0) else { continue }
            set(key, stmt.int64(1))
            found.insert(key)
        }
        return found
    }

    func save(to stmt: SQLiteStatement) throws(SQLiteError) {
        for (key, value) in values {
            stmt.reset()
            stmt.bind(1, key)
            stmt.bind(2, value)
            try stmt.run()
        }
    }
}

/// A record as stored: its value split into a kind and a SQLite value.
enum RowCodec {
    static let kindNone: Int64 = 0, kindBool: Int64 = 1, kindInt: Int64 = 2, kindUInt: Int64 = 3,
               kindDouble: Int64 = 4, kindString: Int64 = 5

    /// The bytes a record is accounted for against `max_bytes`: the text it stores, 8 bytes per
    /// number and 48 bytes for the fixed columns and SQLite's per-row overhead.
    static func accountedSize(_ record: Record, device: String) -> Int64 {
        var size = 48 + device.utf8.count + record.signal.utf8.count + (record.unit?.utf8.count ?? 0)
            + record.quality.code.utf8.count
        switch record.value {
        case .string(let s): size += s.utf8.count
        case .none: break
        default: size += 8
        }
        return Int64(size)
    }

    /// Binds kind (index) and value (index + 1).
    static func bindValue(_ value: Value?, kindIndex: Int32, to stmt: SQLiteStatement) {
        switch value {
        case .none:
            stmt.bind(kindIndex, kindNone); stmt.bindNull(kindIndex + 1)
        case .bool(let b):
            stmt.bind(kindIndex, kindBool); stmt.bind(kindIndex + 1, Int64(b ? 1 : 0))
        case .int(let i):
            stmt.bind(kindIndex, kindInt); stmt.bind(kindIndex + 1, i)
        case .uint(let u):
            stmt.bind(kindIndex, kindUInt); stmt.bind(kindIndex + 1, Int64(bitPattern: u))
        case .double(let d):
            // SQLite stores NaN as NULL; kind 4 with NULL reads back as NaN.
            stmt.bind(kindIndex, kindDouble)
            if d.isNaN { stmt.bindNull(kindIndex + 1) } else { stmt.bind(kindIndex + 1, d) }
        case .string(let s):
            stmt.bind(kindIndex, kindString); stmt.bind(kindIndex + 1, s)
        }
    }

    /// Decodes kind and value columns; nil when the row is not something we wrote.
    static func readValue(_ stmt: SQLiteStatement, kindColumn: Int32) -> Value?? {
        let valueColumn = kindColumn + 1
        let type = stmt.columnType(valueColumn)
        switch stmt.int64(kindColumn) {
        case kindNone: return .some(nil)
        case kindBool where type == SQLITE_INTEGER: return .some(.bool(stmt.int64(valueColumn) != 0))
        case kindInt where type == SQLITE_INTEGER: return .some(.int(stmt.int64(valueColumn)))
        case kindUInt where type == SQLITE_INTEGER: return .some(.uint(UInt64(bitPattern: stmt.int64(valueColumn))))
        case kindDouble where type == SQLITE_NULL: return .some(.double(.nan))
        case kindDouble where type == SQLITE_FLOAT || type == SQLITE_INTEGER: return .some(.double(stmt.double(valueColumn)))
        case kindString where type == SQLITE_TEXT: return stmt.text(valueColumn).map { .some(.string($0)) }
        default: return nil
        }
    }
}

/// One row read back from the `record` table (columns in `Layout.recordColumns` order).
struct StoredRow {
    var seq: UInt64
    var batch: UInt64
    var device: String
    var batchTimestamp: Int64
    var record: Record
    var committed: Int64
    var size: Int64

    /// nil when the row does not decode (unknown kind or quality, wrong types).
    static func read(_ stmt: SQLiteStatement) -> StoredRow? {
        guard let device = stmt.text(2), let signal = stmt.text(4), let qualityCode = stmt.text(9),
              let quality = Quality(code: qualityCode), let value = RowCodec.readValue(stmt, kindColumn: 6)
        else { return nil }
        let seq = UInt64(bitPattern: stmt.int64(0))
        let record = Record(device: device, signal: signal, timestamp: stmt.int64(5), value: value,
                            unit: stmt.isNull(8) ? nil : stmt.text(8), quality: quality, seq: seq)
        return StoredRow(seq: seq, batch: UInt64(bitPattern: stmt.int64(1)), device: device,
                         batchTimestamp: stmt.int64(3), record: record, committed: stmt.int64(10),
                         size: stmt.int64(11))
    }

    func bind(to stmt: SQLiteStatement) {
        stmt.reset()
        stmt.bind(1, Int64(bitPattern: seq))
        stmt.bind(2, Int64(bitPattern: batch))
        stmt.bind(3, device)
        stmt.bind(4, batchTimestamp)
        stmt.bind(5, record.signal)
        stmt.bind(6, record.timestamp)
        RowCodec.bindValue(record.value, kindIndex: 7, to: stmt)
        stmt.bind(9, record.unit)
        stmt.bind(10, record.quality.code)
        stmt.bind(11, committed)
        stmt.bind(12, size)
    }
}
