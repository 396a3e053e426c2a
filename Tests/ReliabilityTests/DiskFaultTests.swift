// Issue 6, part 3: disk faults. The state directory on a 2 MB tmpfs that fills up; a data partition
// that turns read-only under the agent (ext4 `errors=remount-ro` after an error); a buffer file that
// is truncated or overwritten with garbage before start-up.

import Foundation
import Testing
import TestSupport

extension Reliability {
    @Suite("3. Disk faults", needsBroker) struct DiskFaults {
        @Test("the state directory on a 2 MB tmpfs fills up: oldest records make room (counted, logged), polling goes on; after the broker returns the backlog drains and committing resumes",
              .timeLimit(.minutes(3)), .enabled(if: Facilities.tmpfs, "needs root and tmpfs mounts"))
        func smallDiskFillsUp() async throws {
            let sandbox = Sandbox("tmpfs")
            defer { sandbox.cleanUp() }
            let disk = try Tmpfs(sandbox, name: "small", size: "2m")
            let state = disk.mountPoint.appendingPathComponent("state")
            // The broker runs and the subscriber is subscribed from the start; the agent reaches the broker
            // through a proxy that refuses it until "the broker comes back".
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let proxy = try FaultProxy(upstreamPort: broker.port)
            sandbox.onCleanup("stop proxy") { proxy.stop() }
            proxy.set(.reset)
            let fleet = machines(1, registers: 100)
            let sim = try Sim(sandbox, machines: fleet, control: true)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: proxy.url, interval: "50ms")
            let agent = try Agent(sandbox, config: config, stateDirectory: state)
            #expect(await agent.waitForLog("msg=ready"), "\(agent.output)")

            // Full: the first disk-full drop is counted (buffer meta) and logged.
            var status = try agent.status()
            let full = try await TestSupport.waitUntil(timeout: 120, interval: 0.5) {
                status = try agent.status()
                return (status.drops["disk_full"] ?? 0) > 0
            }
            try #require(full, "no disk_full drop: \(status.text)\n\(agent.output.suffix(2000))")
            #expect(await agent.waitForLog("disk-full"), "\(agent.output.suffix(2000))")
            let nextSeqAtFull = status.nextSeq

            // Polling goes on while the disk is full: the device is still asked, and the drops keep being
            // logged (at most a line per 10 s) with their count. status.json cannot be rewritten on a full
            // disk, so `uplink status` shows the device state of the moment the disk filled: the
            // simulator's request count is the witness.
            let requestsAtFull = try sim.requests(of: "m1")
            #expect(try await TestSupport.waitUntil(timeout: 30, interval: 0.5) { try sim.requests(of: "m1") >= requestsAtFull + 40 },
                    "polling stopped once the disk was full")
            #expect(await agent.waitForLog("disk-full", count: 2, timeout: 25), "drops were not logged again: \(agent.output.suffix(1500))")
            #expect(agent.isRunning, "\(agent.output.suffix(2000))")
            let dropLines = agent.logLines(containing: "buffer dropped records")
            let committedDrops = dropLines.filter { $0.contains("disk-full") && !$0.contains("seqs=-") && !$0.contains("never committed") }
            let refusedLines = agent.logLines(containing: "buffer refused a poll")
            let whileFull = try agent.status()

            // drop_oldest on a full disk deletes the oldest records to make room for new ones (docs/buffer.md):
            // the buffer gives its reserve back so that the deletions can commit.
            #expect(!committedDrops.isEmpty, "no oldest records were dropped to make room: \(dropLines)")
            #expect(whileFull.nextSeq > nextSeqAtFull + 500, "no new record was committed while full: next_seq \(whileFull.nextSeq)")

