// A thin, internal layer over the SQLite C API. Nothing here is public: the C types stay inside
// the Buffer module. A `SQLiteDatabase` is not thread-safe; `DiskBuffer` confines each one to its
// own lock.
import CSQLite

/// A failed SQLite call: the primary result code, the extended code and SQLite's own message.
struct SQLiteError: Error, CustomStringConvertible {
    let code: Int32
    let extendedCode: Int32
    let message: String
    let context: String

    var primary: Int32 { code & 0xFF }
    /// The file is damaged or is not a database: recovery, not a retry, is the answer.
    var isCorruption: Bool { primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB }
    /// The disk (or the configured page cap) has no room left.
    var isFull: Bool { primary == SQLITE_FULL }
    var isBusy: Bool { primary == SQLITE_BUSY || primary == SQLITE_LOCKED }

    var description: String { "\(context): \(message) (SQLite code \(extendedCode))" }
}

final class SQLiteDatabase {
    let handle: OpaquePointer
    let path: String
    private var isOpen = true

    /// Opens `path` with the given `SQLITE_OPEN_*` flags. The handle is closed on deinit.
    init(path: String, flags: Int32) throws(SQLiteError) {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let opened = db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            let extended = db.map { sqlite3_extended_errcode($0) } ?? rc
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, extendedCode: extended, message: message, context: "open \(path)")
        }
        sqlite3_extended_result_codes(opened, 1)
        handle = opened
        self.path = path
    }

    deinit {
        close()
    }

    /// Closes the connection (after its statements were finalized, or deferred until they are).
    /// The handle must not be used afterwards.
    func close() {
        guard isOpen else { return }
        isOpen = false
        sqlite3_close_v2(handle)
    }

    func error(_ rc: Int32, _ context: String) -> SQLiteError {
        SQLiteError(code: rc, extendedCode: sqlite3_extended_errcode(handle),
                    message: String(cString: sqlite3_errmsg(handle)), context: context)
    }

    /// Runs one or more statements that return no rows the caller needs.
    func exec(_ sql: String) throws(SQLiteError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql) }
    }

    func prepare(_ sql: String, persistent: Bool = false) throws(SQLiteError) -> SQLiteStatement {
        var stmt: OpaquePointer?
        let flags = persistent ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0
        let rc = sqlite3_prepare_v3(handle, sql, -1, flags, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, "prepare \(sql)") }
        return SQLiteStatement(stmt, db: self, sql: sql)
    }

    /// The first column of the first row of `sql`, as text (PRAGMA answers).
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let stmt = try prepare(sql)
        guard try stmt.step() else { return nil }
        return stmt.text(0)
    }

    func scalarInt(_ sql: String) throws(SQLiteError) -> Int64? {
        let stmt = try prepare(sql)
        guard try stmt.step(), !stmt.isNull(0) else { return nil }
        return stmt.int64(0)
    }

    /// Whether a transaction is open (false after SQLite rolled one back on its own, e.g. on SQLITE_FULL).
    var inTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// Rolls back if a transaction is open; never throws (used on error paths).
    func rollbackQuietly() {
        if inTransaction { sqlite3_exec(handle, "ROLLBACK", nil, nil, nil) }
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
}

final class SQLiteStatement {
    /// nil once finalized; SQLite treats calls on a NULL statement as harmless misuse.
    private var stmt: OpaquePointer?
    private unowned let db: SQLiteDatabase
    private let sql: String

    fileprivate init(_ stmt: OpaquePointer, db: SQLiteDatabase, sql: String) {
        self.stmt = stmt
        self.db = db
        self.sql = sql
    }

    deinit { finalize() }

    func finalize() {
        guard let stmt else { return }
        sqlite3_finalize(stmt)
        self.stmt = nil
    }

    /// Resets the statement and clears its bindings, ready for the next use.
    func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(stmt, index, value) }
    func bind(_ index: Int32, _ value: Double) { sqlite3_bind_double(stmt, index, value) }
    func bindNull(_ index: Int32) { sqlite3_bind_null(stmt, index) }
    func bind(_ index: Int32, _ value: String) {
        sqlite3_bind_text(stmt, index, value, -1, uplink_sqlite_transient)
    }
    func bind(_ index: Int32, _ value: String?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    /// Steps once: true when a row is available, false when done.
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let err = db.error(rc, sql)
            sqlite3_reset(stmt)
            throw err
        }
    }

    /// Steps to completion, ignoring rows.
    func run() throws(SQLiteError) {
        while try step() {}
        sqlite3_reset(stmt)
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_NULL }
    func columnType(_ column: Int32) -> Int32 { sqlite3_column_type(stmt, column) }
    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(stmt, column) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(stmt, column) }
    func text(_ column: Int32) -> String? {
        guard let ptr = sqlite3_column_text(stmt, column) else { return nil }
        let count = Int(sqlite3_column_bytes(stmt, column))
        return String(decoding: UnsafeBufferPointer(start: ptr, count: count), as: UTF8.self)
    }
}
