// BufferWriter: runs a DiskBuffer on its own thread. Producers (pollers) hand batches in without
// waiting; the thread gathers what arrived and commits it in one transaction (group commit), so
// many producers share one fsync. The publisher's reads and acknowledgements go through the same
// thread, in order, via async methods that never block the cooperative pool.
import Dispatch
import Foundation
import Synchronization
import UplinkCore

/// The asynchronous, group-committing face of a `DiskBuffer`.
///
/// - `submit` never blocks: it queues the batch and returns. The completion (optional) runs on the
///   writer thread after the commit, with the committed batch (seqs set) or what was dropped.
///   If the queue holds more than `maxPendingRecords` (the disk stalled), the new batch is
///   dropped at once and counted (`DropReason.queueOverflow`): a producer is never held up.
/// - `append` is the awaiting variant: it suspends (without blocking a thread) until committed.
/// - `acknowledge` queues deletions that ride along with the next group commit of new records, or
///   are committed on their own after `ackDelay` if none comes: an acknowledgement lost in a crash
///   only means a record is sent again (a repeat of a delivered seq, never a loss), so it does not
///   get an fsync of its own. `flush()` and `stats()` commit them first.
/// - Every drop is also yielded on `drops`, for logging.
///
/// Work is executed in submission order. Call `close()` at shutdown: it commits what is queued,
/// closes the buffer and ends the thread.
public final class BufferWriter: Sendable {
    public let buffer: DiskBuffer
    /// Every drop (old records pushed out, expired, queue overflow, disk full), for logging.
    /// Buffers the newest 1024 if nobody reads.
    public let drops: AsyncStream<BufferDrop>
    let engine: Engine

    /// Starts the writer thread for `buffer`.
    /// - Parameters:
    ///   - maxPendingRecords: records queued in memory before new submissions are dropped.
    ///   - maxRecordsPerCommit: records committed per transaction at most.
    ///   - linger: how long the thread waits for more batches before committing a small group.
    ///   - ackDelay: how long acknowledgements wait for a commit of new records to ride along with.
    public init(buffer: DiskBuffer, maxPendingRecords: Int = 100_000, maxRecordsPerCommit: Int = 20_000,
                linger: Duration = .milliseconds(2), ackDelay: Duration = .zero) {
        let (stream, continuation) = AsyncStream.makeStream(of: BufferDrop.self, bufferingPolicy: .bufferingNewest(1024))
        self.buffer = buffer
        self.drops = stream
        self.engine = Engine(buffer: buffer, drops: continuation, maxPendingRecords: maxPendingRecords,
                             maxRecordsPerCommit: maxRecordsPerCommit, linger: linger, ackDelay: ackDelay)
        let engine = self.engine
        let thread = Thread { engine.run() }
        thread.name = "uplink-buffer-writer"
        thread.start()
    }

    deinit {
        engine.enqueue(.close(nil))
    }

    /// Queues `batches` for the next group commit; never blocks. `completion` runs on the writer
    /// thread after the commit with the `AppendResult` (committed batches with seqs, drops), or
    /// `.full` (reject policy), `.diskFull`/`.io` (nothing stored, counted). When the queue is full
    /// (a `.queueOverflow` drop) or the writer is closed (`.closed`) it runs at once on the
    /// calling thread. Keep it short: it delays the next commit.
    public func submit(_ batches: [PollBatch],
                       completion: (@Sendable (Result<AppendResult, BufferError>) -> Void)? = nil) {
        engine.submit(batches, completion: completion ?? { _ in })
    }

    /// Queues `batch`; see `submit(_:completion:)`.
    public func submit(_ batch: PollBatch, completion: (@Sendable (Result<AppendResult, BufferError>) -> Void)? = nil) {
        submit([batch], completion: completion)
    }

    /// Commits `batches` with the next group commit and returns once they are on disk.
    @discardableResult
    public func append(_ batches: [PollBatch]) async throws(BufferError) -> AppendResult {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<AppendResult, BufferError>, Never>) in
            engine.submit(batches) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Queues the deletion of acknowledged records; committed with the next group commit.
    public func acknowledge(_ ranges: [ClosedRange<UInt64>]) {
        guard !ranges.isEmpty else { return }
        engine.enqueue(.ack(ranges))
    }

    /// Queues the deletion of one acknowledged range of seqs.
    public func acknowledge(_ range: ClosedRange<UInt64>) {
        acknowledge([range])
    }

    /// The next batches not yet handed out (see `DiskBuffer.nextBatches`), read on the writer thread.
    public func nextBatches(max: Int, maxRecords: Int = .max) async throws(BufferError) -> [BufferedBatch] {
        // Acknowledged records were handed out before, so they lie behind the cursor: reading
        // does not need the pending acknowledgements committed.
        try await perform(commitAcks: false) { (buffer) throws(BufferError) in
            try buffer.nextBatches(max: max, maxRecords: maxRecords)
        }
    }

