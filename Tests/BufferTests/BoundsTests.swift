import Foundation
import Testing
import UplinkCore
@testable import Buffer

@Suite("DiskBuffer: size bound, age bound, disk full")
struct BoundsTests {
    /// Room for exactly `batches` batches of `makeBatch()`.
    func options(batches: Int, _ policy: OverflowPolicy, clock: ManualClock = ManualClock()) -> BufferOptions {
        BufferOptions(maxBytes: accounted(makeBatch()) * Int64(batches), maxAge: nil, overflowPolicy: policy, clock: clock.closure)
    }

    @Test func dropOldestKeepsTheNewestWithinTheBoundAndCountsEveryDrop() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: options(batches: 4, .dropOldest))
        var drops: [BufferDrop] = []
        for i in 0..<7 { drops += try buffer.append([makeBatch("d\(i)")]).drops }
        let left = try drainAll(buffer)
        #expect(left.map(\.batch.device) == ["d3", "d4", "d5", "d6"])
        let stats = try buffer.stats()
        #expect(stats.backlogBytes <= stats.maxBytes)
        #expect(stats.dropped.overflow == 9)
        #expect(drops.map(\.reason) == [.overflow, .overflow, .overflow])
        #expect(drops.map(\.seqs) == [1...3, 4...6, 7...9])
        #expect(drops.reduce(0) { $0 + $1.records } == 9)
    }

    @Test func dropOldestSparesRecordsInFlightWhileItCan() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: options(batches: 3, .dropOldest))
        try buffer.append([makeBatch("a"), makeBatch("b"), makeBatch("c")])
        let inFlight = try buffer.nextBatches(max: 1)
        #expect(inFlight.map(\.batch.device) == ["a"])
        let result = try buffer.append([makeBatch("d")])
        #expect(result.drops.map(\.seqs) == [4...6])  // "b", not the in-flight "a"
        #expect(try drainAll(buffer).map(\.batch.device) == ["a", "c", "d"])
    }

    @Test func dropNewestKeepsWhatIsStoredAndSpendsNoSeqOnTheDropped() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: options(batches: 2, .dropNewest))
        try buffer.append([makeBatch("a"), makeBatch("b")])
        let result = try buffer.append([makeBatch("c")])
        #expect(result.committed.isEmpty)
        #expect(result.drops == [BufferDrop(reason: .overflow, records: 3, batches: 1, seqs: nil)])
        #expect(try drainAll(buffer).map(\.batch.device) == ["a", "b"])
        try buffer.acknowledge(1...3)
        let next = try buffer.append([makeBatch("d")])
        #expect(next.committed.first?.records.first?.seq == 7)  // no gap for the dropped batch
        #expect(try buffer.stats().dropped.overflow == 3)
    }

    @Test func rejectThrowsFullAndStoresNothingOfTheCall() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: options(batches: 3, .reject))
        try buffer.append([makeBatch("a"), makeBatch("b")])
        let refused = [makeBatch("c"), makeBatch("d")]
        #expect {
            try buffer.append(refused)
        } throws: { error in
            guard case BufferError.full(let needed, let free) = error else { return false }
            return needed == refused.map(accounted).reduce(0, +)
                && free == 3 * accounted(makeBatch()) - accounted(makeBatch("a")) - accounted(makeBatch("b"))
        }
        #expect(try drainAll(buffer).map(\.batch.device) == ["a", "b"])
        let stats = try buffer.stats()
        #expect(stats.dropped.rejected == 6)
        #expect(stats.dropped.total == 0)
        #expect(try buffer.append([makeBatch("e")]).committed.count == 1)
    }

    @Test func aBatchLargerThanTheWholeBufferIsDroppedNotStored() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: options(batches: 2, .dropOldest))
        try buffer.append([makeBatch("keep")])
        let result = try buffer.append([makeBatch("huge", count: 30)])
        #expect(result.committed.isEmpty)
        #expect(result.drops == [BufferDrop(reason: .overflow, records: 30, batches: 1, seqs: nil)])
        #expect(try drainAll(buffer).map(\.batch.device) == ["keep"])
    }

    @Test func recordsOlderThanMaxAgeExpireOnTheNextWrite() throws {
        let clock = ManualClock()
        let opts = BufferOptions(maxAge: .seconds(60), clock: clock.closure)
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: opts)
        try buffer.append([makeBatch("old1"), makeBatch("old2")])
        clock.advance(by: 30_000)
        try buffer.append([makeBatch("young")])
        clock.advance(by: 30_001)
        let result = try buffer.append([makeBatch("new")])
        #expect(result.drops == [BufferDrop(reason: .expired, records: 6, batches: 2, seqs: 1...6)])
        #expect(try drainAll(buffer).map(\.batch.device) == ["young", "new"])
        #expect(try buffer.stats().dropped.expired == 6)
    }

    @Test func pruneExpiredAppliesTheAgeBoundWithoutAWrite() throws {
        let clock = ManualClock()
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: BufferOptions(maxAge: .seconds(10), clock: clock.closure))
        try buffer.append([makeBatch()])
        #expect(try buffer.pruneExpired().isEmpty)
        clock.advance(by: 10_001)
        #expect(try buffer.pruneExpired().map(\.records) == [3])
        #expect(try buffer.stats().backlogRecords == 0)
    }

    @Test func expiryAppliesAtOpenAfterALongStop() throws {
        let clock = ManualClock()
        let dir = freshDirectory()
        let opts = BufferOptions(maxAge: .seconds(10), clock: clock.closure)
        do {
            let buffer = try DiskBuffer(stateDirectory: dir, options: opts)
            try buffer.append([makeBatch()])
            buffer.close()
        }
        clock.advance(by: 60_000)
        let buffer = try DiskBuffer(stateDirectory: dir, options: opts)
        let stats = try buffer.stats()
        #expect(stats.backlogRecords == 0)
        #expect(stats.dropped.expired == 3)
    }

    @Test func dropCountersSurviveARestart() throws {
        let dir = freshDirectory()
        do {
            let buffer = try DiskBuffer(stateDirectory: dir, options: options(batches: 1, .dropOldest))
            for _ in 0..<4 { try buffer.append([makeBatch()]) }
            buffer.close()
        }
        #expect(try DiskBuffer.readStats(stateDirectory: dir).dropped.overflow == 9)
        let reopened = try DiskBuffer(stateDirectory: dir, options: options(batches: 1, .dropOldest))
        #expect(try reopened.stats().dropped.overflow == 9)
    }

    @Test func aFullDiskWithDropOldestFreesOldRecordsAndKeepsAccepting() throws {
        // maxFileBytes caps the file through SQLite's max_page_count: SQLITE_FULL, like a full disk.
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(),
                                    options: BufferOptions(maxBytes: 1 << 30, maxAge: nil, maxFileBytes: 96 * 1024))
        var diskFullDrops: [BufferDrop] = []
        var committedAfterFirstDrop = 0
        for i in 0..<400 {
            let result = try buffer.append([makeBatch("d\(i)", count: 10)])
            if !diskFullDrops.isEmpty { committedAfterFirstDrop += result.committed.count }
            diskFullDrops += result.drops.filter { $0.reason == .diskFull }
        }
        #expect(!diskFullDrops.isEmpty)
        #expect(diskFullDrops.allSatisfy { $0.seqs != nil })  // old, committed records made room
        #expect(committedAfterFirstDrop > 0)
        let stats = try buffer.stats()
        #expect(stats.dropped.diskFull == UInt64(diskFullDrops.reduce(0) { $0 + $1.records }))
        #expect(Core.fileSize(buffer.stateDirectory.appendingPathComponent("buffer.sqlite").path) <= 96 * 1024)
        // What is left is intact, in order, and ends with the newest batch.
        let left = try drainAll(buffer)
        #expect(left.last?.batch.device == "d399")
        #expect(allSeqs(left) == allSeqs(left).sorted())
    }

    @Test func aFullDiskWithDropNewestDropsTheIncomingAndCountsIt() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(),
                                    options: BufferOptions(maxBytes: 1 << 30, maxAge: nil, overflowPolicy: .dropNewest,
                                                           maxFileBytes: 64 * 1024))
        var dropped = 0
        var firstDropAt: Int?
        for i in 0..<300 {
            let result = try buffer.append([makeBatch("d\(i)", count: 10)])
            for drop in result.drops {
                #expect(drop.reason == .diskFull)
                #expect(drop.seqs == nil)
                dropped += drop.records
                if firstDropAt == nil { firstDropAt = i }
            }
        }
        let first = try #require(firstDropAt)
        let stats = try buffer.stats()
        #expect(stats.dropped.diskFull == UInt64(dropped))
        #expect(try drainAll(buffer).count == first)  // everything before the disk filled is kept
        // Acknowledging frees room again.
        try buffer.acknowledge(1...UInt64(first * 10))
        #expect(try buffer.append([makeBatch("after", count: 10)]).committed.count == 1)
    }
}
