import Dispatch
import Foundation
import Synchronization
import Testing
import TestSupport
import UplinkCore
@testable import Buffer

/// Holds the writer thread in a job until `release()`, so that what is submitted meanwhile is
/// deterministically queued together.
final class WriterHold: Sendable {
    private let gate = DispatchSemaphore(value: 0)
    private let entered = DispatchSemaphore(value: 0)
    init(_ writer: BufferWriter) {
        let gate = self.gate, entered = self.entered
        writer.engine.enqueue(.job(commitAcks: true) { _, _ in
            entered.signal()
            gate.wait()
        })
        entered.wait()
    }
    func release() { gate.signal() }
}

/// Collects completion results from many threads.
final class Results: Sendable {
    private let items = Mutex<[Result<AppendResult, BufferError>]>([])
    func add(_ r: Result<AppendResult, BufferError>) { items.withLock { $0.append(r) } }
    var all: [Result<AppendResult, BufferError>] { items.withLock { $0 } }
}

@Suite("BufferWriter: group commit for many producers")
struct BufferWriterTests {
    @Test func manyProducerThreadsShareOneCommitAndGetUniqueSeqs() async throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        let writer = BufferWriter(buffer: buffer)
        let hold = WriterHold(writer)
        let results = Results()
        let producers = 8, perProducer = 100
        DispatchQueue.concurrentPerform(iterations: producers) { p in
            for i in 0..<perProducer {
                writer.submit(makeBatch("p\(p)", count: 5, base: Double(i))) { results.add($0) }
            }
        }
        #expect(writer.pendingRecords == producers * perProducer * 5)
        hold.release()
        try await writer.flush()
        #expect(writer.commits == 1)
        #expect(writer.pendingRecords == 0)