    /// See `DiskBuffer.rewind()`; ordered after everything queued before it (acknowledgements
    /// included, so acknowledged records are not handed out again).
    public func rewind() async {
        _ = try? await perform { (buffer) throws(BufferError) in buffer.rewind() }
    }

    /// Statistics after everything queued before this call is committed.
    public func stats() async throws(BufferError) -> BufferStats {
        try await perform { (buffer) throws(BufferError) in try buffer.stats() }
    }

    /// Returns once everything queued before this call is committed. Throws if the last commit's
    /// acknowledgements could not be written.
    public func flush() async throws(BufferError) {
        try await perform(failOnAckError: true) { (_) throws(BufferError) in }
    }

    /// Records queued and not yet committed.
    public var pendingRecords: Int { engine.pendingRecords }

    /// Transactions committed so far. Compared with the batches submitted, it shows how much the
    /// group commit saves (one fsync per commit).
    public var commits: Int { engine.commits }

    /// Commits what is queued, closes the buffer and stops the thread. Later calls fail with
    /// `.closed`. Idempotent.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            engine.enqueue(.close { continuation.resume() })
        }
    }

    private func perform<T: Sendable>(failOnAckError: Bool = false, commitAcks: Bool = true,
                                      _ body: @escaping @Sendable (DiskBuffer) throws(BufferError) -> T) async throws(BufferError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, BufferError>, Never>) in
            engine.enqueue(.job(commitAcks: commitAcks) { buffer, ackError in
                if failOnAckError, let ackError {
                    continuation.resume(returning: .failure(ackError))
                    return
                }
                do throws(BufferError) {
                    continuation.resume(returning: .success(try body(buffer)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }, orElse: { continuation.resume(returning: .failure(.closed)) })
        }
        return try result.get()
    }
}

/// The writer thread and its queue. Held by the thread, not by the thread's owner, so dropping
/// the `BufferWriter` closes it.
final class Engine: Sendable {
    typealias Completion = @Sendable (Result<AppendResult, BufferError>) -> Void

    enum Work: Sendable {
        case append([PollBatch], records: Int, Completion)
        case ack([ClosedRange<UInt64>])
        /// Runs on the writer thread after the preceding writes (and, with `commitAcks`, the
        /// pending acknowledgements), with their ack error if any.
        case job(commitAcks: Bool, @Sendable (DiskBuffer, BufferError?) -> Void)
        case close((@Sendable () -> Void)?)
    }

    private struct State {
        var queue: [Work] = []
        var pendingRecords = 0
        var overflowRecords = 0
        var closing = false
        var closed = false
        var closeWaiters: [@Sendable () -> Void] = []
        var commits = 0
    }

    private let buffer: DiskBuffer
    private let dropsContinuation: AsyncStream<BufferDrop>.Continuation
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let maxPendingRecords: Int
    private let maxRecordsPerCommit: Int
    private let linger: Duration
    private let ackDelay: Duration

    init(buffer: DiskBuffer, drops: AsyncStream<BufferDrop>.Continuation, maxPendingRecords: Int,
         maxRecordsPerCommit: Int, linger: Duration, ackDelay: Duration) {
        self.buffer = buffer
        self.dropsContinuation = drops
        self.maxPendingRecords = max(1, maxPendingRecords)
        self.maxRecordsPerCommit = max(1, maxRecordsPerCommit)
        self.linger = linger
        self.ackDelay = ackDelay
    }

    var pendingRecords: Int { state.withLock { $0.pendingRecords } }
    var commits: Int { state.withLock { $0.commits } }

    func submit(_ batches: [PollBatch], completion: @escaping Completion) {
        let records = batches.reduce(0) { $0 + $1.records.count }
        enum Verdict { case queued, overflow, closed }
        let verdict: Verdict = state.withLock { s in
            if s.closing { return .closed }
            if s.pendingRecords > 0 && s.pendingRecords + records > maxPendingRecords {
                s.overflowRecords += records
                return .overflow
            }
            s.pendingRecords += records
            s.queue.append(.append(batches, records: records, completion))
            return .queued
        }
        switch verdict {
        case .queued:
            wake.signal()
        case .overflow:
            let drop = BufferDrop(reason: .queueOverflow, records: records, batches: batches.count, seqs: nil)
            dropsContinuation.yield(drop)
            completion(.success(AppendResult(committed: [], drops: [drop])))
            wake.signal()
        case .closed:
            completion(.failure(.closed))
        }
    }

    /// Queues `work`; if the writer is closing, runs `orElse` instead (close waiters are kept).
    func enqueue(_ work: Work, orElse: (@Sendable () -> Void)? = nil) {
        enum Verdict { case queued, rejected, alreadyClosed((@Sendable () -> Void)?) }
        let verdict: Verdict = state.withLock { s in
            if case .close(let done) = work {
                if s.closed { return .alreadyClosed(done) }
                if s.closing {
                    if let done { s.closeWaiters.append(done) }
                    return .queued
                }
                s.closing = true
                s.queue.append(work)
                return .queued
            }
            if s.closing { return .rejected }
            s.queue.append(work)
            return .queued
        }
        switch verdict {
        case .queued: wake.signal()
        case .rejected: orElse?()
        case .alreadyClosed(let done): done?()
        }
    }

