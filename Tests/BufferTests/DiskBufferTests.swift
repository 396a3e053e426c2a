import Foundation
import Testing
import UplinkCore
@testable import Buffer

@Suite("DiskBuffer: append, seq, hand-out, acknowledge, replay")
struct DiskBufferTests {
    @Test func appendAssignsConsecutiveSeqsStartingAtOne() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        let result = try buffer.append([makeBatch(count: 2), makeBatch("oven-2", count: 3)])
        #expect(result.committed.count == 2)
        #expect(result.committed[0].records.map(\.seq) == [1, 2])
        #expect(result.committed[1].records.map(\.seq) == [3, 4, 5])
        #expect(result.committed[1].device == "oven-2")
        #expect(result.drops.isEmpty)
        #expect(try buffer.stats().nextSeq == 6)
    }

    @Test func seqIsNeverReusedAfterAcknowledgeAndRestart() throws {
        let dir = freshDirectory()
        do {
            let buffer = try DiskBuffer(stateDirectory: dir)
            let committed = try buffer.append([makeBatch(count: 4)]).committed
            #expect(try buffer.acknowledge(1...4) == 4)
            #expect(try buffer.stats().backlogRecords == 0)
            #expect(committed[0].records.last?.seq == 4)
            buffer.close()
        }
        let reopened = try DiskBuffer(stateDirectory: dir)
        let next = try reopened.append([makeBatch(count: 1)]).committed
        #expect(next[0].records[0].seq == 5)
    }

    @Test func emptyBatchesAreIgnoredAndSpendNoSeq() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        let result = try buffer.append([PollBatch(device: "d", timestamp: 1, records: []), makeBatch(count: 1)])
        #expect(result.committed.count == 1)
        #expect(result.committed[0].records[0].seq == 1)
        #expect(result.drops.isEmpty)
    }

    @Test func everyValueKindRoundTrips() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        let values: [Value?] = [nil, .bool(true), .bool(false), .int(-42), .int(.min), .uint(.max), .double(3.25),
                                .double(.infinity), .double(-0.0), .string(""), .string("温度 °C ✓")]
        let records = values.enumerated().map { i, v in
            Record(device: "m", signal: "sig\(i)", timestamp: 1000 + Int64(i), value: v, unit: i % 2 == 0 ? nil : "°C",
                   quality: v == nil ? .exception(2) : .good)
        }
        try buffer.append([PollBatch(device: "m", timestamp: 1000, records: records)])
        let out = try buffer.nextBatches(max: 1)
        #expect(out.count == 1)
        let back = out[0].batch.records
        #expect(back.map(\.value) == values)
        #expect(back.map(\.unit) == records.map(\.unit))
        #expect(back.map(\.quality) == records.map(\.quality))
        #expect(back.map(\.timestamp) == records.map(\.timestamp))
        #expect(back.map(\.signal) == records.map(\.signal))
        #expect(out[0].batch.timestamp == 1000)
    }

    @Test func nanSurvivesTheRoundTrip() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        try buffer.append([PollBatch(device: "m", timestamp: 1, records: [Record(device: "m", signal: "x", timestamp: 1, value: .double(.nan))])])
        let value = try buffer.nextBatches(max: 1).first?.batch.records.first?.value
        guard case .double(let d)? = value else {
            Issue.record("expected a double, got \(String(describing: value))")
            return
        }
        #expect(d.isNaN)
    }

    @Test func handsOutOldestFirstAndNeverTwice() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        for i in 0..<5 { try buffer.append([makeBatch("dev\(i)", count: 2)]) }
        let first = try buffer.nextBatches(max: 2)
        let second = try buffer.nextBatches(max: 2)
        let third = try buffer.nextBatches(max: 10)
        #expect(first.map(\.batch.device) == ["dev0", "dev1"])
        #expect(second.map(\.batch.device) == ["dev2", "dev3"])
        #expect(third.map(\.batch.device) == ["dev4"])
        #expect(try buffer.nextBatches(max: 10).isEmpty)
        #expect(first.map(\.seqs) == [1...2, 3...4])
        #expect((first + second + third).allSatisfy { !$0.replayed })
    }

    @Test func maxRecordsNeverSplitsABatch() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        try buffer.append([makeBatch("a", count: 3), makeBatch("b", count: 3), makeBatch("c", count: 3)])
        let out = try buffer.nextBatches(max: 10, maxRecords: 4)
        #expect(out.map(\.batch.device) == ["a", "b"])
        #expect(out.allSatisfy { $0.batch.records.count == 3 })
        #expect(try buffer.nextBatches(max: 10).map(\.batch.device) == ["c"])
    }

    @Test func acknowledgeDeletesOnlyTheGivenSeqsAndIsIdempotent() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        try buffer.append([makeBatch("a", count: 2), makeBatch("b", count: 2), makeBatch("c", count: 2)])
        let handed = try buffer.nextBatches(max: 3)
        #expect(try buffer.acknowledge(handed[1].seqs) == 2)
        #expect(try buffer.acknowledge(handed[1].seqs) == 0)
        #expect(try buffer.acknowledge(seqs: [1, 6]) == 2)
        let left = try drainAll(buffer)
        #expect(allSeqs(left) == [2, 5])
        let stats = try buffer.stats()
        #expect(stats.backlogRecords == 2)
        #expect(stats.ackedRecords == 4)
        #expect(stats.lastAckedSeq == 6)
    }

    @Test func seqListsCollapseIntoRanges() {
        #expect(DiskBuffer.ranges(of: [5, 1, 2, 3, 9, 10, 3]) == [1...3, 5...5, 9...10])
        #expect(DiskBuffer.ranges(of: []) == [])
    }

    @Test func rewindHandsOutUnackedAgainFlaggedReplayed() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        try buffer.append([makeBatch("a"), makeBatch("b"), makeBatch("c")])
        let handed = try buffer.nextBatches(max: 2)
        try buffer.acknowledge(handed[0].seqs)
        buffer.rewind()
        let again = try buffer.nextBatches(max: 10)
        #expect(again.map(\.batch.device) == ["b", "c"])
        #expect(again.map(\.replayed) == [true, false])
    }

    @Test func restartReplaysEverythingUnackedInOrderFlaggedReplayed() throws {
        let dir = freshDirectory()
        do {
            let buffer = try DiskBuffer(stateDirectory: dir)
            try buffer.append([makeBatch("a"), makeBatch("b"), makeBatch("c")])
            let handed = try buffer.nextBatches(max: 1)
            try buffer.acknowledge(handed[0].seqs)
            _ = try buffer.nextBatches(max: 1)  // "b" in flight, never acked
            buffer.close()
        }
        let buffer = try DiskBuffer(stateDirectory: dir)
        #expect(buffer.recovery == nil)
        try buffer.append([makeBatch("d")])
        let out = try buffer.nextBatches(max: 10)
        #expect(out.map(\.batch.device) == ["b", "c", "d"])
        #expect(out.map(\.replayed) == [true, true, false])
        #expect(allSeqs(out) == Array(4...12))
    }

    @Test func lateMeansReplayedOrOlderThanTheThreshold() throws {
        let clock = ManualClock()
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: BufferOptions(maxAge: nil, clock: clock.closure))
        try buffer.append([makeBatch()])
        let batch = try #require(try buffer.nextBatches(max: 1).first)
        #expect(batch.committedAt == clock.now)
        #expect(!batch.isLate(now: clock.now + 5_000, threshold: .seconds(10)))
        #expect(batch.isLate(now: clock.now + 10_001, threshold: .seconds(10)))
        var replayed = batch
        replayed.replayed = true
        #expect(replayed.isLate(now: clock.now, threshold: .seconds(10)))
    }

    @Test func statsReportBacklogOldestAndAcks() throws {
        let clock = ManualClock()
        let buffer = try DiskBuffer(stateDirectory: freshDirectory(), options: BufferOptions(maxBytes: 1 << 20, maxAge: nil, clock: clock.closure))
        let empty = try buffer.stats()
        #expect(empty.backlogRecords == 0 && empty.oldestCommittedAt == nil && empty.lastAckAt == nil)
        let t0 = clock.now
        let b1 = makeBatch(count: 2), b2 = makeBatch(count: 3)
        try buffer.append([b1])
        clock.advance(by: 1000)
        try buffer.append([b2])
        var stats = try buffer.stats()
        #expect(stats.backlogRecords == 5)
        #expect(stats.backlogBytes == accounted(b1) + accounted(b2))
        #expect(stats.oldestCommittedAt == t0)
        #expect(stats.oldestAge(now: t0 + 2500) == 2500)
        #expect(stats.maxBytes == 1 << 20)
        #expect(stats.fileBytes > 0)
        clock.advance(by: 1000)
        try buffer.acknowledge(1...2)
        stats = try buffer.stats()
        #expect(stats.oldestCommittedAt == t0 + 1000)
        #expect(stats.lastAckAt == clock.now)
        #expect(stats.lastAckedSeq == 2)
        #expect(stats.backlogBytes == accounted(b2))
    }

    @Test func aSecondOpenOfTheSameDirectoryIsRefusedUntilClosed() throws {
        let dir = freshDirectory()
        let first = try DiskBuffer(stateDirectory: dir)
        #expect(throws: BufferError.inUse(path: dir.path)) { _ = try DiskBuffer(stateDirectory: dir) }
        first.close()
        let second = try DiskBuffer(stateDirectory: dir)
        #expect(try second.stats().nextSeq == 1)
    }

    @Test func callsAfterCloseThrowClosed() throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        buffer.close()
        #expect(throws: BufferError.closed) { try buffer.append([makeBatch()]) }
        #expect(throws: BufferError.closed) { try buffer.nextBatches(max: 1) }
        #expect(throws: BufferError.closed) { try buffer.stats() }
        buffer.close()
    }

    @Test func openCreatesAMissingStateDirectory() throws {
        let dir = freshDirectory().appendingPathComponent("nested/state")
        let buffer = try DiskBuffer(stateDirectory: dir)
        try buffer.append([makeBatch()])
        #expect(FileManager.default.fileExists(atPath: databasePath(dir)))
    }

    @Test func unwritableLocationIsACannotOpenError() throws {
        let file = freshDirectory().appendingPathComponent("a-file")
        try Data("x".utf8).write(to: file)
        #expect {
            _ = try DiskBuffer(stateDirectory: file.appendingPathComponent("state"))
        } throws: { error in
            guard case BufferError.cannotOpen = error else { return false }
            return "\(error)".contains("state directory")
        }
    }
}