        let committed = try results.all.flatMap { try $0.get().committed }
        #expect(committed.count == producers * perProducer)
        let seqs = committed.flatMap { $0.records.map(\.seq) }
        #expect(Set(seqs).count == seqs.count)
        #expect(seqs.sorted() == Array(1...UInt64(seqs.count)))
        // Each producer's batches were committed in the order it submitted them.
        for p in 0..<producers {
            let mine = committed.filter { $0.device == "p\(p)" }
            #expect(mine.map { $0.records[0].value } == (0..<perProducer).map { Value.double(Double($0)) })
            #expect(mine.map { $0.records[0].seq } == mine.map { $0.records[0].seq }.sorted())
        }
        await writer.close()
    }

    @Test func largeGroupsAreSplitAtMaxRecordsPerCommit() async throws {
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: freshDirectory()), maxRecordsPerCommit: 10)
        let hold = WriterHold(writer)
        for _ in 0..<6 { writer.submit(makeBatch(count: 5)) }
        hold.release()
        try await writer.flush()
        #expect(writer.commits == 3)
        #expect(try await writer.stats().backlogRecords == 30)
        await writer.close()
    }

    @Test func aFullQueueDropsAtOnceAndCountsInsteadOfBlocking() async throws {
        let buffer = try DiskBuffer(stateDirectory: freshDirectory())
        let writer = BufferWriter(buffer: buffer, maxPendingRecords: 10)
        let hold = WriterHold(writer)
        let results = Results()
        for i in 0..<3 { writer.submit(makeBatch("d\(i)", count: 5)) { results.add($0) } }
        // The third completion already ran on this thread: dropped, not queued.
        let early = results.all
        #expect(early.count == 1)
        #expect(try early[0].get().drops == [BufferDrop(reason: .queueOverflow, records: 5, batches: 1, seqs: nil)])
        hold.release()
        try await writer.flush()
        let stats = try await writer.stats()
        #expect(stats.backlogRecords == 10)
        #expect(stats.dropped.queueOverflow == 5)
        await writer.close()
        // The persisted counter survives the restart.
        #expect(try DiskBuffer.readStats(stateDirectory: buffer.stateDirectory).dropped.queueOverflow == 5)
    }

    @Test func dropsAreAlsoPublishedOnTheDropsStream() async throws {
        let unit = accounted(makeBatch())
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: freshDirectory(),
                                                         options: BufferOptions(maxBytes: unit * 2, maxAge: nil)))
        for i in 0..<3 { try await writer.append([makeBatch("d\(i)")]) }
        await writer.close()
        var seen: [BufferDrop] = []
        for await drop in writer.drops { seen.append(drop) }  // finishes at close
        #expect(seen == [BufferDrop(reason: .overflow, records: 3, batches: 1, seqs: 1...3)])
    }

    @Test func appendReturnsOnlyOnceTheRecordsAreOnDisk() async throws {
        let dir = freshDirectory()
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: dir))
        let result = try await writer.append([makeBatch(count: 4)])
        #expect(result.committed.first?.records.map(\.seq) == [1, 2, 3, 4])
        // Another connection (as `uplink status` would) sees it committed.
        #expect(try DiskBuffer.readStats(stateDirectory: dir).backlogRecords == 4)
        await writer.close()
    }

    @Test func publisherPathReadsAndAcknowledgesInOrder() async throws {
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: freshDirectory()))
        try await writer.append([makeBatch("a"), makeBatch("b"), makeBatch("c")])
        let first = try await writer.nextBatches(max: 2)
        #expect(first.map(\.batch.device) == ["a", "b"])
        writer.acknowledge(first[0].seqs)
        writer.acknowledge([first[1].seqs])
        await writer.rewind()
        let again = try await writer.nextBatches(max: 10)
        #expect(again.map(\.batch.device) == ["c"])  // the acks were committed before the rewind
        let stats = try await writer.stats()
        #expect(stats.backlogRecords == 3)
        #expect(stats.ackedRecords == 6)
        await writer.close()
    }

    @Test func rejectPolicyFailsTheSubmissionWithFull() async throws {
        let unit = accounted(makeBatch())
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: freshDirectory(),
                                                         options: BufferOptions(maxBytes: unit, overflowPolicy: .reject)))
        try await writer.append([makeBatch()])
        await #expect {
            try await writer.append([makeBatch()])
        } throws: { error in
            if case BufferError.full = error { return true }
            return false
        }
        await writer.close()
    }

    @Test func closeCommitsWhatIsQueuedThenRefusesNewWork() async throws {
        let dir = freshDirectory()
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: dir))
        let hold = WriterHold(writer)
        writer.submit(makeBatch(count: 7))
        hold.release()
        await writer.close()
        await writer.close()
        #expect(try DiskBuffer.readStats(stateDirectory: dir).backlogRecords == 7)
        let results = Results()
        writer.submit(makeBatch()) { results.add($0) }
        #expect(results.all.count == 1)
        #expect(throws: BufferError.closed) { try results.all[0].get() }
        await #expect(throws: BufferError.closed) { try await writer.nextBatches(max: 1) }
        // The directory lock is released: the next agent can open it.
        #expect(try DiskBuffer(stateDirectory: dir).stats().backlogRecords == 7)
    }

    @Test func withAnAckDelayAcknowledgementsRideAlongWithTheNextCommitOfNewRecords() async throws {
        let dir = freshDirectory()
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: dir), ackDelay: .seconds(30))
        try await writer.append([makeBatch("a"), makeBatch("b")])
        let out = try await writer.nextBatches(max: 2)
        let commitsBefore = writer.commits
        writer.acknowledge(out.map(\.seqs))
        // Reading on does not commit them, and they are not handed out again.
        #expect(try await writer.nextBatches(max: 10).isEmpty)
        #expect(writer.commits == commitsBefore, "the acknowledgements got a commit of their own")
        #expect(try DiskBuffer.readStats(stateDirectory: dir).backlogRecords == 6)
        // The next records carry them: one commit for both.
        try await writer.append([makeBatch("c")])
        #expect(writer.commits == commitsBefore + 1)
        let onDisk = try DiskBuffer.readStats(stateDirectory: dir)
        #expect(onDisk.backlogRecords == 3)
        #expect(onDisk.ackedRecords == 6)
        await writer.close()
    }

    @Test func withAnAckDelayLoneAcknowledgementsAreCommittedAfterIt() async throws {
        let dir = freshDirectory()
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: dir), ackDelay: .milliseconds(200))
        try await writer.append([makeBatch("a")])
        let out = try await writer.nextBatches(max: 1)
        writer.acknowledge(out[0].seqs)
        let committed = await TestSupport.waitUntil(timeout: 5, interval: 0.05) {
            (try? DiskBuffer.readStats(stateDirectory: dir).backlogRecords) == 0
        }
        #expect(committed, "lone acknowledgements were never committed")
        await writer.close()
    }

    @Test func statsAndFlushCommitPendingAcknowledgements() async throws {
        let dir = freshDirectory()
        let writer = BufferWriter(buffer: try DiskBuffer(stateDirectory: dir), ackDelay: .seconds(30))
        try await writer.append([makeBatch("a"), makeBatch("b")])
        let out = try await writer.nextBatches(max: 2)
        writer.acknowledge(out[0].seqs)
        #expect(try await writer.stats().backlogRecords == 3)
        writer.acknowledge(out[1].seqs)
        try await writer.flush()
        #expect(try DiskBuffer.readStats(stateDirectory: dir).backlogRecords == 0)
        await writer.close()
    }
}