    /// The writer thread.
    func run() {
        var running = true
        // Acknowledgements waiting for a commit of new records, and since when.
        var heldAcks: [ClosedRange<UInt64>] = []
        var heldSince = ContinuousClock.now
        while running {
            if heldAcks.isEmpty {
                wake.wait()
            } else {
                let left = ackDelay - (ContinuousClock.now - heldSince)
                let nanos = max(0, left.milliseconds) * 1_000_000
                if wake.wait(timeout: .now() + .nanoseconds(Int(clamping: nanos))) == .timedOut {
                    // Nothing else came: commit the acknowledgements on their own.
                    _ = process([], overflow: 0, heldAcks: heldAcks, holdAcks: false)
                    heldAcks.removeAll()
                    continue
                }
            }
            if linger > .zero {
                let (hasAppends, pending) = state.withLock { s in
                    (s.queue.contains { if case .append = $0 { true } else { false } }, s.pendingRecords)
                }
                if hasAppends && pending < maxRecordsPerCommit {
                    let ms = linger.milliseconds
                    usleep(UInt32(clamping: max(1, ms) * 1000))
                }
            }
            let (items, overflow) = state.withLock { s -> ([Work], Int) in
                let items = s.queue
                let overflow = s.overflowRecords
                s.queue.removeAll()
                s.overflowRecords = 0
                return (items, overflow)
            }
            let hadAcks = !heldAcks.isEmpty
            let outcome = process(items, overflow: overflow, heldAcks: heldAcks, holdAcks: ackDelay > .zero)
            running = outcome.running
            heldAcks = outcome.heldAcks
            if !hadAcks && !heldAcks.isEmpty { heldSince = .now }
        }
    }

    /// Processes `items` in order; consecutive appends and acks share one commit. With `holdAcks`,
    /// acknowledgements with no new records to ride along with are handed back instead of being
    /// committed. `running` is false after a close.
    private func process(_ items: [Work], overflow: Int, heldAcks: [ClosedRange<UInt64>],
                         holdAcks: Bool) -> (running: Bool, heldAcks: [ClosedRange<UInt64>]) {
        var submissions: [[PollBatch]] = []
        var completions: [(Completion, Int)] = []
        var acks: [ClosedRange<UInt64>] = heldAcks
        var groupRecords = 0
        var lastAckError: BufferError?
        var overflowToCount = overflow

        func commit() {
            guard !submissions.isEmpty || !acks.isEmpty || overflowToCount > 0 else { return }
            let outcome = buffer.write(submissions: submissions, acks: acks,
                                       uncommittedDrops: overflowToCount > 0 ? [.queueOverflow: overflowToCount] : [:])
            overflowToCount = 0
            lastAckError = outcome.ackError
            for drop in outcome.drops { dropsContinuation.yield(drop) }
            // Counted before the completions run, so a producer that was told "committed" sees it.
            let released = completions.reduce(0) { $0 + $1.1 }
            state.withLock { s in
                s.pendingRecords -= released
                s.commits += 1
            }
            for (index, (completion, _)) in completions.enumerated() {
                // Drops caused by the whole commit (old records pushed out) go to the first
                // submission's result; per-submission losses are in its own result.
                let shared = index == 0 ? outcome.drops : []
                switch outcome.results[index] {
                case .stored(let committed):
                    completion(.success(AppendResult(committed: committed, drops: shared)))
                case .rejected(let error), .failed(let error):
                    completion(.failure(error))
                }
            }
            submissions.removeAll()
            completions.removeAll()
            acks.removeAll()
            groupRecords = 0
        }

        for item in items {
            switch item {
            case .append(let batches, let records, let completion):
                if groupRecords > 0 && groupRecords + records > maxRecordsPerCommit { commit() }
                submissions.append(batches)
                completions.append((completion, records))
                groupRecords += records
            case .ack(let ranges):
                acks.append(contentsOf: ranges)
            case .job(let commitAcks, let body):
                if commitAcks || !submissions.isEmpty || overflowToCount > 0 || !holdAcks {
                    commit()
                }
                body(buffer, lastAckError)
            case .close(let done):
                commit()
                buffer.close()
                let waiters = state.withLock { s -> [@Sendable () -> Void] in
                    s.closed = true
                    // Anything queued after the close request was refused at enqueue time.
                    let w = s.closeWaiters
                    s.closeWaiters.removeAll()
                    return w
                }
                dropsContinuation.finish()
                done?()
                for waiter in waiters { waiter() }
                return (false, [])
            }
        }
        if holdAcks && submissions.isEmpty && overflowToCount == 0 {
            return (true, acks)
        }
        commit()
        return (true, [])
    }
}