@Suite("DiskBuffer: stats from another process")
struct ReadStatsTests {
    @Test func readStatsSeesCommittedStateWhileTheWriterIsOpen() throws {
        let dir = freshDirectory()
        let buffer = try DiskBuffer(stateDirectory: dir)
        try buffer.append([makeBatch(count: 3), makeBatch(count: 4)])
        try buffer.acknowledge(1...3)
        let outside = try DiskBuffer.readStats(stateDirectory: dir)
        let inside = try buffer.stats()
        #expect(outside.backlogRecords == 4)
        #expect(outside.lastAckedSeq == 3)
        #expect(outside.nextSeq == 8)
        #expect(outside.oldestCommittedAt == inside.oldestCommittedAt)
        #expect(outside.backlogBytes == inside.backlogBytes)
        // The writer is not disturbed: it keeps committing.
        try buffer.append([makeBatch(count: 1)])
        #expect(try DiskBuffer.readStats(stateDirectory: dir).nextSeq == 9)
    }

    @Test func readStatsWorksAfterTheWriterClosed() throws {
        let dir = freshDirectory()
        do {
            let buffer = try DiskBuffer(stateDirectory: dir)
            try buffer.append([makeBatch(count: 2)])
            buffer.close()
        }
        #expect(try DiskBuffer.readStats(stateDirectory: dir).backlogRecords == 2)
    }

    @Test func readStatsOfAnEmptyDirectoryIsNotFound() {
        let dir = freshDirectory()
        #expect(throws: BufferError.notFound(path: databasePath(dir))) { try DiskBuffer.readStats(stateDirectory: dir) }
    }
}
