import Dispatch
import Foundation
import Testing
import TestSupport
import UplinkCore
@testable import Buffer

/// kill -9 in the middle of committing: our own writer runs in a child process (this test binary,
/// re-run with a filter and an environment variable), prints every seq range after its commit
/// returned, and is killed with SIGKILL. Everything it printed must be on disk after reopening.
@Suite("DiskBuffer: crash safety")
struct CrashTests {
    static let childVariable = "UPLINK_BUFFER_CRASH_CHILD"

    @Test func killNineLosesNothingThatWasCommitted() async throws {
        if let dir = ProcessInfo.processInfo.environment[Self.childVariable] {
            Self.runChildWriter(URL(fileURLWithPath: dir))  // never returns
        }
        let dir = freshDirectory()
        let child = try ChildProcess(CommandLine.arguments[0],
                                     ["--testing-library", "swift-testing", "--filter", "killNineLosesNothingThatWasCommitted"],
                                     environment: [Self.childVariable: dir.path])
        // Let it commit for a while (a bound, not an assertion on speed).
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && Self.parse(child.outputText).committed.count < 20_000 && child.process.isRunning {
            try await Task.sleep(for: .milliseconds(20))
        }
        // Another process (this one) reads the statistics while the child writes, without
        // disturbing it: the child keeps committing afterwards.
        let during = try DiskBuffer.readStats(stateDirectory: dir)
        #expect(during.nextSeq > 1)
        let committedBefore = Self.parse(child.outputText).committed.count
        #expect(await Self.eventually { Self.parse(child.outputText).committed.count > committedBefore + 100 })
        child.signal(SIGKILL)
        #expect(child.waitForExit(timeout: 10) != nil)
        let (committed, acked) = Self.parse(child.outputText)
        #expect(committed.count >= 20_000, "child output: \(child.outputText.suffix(2000))")

        let buffer = try DiskBuffer(stateDirectory: dir)
        #expect(buffer.recovery == nil)
        let onDisk = try drainAll(buffer)
        let present = Set(allSeqs(onDisk))
        let missing = committed.filter { seq in !present.contains(seq) && !acked.contains { $0.contains(seq) } }
        #expect(missing.isEmpty, "committed but lost: \(missing.prefix(20))")
        #expect(allSeqs(onDisk) == allSeqs(onDisk).sorted())
        // Whole batches only: a batch is all there or all gone.
        #expect(onDisk.allSatisfy { $0.batch.records.count == 4 })
        let maxSeen = max(committed.max() ?? 0, present.max() ?? 0)
        let next = try buffer.append([makeBatch()]).committed
        #expect(next[0].records[0].seq > maxSeen)
    }

    /// Parses "UPLINK-C first last" (committed) and "UPLINK-A first last" (ack queued) lines.
    static func parse(_ output: String) -> (committed: [UInt64], acked: [ClosedRange<UInt64>]) {
        var committed: [UInt64] = []
        var acked: [ClosedRange<UInt64>] = []
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let a = UInt64(parts[1]), let b = UInt64(parts[2]), a <= b else { continue }
            if parts[0] == "UPLINK-C" { committed += Array(a...b) }
            if parts[0] == "UPLINK-A" { acked.append(a...b) }
        }
        return (committed, acked)
    }

    static func eventually(_ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    static func say(_ text: String) {
        let line = text + "\n"
        _ = line.withCString { write(1, $0, strlen($0)) }  // unbuffered: survives SIGKILL
    }

    /// The child: three producer threads submit batches through a BufferWriter; the main thread
    /// plays publisher, acknowledging every other batch it reads. Runs until killed.
    static func runChildWriter(_ dir: URL) -> Never {
        let buffer: DiskBuffer
        do { buffer = try DiskBuffer(stateDirectory: dir) } catch {
            say("UPLINK-ERROR \(error)")
            exit(3)
        }
        let writer = BufferWriter(buffer: buffer)
        for p in 0..<3 {
            Thread.detachNewThread {
                var i = 0
                while true {
                    let done = DispatchSemaphore(value: 0)
                    writer.submit(makeBatch("p\(p)", count: 4, base: Double(i))) { result in
                        if case .success(let r) = result, let b = r.committed.first, let f = b.records.first, let l = b.records.last {
                            say("UPLINK-C \(f.seq) \(l.seq)")
                        }
                        done.signal()
                    }
                    if i % 4 == 0 { done.wait() }  // keep the queue short, vary group sizes
                    i += 1
                }
            }
        }
        let publisher = DispatchSemaphore(value: 0)
        Task.detached {
            var n = 0
            while true {
                let batches = (try? await writer.nextBatches(max: 8)) ?? []
                for b in batches {
                    n += 1
                    if n % 2 == 0 {
                        say("UPLINK-A \(b.seqs.lowerBound) \(b.seqs.upperBound)")
                        writer.acknowledge(b.seqs)
                    }
                }
                if batches.isEmpty { try? await Task.sleep(for: .milliseconds(1)) }
            }
        }
        publisher.wait()
        exit(0)
    }
}
