// Opening the database file: PRAGMAs, schema, verification, and recovery of a damaged file
// (move it aside, salvage what is readable into a fresh file, keep seq from going backwards).
import CSQLite
import Foundation
import UplinkCore

/// Why an open did not produce a usable database.
enum OpenProblem: Error {
    /// The file is damaged or is not ours: recover.
    case damaged(String)
    /// Anything else (permissions, I/O): report, do not touch the file.
    case failed(String)
}

enum Opening {
    /// Opens (creating if needed) `path`, applies the PRAGMAs, verifies it and creates the schema.
    static func openChecked(path: String, options: BufferOptions) throws(OpenProblem) -> SQLiteDatabase {
        func classify(_ error: SQLiteError) -> OpenProblem {
            error.isCorruption ? .damaged(error.description) : .failed(error.description)
        }
        do {
            let db = try SQLiteDatabase(path: path, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
            sqlite3_busy_timeout(db.handle, 5000)
            // journal_mode reads the header: a garbage file fails here with SQLITE_NOTADB.
            let mode = try db.scalarText("PRAGMA journal_mode=WAL")
            guard mode?.lowercased() == "wal" else {
                throw OpenProblem.failed("cannot switch \(path) to WAL mode (got \(mode ?? "nothing"))")
            }
            try db.exec("PRAGMA synchronous=FULL")
            try db.exec("PRAGMA journal_size_limit=\(Layout.journalSizeLimit)")
            try db.exec("PRAGMA cell_size_check=ON")
            if let cap = options.maxFileBytes {
                let pageSize = try db.scalarInt("PRAGMA page_size") ?? 4096
                try db.exec("PRAGMA max_page_count=\(max(8, cap / pageSize))")
            }
            if options.verifyOnOpen {
                let check = try db.prepare("PRAGMA quick_check")
                var problems: [String] = []
                while try check.step() {
                    if let line = check.text(0), line != "ok" { problems.append(line) }
                    if problems.count >= 3 { break }
                }
                if !problems.isEmpty {
                    throw OpenProblem.damaged("quick_check: " + problems.joined(separator: "; "))
                }
            }
            let appID = try db.scalarInt("PRAGMA application_id") ?? 0
            let version = try db.scalarInt("PRAGMA user_version") ?? 0
            if appID == 0 && version == 0 {
                let tables = try db.scalarInt("SELECT count(*) FROM sqlite_master") ?? 0
                guard tables == 0 else { throw OpenProblem.damaged("not an Uplink buffer file (foreign tables)") }
                try db.exec("BEGIN IMMEDIATE")
                try db.exec("PRAGMA application_id=\(Layout.applicationID)")
                try db.exec("PRAGMA user_version=\(Layout.schemaVersion)")
                try db.exec(Layout.createSchema)
                try db.exec("COMMIT")
            } else if appID != Layout.applicationID {
                throw OpenProblem.damaged("not an Uplink buffer file (application_id \(appID))")
            } else if version > Layout.schemaVersion {
                throw OpenProblem.failed("written by a newer Uplink (schema \(version), this one knows \(Layout.schemaVersion)); upgrade or use another state directory")
            } else {
                // Same version: make sure both tables are there (a damaged schema is recovered).
                let tables = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name IN ('record','meta')") ?? 0
                guard tables == 2 else { throw OpenProblem.damaged("schema incomplete") }
            }
            return db
        } catch let error as SQLiteError {
            throw classify(error)
        } catch let error as OpenProblem {
            throw error
        } catch {
            throw .failed("\(error)")
        }
    }

    /// Loads the counters and checks them against the rows (fixing them if they disagree).
    static func reconcileMeta(db: SQLiteDatabase, options: BufferOptions) throws(BufferError) -> Meta {
        do {
            var meta = Meta()
            try meta.load(from: db)
            let count = try db.scalarInt("SELECT count(*) FROM record") ?? 0
            let bytes = try db.scalarInt("SELECT total(size) FROM record") ?? 0
            let maxSeq = UInt64(bitPattern: try db.scalarInt("SELECT max(seq) FROM record") ?? 0)
            var fixed = meta
            fixed.backlogRecords = count
            fixed.backlogBytes = bytes
            fixed.nextSeq = max(meta.nextSeq, maxSeq + 1)
            fixed.maxBytes = options.maxBytes
            if fixed != meta {
                try db.exec("BEGIN IMMEDIATE")
                let stmt = try db.prepare(Layout.upsertMeta)
                try fixed.save(to: stmt)
                try db.exec("COMMIT")
            }
            return fixed
        } catch {
            db.rollbackQuietly()
            throw .cannotOpen(path: db.path, reason: error.description)
        }
    }

    /// Moves the damaged file aside, salvages its readable rows and counters into a fresh file.
    static func recover(path: String, reason: String, options: BufferOptions) throws(BufferError) -> (db: SQLiteDatabase, report: RecoveryReport) {
        let fm = FileManager.default
        let now = options.clock()
        let stamp = timestamp(now)
        var aside = "\(path).corrupt-\(stamp)"
        var n = 1
        while fm.fileExists(atPath: aside) { aside = "\(path).corrupt-\(stamp)-\(n)"; n += 1 }
        do {
            try fm.moveItem(atPath: path, toPath: aside)
            if fm.fileExists(atPath: path + "-wal") { try fm.moveItem(atPath: path + "-wal", toPath: aside + "-wal") }
            if fm.fileExists(atPath: path + "-shm") { try fm.removeItem(atPath: path + "-shm") }
        } catch {
            throw .cannotOpen(path: path, reason: "damaged (\(reason)) and cannot be moved aside: \(error.localizedDescription)")
        }

        let fresh: SQLiteDatabase
        do {
            fresh = try openChecked(path: path, options: options)
        } catch {
            switch error {
            case .damaged(let m), .failed(let m): throw .cannotOpen(path: path, reason: "cannot create a fresh buffer: \(m)")
            }
        }

        var oldMeta = Meta()
        var countersRecovered = false
        var salvaged = 0
        var maxSeq: UInt64 = 0
        if let old = try? SQLiteDatabase(path: aside, flags: SQLITE_OPEN_READWRITE) {
            sqlite3_busy_timeout(old.handle, 2000)
            // Lets SQLite read a file shorter than its header says (truncated): without it the
            // schema itself is refused as malformed. Nothing is written to the old file.
            try? old.exec("PRAGMA writable_schema=ON")
            if let found = try? oldMeta.load(from: old), found.contains("next_seq") { countersRecovered = true }
            // Forward until the first unreadable page, then backward until we meet what we have.
            for order in ["ASC", "DESC"] {
                let copied = copyRows(from: old, to: fresh, order: order, maxSeq: &maxSeq)
                salvaged += copied
            }
        }

        var meta = countersRecovered ? oldMeta : Meta()
        meta.nextSeq = max(meta.nextSeq, maxSeq + 1)
        if !countersRecovered {
            // The counter is lost: jump past any seq an earlier life can have issued (it would have
            // needed more than 1000 records per millisecond since 1970 to reach this).
            meta.nextSeq = max(meta.nextSeq, UInt64(max(0, now)) * 1000)
        }
        do {
            meta.backlogRecords = try fresh.scalarInt("SELECT count(*) FROM record") ?? 0
            meta.backlogBytes = try fresh.scalarInt("SELECT total(size) FROM record") ?? 0
            meta.maxBytes = options.maxBytes
            try fresh.exec("BEGIN IMMEDIATE")
            try meta.save(to: try fresh.prepare(Layout.upsertMeta))
            try fresh.exec("COMMIT")
        } catch {
            fresh.rollbackQuietly()
            throw .cannotOpen(path: path, reason: "cannot write the recovered counters: \(error.description)")
        }
        let report = RecoveryReport(reason: reason, movedAsideTo: aside, salvagedRecords: salvaged,
                                    countersRecovered: countersRecovered, nextSeq: meta.nextSeq)
        return (fresh, report)
    }

    /// Copies decodable rows in `order` until a read error (or, going backward, until rows are
    /// already present). Commits every 1000 rows. Returns the rows copied.
    private static func copyRows(from old: SQLiteDatabase, to fresh: SQLiteDatabase, order: String,
                                 maxSeq: inout UInt64) -> Int {
        guard let read = try? old.prepare("SELECT \(Layout.recordColumns) FROM record ORDER BY seq \(order)"),
              let insert = try? fresh.prepare("INSERT OR IGNORE INTO record(\(Layout.recordColumns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
        else { return 0 }
        var copied = 0
        var inTransaction = false
        defer { if inTransaction { try? fresh.exec("COMMIT") } }
        while true {
            let hasRow: Bool
            do { hasRow = try read.step() } catch { break }
            guard hasRow else { break }
            guard let row = StoredRow.read(read) else { continue }
            if !inTransaction {
                guard (try? fresh.exec("BEGIN IMMEDIATE")) != nil else { break }
                inTransaction = true
            }
            row.bind(to: insert)
            guard (try? insert.run()) != nil else { break }
            if fresh.changes == 0 && order == "DESC" { break }  // reached the rows copied going forward
            copied += fresh.changes
            maxSeq = max(maxSeq, row.seq)
            if copied % 1000 == 0 {
                try? fresh.exec("COMMIT")
                inTransaction = false
            }
        }
        return copied
    }

    static func timestamp(_ millis: Int64) -> String {
        var t = time_t(millis / 1000)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))\(pad(parts.tm_mon + 1, 2))\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2))\(pad(parts.tm_min, 2))\(pad(parts.tm_sec, 2))Z"
    }
}