            // The broker comes back: acknowledged records should be deleted and new ones committed again.
            proxy.set(.pass)
            #expect(await agent.waitForLog("connected to the broker", timeout: 30), "\(agent.output.suffix(2000))")
            let sent = await TestSupport.waitUntil(timeout: 30, interval: 0.5) { subscriber.ledger.seqs.count >= Int(nextSeqAtFull - 1) }
            #expect(sent, "the backlog was not sent: \(subscriber.ledger.seqs.count) of \(nextSeqAtFull - 1) seqs arrived")
            let resumed = await TestSupport.waitUntil(timeout: 10, interval: 0.5) {
                guard let now = try? agent.status() else { return false }
                return now.nextSeq > whileFull.nextSeq + 500 && now.backlog.records < whileFull.backlog.records
            }
            // Acknowledgements commit on the full disk too: the backlog drains and new records are stored.
            #expect(resumed, "the agent did not resume committing after the broker returned: \((try? agent.status().text) ?? "")")
            #expect(try agent.status().backlog.records < whileFull.backlog.records, "the backlog did not drain")
            #expect(agent.terminate(timeout: 10) == 0, "\(agent.output.suffix(2000))")
            #expect(agent.process.process.terminationReason == .exit)
            let final = try agent.status()
            let ledger = await subscriber.waitForAll(below: final.nextSeq, timeout: resumed ? 30 : 10)
            // Every seq is delivered, dropped by the policy (counted) or still in the buffer; none reused.
            let counted = Int(final.drops.values.reduce(0, +)) + Int(final.backlog.records)
            expectDelivered(ledger, nextSeq: final.nextSeq, allowedMissing: counted)
            let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: state.path)) ?? []).filter { $0.hasSuffix(".tmp") }
            #expect(leftovers.isEmpty, "status.json temporary files left on the full disk: \(leftovers)")
            report("tmpfs 2 MB full: first disk_full drop at next_seq \(nextSeqAtFull); polling went on (simulator requests +\(try sim.requests(of: "m1") - requestsAtFull)); \(dropLines.count) 'buffer dropped records' lines and \(refusedLines.count) 'buffer refused a poll' lines, e.g. '\(dropLines.last.map(String.init) ?? "")'; drops of committed (oldest) records: \(committedDrops.count); next_seq while full \(whileFull.nextSeq); after the broker returned: \(ledger.seqs.count) seqs delivered, resumed committing: \(resumed); status.json temp files left: \(leftovers)")
        }

        @Test("the data partition turns read-only under the running agent (ext4 errors=remount-ro): logged, polling goes on, no crash; after fsck nothing committed is lost",
              .timeLimit(.minutes(3)), .enabled(if: Facilities.loopExt4, "needs root, loop devices and mkfs.ext4"))
        func diskTurnsReadOnly() async throws {
            let sandbox = Sandbox("readonly")
            defer { sandbox.cleanUp() }
            let disk = try Ext4Disk(sandbox, name: "data")
            let state = disk.mountPoint.appendingPathComponent("state")
            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(2)
            let sim = try Sim(sandbox, machines: fleet, control: true)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url)
            let first = try Agent(sandbox, config: config, stateDirectory: state)
            #expect(await first.waitForLog("connected to the broker"), "\(first.output)")
            #expect(await TestSupport.waitUntil(timeout: 20) { subscriber.ledger.messages.count >= 10 })
            let before = try first.status()

            try disk.failReadOnly()
            #expect(await TestSupport.waitUntil(timeout: 20) {
                first.output.contains("write-error") || first.output.contains("buffer refused a poll")
            }, "the read-only disk was not noticed: \(first.output.suffix(2000))")
            let requests = try sim.requests(of: "m1")
            #expect(try await TestSupport.waitUntil(timeout: 20, interval: 0.5) { try sim.requests(of: "m1") >= requests + 20 },
                    "polling stopped on the read-only disk")
            #expect(first.isRunning, "the agent died: \(first.output.suffix(2000))")
            let errorLines = first.output.split(separator: "\n").filter { $0.contains("level=error") || $0.contains("level=warning") }
            // A clean stop is still possible (the buffer cannot write its last state: that is fine).
            let exit = first.terminate(timeout: 15)
            #expect(exit != nil, "no exit within 15 s of SIGTERM on a read-only disk: \(first.output.suffix(2000))")
            #expect(first.process.process.terminationReason == .exit, "the agent crashed: \(first.output.suffix(2000))")

            try disk.repair()
            let second = try Agent(sandbox, config: config, stateDirectory: state)
            #expect(await second.waitForLog("connected to the broker"), "the agent did not restart on the repaired disk: \(second.output.suffix(1500))")
            let target = try second.status().nextSeq
            _ = await subscriber.waitForAll(below: target, timeout: 60)
            #expect(second.terminate() == 0, "\(second.output)")
            let final = try second.status()
            #expect(final.backlog.records == 0, "\(final.text)")
            let ledger = await subscriber.waitForAll(below: final.nextSeq)
            expectDelivered(ledger, nextSeq: final.nextSeq)
            report("read-only disk: \(errorLines.count) warning/error lines while read-only, e.g. '\(errorLines.last.map(String.init) ?? "")'; SIGTERM exit \(exit.map(String.init) ?? "none"); after fsck: seqs 1..\(final.nextSeq - 1) all delivered (\(before.nextSeq - 1) committed before the fault)")
        }

        @Test("a truncated, an overwritten and a garbage buffer file at start-up: recovered what is readable, moved the rest aside, started, said so",
              .timeLimit(.minutes(3)))
        func damagedBufferAtStartup() async throws {
            let sandbox = Sandbox("corrupt")
            defer { sandbox.cleanUp() }
            let broker = try Broker(sandbox, start: false)
            let fleet = machines(1, registers: 20)
            _ = try Sim(sandbox, machines: fleet)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url, interval: "50ms")
            // A backlog of a few thousand records, written while the broker was away.
            let original = sandbox.path("original")
            let filler = try Agent(sandbox, config: config, stateDirectory: original)
            #expect(await filler.waitForLog("msg=ready"), "\(filler.output)")
            #expect(try await TestSupport.waitUntil(timeout: 60, interval: 0.5) { try filler.status().backlog.records >= 4000 })
            #expect(filler.terminate() == 0)
            let committed = try filler.status().nextSeq - 1

            try broker.start()
            let damages: [(String, (URL) throws -> Void)] = [
                ("truncated to 60%", { file in
                    let size = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int ?? 0
                    try Shell.must(["truncate", "-s", String(size * 6 / 10), file.path])
                }),
                ("pages 3-5 overwritten with random bytes", { file in
                    let handle = try FileHandle(forWritingTo: file)
                    try handle.seek(toOffset: 2 * 4096)
                    var random = SystemRandomNumberGenerator()
                    handle.write(Data((0..<(3 * 4096)).map { _ in UInt8.random(in: 0...255, using: &random) }))
                    try handle.close()
                }),
                ("the whole file replaced by garbage", { file in
                    try Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }).write(to: file)
                }),
            ]
            for (index, (what, damage)) in damages.enumerated() {
                let state = sandbox.path("state-\(index)")
                try Shell.must(["cp", "-a", original.path, state.path])
                try damage(state.appendingPathComponent("buffer.sqlite"))
                // A subscriber of its own, so each damaged copy's deliveries are counted apart.
                let subscriber = try await Subscriber(sandbox, broker: broker)
                let agent = try Agent(sandbox, config: config, stateDirectory: state, arguments: ["--log-level", "info"])
                #expect(await agent.waitForLog("connected to the broker"), "\(what): \(agent.output)")
                let recovered = agent.logLines(containing: "buffer recovered from a damaged file")
                try #require(recovered.count == 1, "\(what): no recovery logged: \(agent.output)")
                let line = String(recovered[0])
                let salvaged = number(after: "salvaged ", in: line) ?? -1
                let continuing = UInt64(number(after: "continuing at seq ", in: line) ?? 0)
                let asideFiles = try FileManager.default.contentsOfDirectory(atPath: state.path).filter { $0.hasPrefix("buffer.sqlite.corrupt-") }
                #expect(!asideFiles.isEmpty, "\(what): nothing moved aside")
                #expect(line.contains("level=error"), "\(what): \(line)")
                #expect(continuing > committed, "\(what): seq would be reused: \(line)")
                await pause(2)
                let target = try agent.status().nextSeq
                _ = await subscriber.waitForAll(below: target, from: continuing, timeout: 60)
                #expect(agent.terminate() == 0, "\(what): \(agent.output)")
                let final = try agent.status()
                try #require(final.nextSeq >= continuing, "\(what): \(final.text)")
                let ledger = await subscriber.waitForAll(below: final.nextSeq, from: continuing)
                // This life's records: every one from `continuing` on. The salvaged ones: all of them.
                expectDelivered(ledger, nextSeq: final.nextSeq, from: continuing)
                let salvagedDelivered = ledger.seqs.filter { $0 <= committed }.count
                #expect(salvagedDelivered == salvaged, "\(what): salvaged \(salvaged), delivered \(salvagedDelivered)")
                #expect(ledger.seqs.allSatisfy { $0 <= committed || $0 >= continuing }, "\(what): a seq between the old and the new life")
                #expect(final.backlog.records == 0, "\(final.text)")
                report("damaged buffer, \(what): '\(line.split(separator: " ").dropFirst(1).joined(separator: " "))'; \(salvaged) of \(committed) records salvaged and delivered; new records continue at seq \(continuing)")
            }
            #expect(damages.count == 3)
        }
    }
}

/// The integer after `prefix` in `text`.
func number(after prefix: String, in text: String) -> Int? {
    guard let range = text.range(of: prefix) else { return nil }
    return Int(text[range.upperBound...].prefix { $0.isNumber })
}
