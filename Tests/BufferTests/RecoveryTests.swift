import CSQLite
import Foundation
import Testing
import UplinkCore
@testable import Buffer

@Suite("DiskBuffer: damaged files at start-up")
struct RecoveryTests {
    /// Writes `batches` batches of 10 records and closes (the WAL is checkpointed into the file).
    func populate(_ dir: URL, batches: Int) throws -> UInt64 {
        let buffer = try DiskBuffer(stateDirectory: dir)
        for i in 0..<batches { try buffer.append([makeBatch("dev\(i % 7)", count: 10, base: Double(i))]) }
        let next = try buffer.stats().nextSeq
        buffer.close()
        return next
    }

    func asideFiles(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".corrupt-") }
    }

    @Test func aHealthyFileNeedsNoRecovery() throws {
        let dir = freshDirectory()
        _ = try populate(dir, batches: 20)
        let buffer = try DiskBuffer(stateDirectory: dir)
        #expect(buffer.recovery == nil)
        #expect(try asideFiles(dir).isEmpty)
    }

    @Test func aGarbageFileIsMovedAsideAndSeqJumpsPastAnythingIssued() throws {
        let dir = freshDirectory()
        try Data(repeating: 0x5A, count: 50_000).write(to: URL(fileURLWithPath: databasePath(dir)))
        let clock = ManualClock()
        let buffer = try DiskBuffer(stateDirectory: dir, options: BufferOptions(clock: clock.closure))
        let report = try #require(buffer.recovery)
        #expect(report.salvagedRecords == 0)
        #expect(!report.countersRecovered)
        #expect(report.nextSeq == UInt64(clock.now) * 1000)
        #expect(report.movedAsideTo.hasPrefix(databasePath(dir) + ".corrupt-"))
        #expect(FileManager.default.fileExists(atPath: report.movedAsideTo))
        #expect("\(report)".contains("moved aside"))
        let committed = try buffer.append([makeBatch()]).committed
        #expect(committed[0].records[0].seq == report.nextSeq)
    }

    @Test func aTruncatedFileKeepsWhatIsReadableAndNeverReusesASeq() throws {
        let dir = freshDirectory()
        let nextBefore = try populate(dir, batches: 300)
        let path = databasePath(dir)
        let size = Core.fileSize(path)
        #expect(truncate(path, off_t(size * 6 / 10)) == 0)

        let buffer = try DiskBuffer(stateDirectory: dir)
        let report = try #require(buffer.recovery)
        #expect(report.salvagedRecords > 0)
        #expect(report.salvagedRecords < 3000)
        let left = try drainAll(buffer)
        #expect(allSeqs(left).count == report.salvagedRecords)
        #expect(allSeqs(left) == allSeqs(left).sorted())
        #expect(allSeqs(left).allSatisfy { $0 < nextBefore })
        #expect(report.nextSeq >= nextBefore)
        // Records come back whole: the right device, ten signals, values as written.
        for batch in left {
            #expect(batch.batch.records.allSatisfy { $0.device == batch.batch.device && $0.unit == "bar" })
        }
        let new = try buffer.append([makeBatch()]).committed
        #expect(new[0].records[0].seq >= nextBefore)
        #expect(try asideFiles(dir).count == 1)
    }

    @Test func aDamagedPageInTheMiddleLosesOnlyWhatItHeld() throws {
        let dir = freshDirectory()
        let nextBefore = try populate(dir, batches: 300)
        let path = databasePath(dir)
        let pages = Core.fileSize(path) / 4096
        // Overwrite one page in the middle of the record table with garbage.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(pages / 2) * 4096)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 4096))
        try handle.close()

        let buffer = try DiskBuffer(stateDirectory: dir)
        let report = try #require(buffer.recovery)
        #expect(report.reason.contains("quick_check") || report.reason.contains("malformed"))
        #expect(report.countersRecovered)
        #expect(report.nextSeq == nextBefore)
        // One 4 KiB page holds a few dozen rows: nearly everything is salvaged, from both sides of it.
        #expect(report.salvagedRecords > 2800)
        #expect(report.salvagedRecords < 3000)
        let seqs = allSeqs(try drainAll(buffer))
        #expect(seqs.first == 1)
        #expect(seqs.last == nextBefore - 1)
        let stats = try buffer.stats()
        #expect(stats.backlogRecords == Int64(report.salvagedRecords))
    }

    @Test func aForeignSQLiteDatabaseIsMovedAsideNotUsed() throws {
        let dir = freshDirectory()
        var db: OpaquePointer?
        #expect(sqlite3_open(databasePath(dir), &db) == SQLITE_OK)
        #expect(sqlite3_exec(db, "CREATE TABLE other(x); INSERT INTO other VALUES (1);", nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)

        let buffer = try DiskBuffer(stateDirectory: dir)
        let report = try #require(buffer.recovery)
        #expect(report.reason.contains("not an Uplink buffer"))
        #expect(try buffer.append([makeBatch()]).committed.count == 1)
    }

    @Test func aRowThatDoesNotDecodeIsSkippedThenRemovedAndCounted() throws {
        let dir = freshDirectory()
        _ = try populate(dir, batches: 3)
        var db: OpaquePointer?
        #expect(sqlite3_open(databasePath(dir), &db) == SQLITE_OK)
        #expect(sqlite3_exec(db, "UPDATE record SET quality = 'no-such-quality' WHERE seq = 15", nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)

        let buffer = try DiskBuffer(stateDirectory: dir)
        let out = try buffer.nextBatches(max: 10)
        #expect(out.map { $0.batch.records.count } == [10, 9, 10])
        #expect(!allSeqs(out).contains(15))
        let drops = try buffer.pruneExpired()  // any write removes it
        #expect(drops == [BufferDrop(reason: .corrupt, records: 1, batches: 1, seqs: 15...15)])
        let stats = try buffer.stats()
        #expect(stats.dropped.corrupt == 1)
        #expect(stats.backlogRecords == 29)
    }

    @Test func countersThatDisagreeWithTheRowsAreRepairedAtOpen() throws {
        let dir = freshDirectory()
        _ = try populate(dir, batches: 5)
        var db: OpaquePointer?
        #expect(sqlite3_open(databasePath(dir), &db) == SQLITE_OK)
        #expect(sqlite3_exec(db, "UPDATE meta SET value = 1 WHERE key IN ('backlog_records', 'next_seq')", nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)

        let buffer = try DiskBuffer(stateDirectory: dir)
        #expect(buffer.recovery == nil)
        let stats = try buffer.stats()
        #expect(stats.backlogRecords == 50)
        #expect(stats.nextSeq == 51)
    }
}
