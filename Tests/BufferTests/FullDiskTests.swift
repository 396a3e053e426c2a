// A real full disk: the state directory on a 1 MB tmpfs (needs root). Unlike `maxFileBytes`, the
// WAL itself runs out of room here, so even a transaction that only deletes cannot commit unless
// the buffer gave space back first (its reserve).
import Foundation
import Testing
import TestSupport
import UplinkCore
@testable import Buffer

private let canMount = getuid() == 0 && FileManager.default.fileExists(atPath: "/bin/mount")

/// A tmpfs mounted for one test, unmounted at the end.
private final class SmallDisk {
    let directory: URL
    init(size: String) throws {
        directory = freshDirectory()
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", directory.path]
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw CocoaError(.fileWriteNoPermission) }
    }
    deinit {
        let umount = Process()
        umount.executableURL = URL(fileURLWithPath: "/bin/umount")
        umount.arguments = ["-l", directory.path]
        try? umount.run()
        umount.waitUntilExit()
    }
    var state: URL { directory.appendingPathComponent("state") }
}

@Suite("Full disk (tmpfs)", .enabled(if: canMount, "needs root to mount a tmpfs"), .serialized)
struct FullDiskTests {
    @Test func dropOldestKeepsAcceptingNewRecordsOnAFullDisk() throws {
        let disk = try SmallDisk(size: "1m")
        defer { withExtendedLifetime(disk) {} }  // unmounted only after the buffer closed
        let buffer = try DiskBuffer(stateDirectory: disk.state, options: BufferOptions(maxAge: nil))
        defer { buffer.close() }
        var committedDrops: [BufferDrop] = []
        var committedAfterFull = 0
        var last: AppendResult?
        for i in 0..<1500 {
            let result = try buffer.append([makeBatch("d\(i)", count: 20)])
            if !committedDrops.isEmpty { committedAfterFull += result.committed.count }
            committedDrops += result.drops.filter { $0.reason == .diskFull && $0.seqs != nil }
            last = result
        }
        #expect(!committedDrops.isEmpty, "the disk never filled or no old record was dropped")
        #expect(committedAfterFull > 500, "new records stopped being stored once the disk was full")
        #expect(last?.committed.count == 1, "the newest batch was not stored")
        let stats = try buffer.stats()
        #expect(stats.dropped.diskFull == UInt64(committedDrops.reduce(0) { $0 + $1.records }))
        let left = try drainAll(buffer)
        #expect(left.last?.batch.device == "d1499")
        #expect(allSeqs(left) == allSeqs(left).sorted())
    }

    @Test func acknowledgementsCommitOnAFullDiskAndFreeRoomForNewRecords() throws {
        let disk = try SmallDisk(size: "1m")
        defer { withExtendedLifetime(disk) {} }  // unmounted only after the buffer closed
        let buffer = try DiskBuffer(stateDirectory: disk.state,
                                    options: BufferOptions(maxAge: nil, overflowPolicy: .dropNewest))
        defer { buffer.close() }
        var firstDropAt: Int?
        for i in 0..<1500 {
            let result = try buffer.append([makeBatch("d\(i)", count: 20)])
            if firstDropAt == nil, result.drops.contains(where: { $0.reason == .diskFull }) { firstDropAt = i }
        }
        let full = try #require(firstDropAt, "the disk never filled")
        // Still full: a new batch is dropped.
        #expect(try buffer.append([makeBatch("still-full", count: 20)]).committed.isEmpty)
        // The broker acknowledges everything stored: the deletions commit, and there is room again.
        let stored = try buffer.stats()
        #expect(stored.backlogRecords > 0)
        let acked = try buffer.acknowledge(1...stored.nextSeq - 1)
        #expect(acked == Int(stored.backlogRecords))
        #expect(try buffer.stats().backlogRecords == 0)
        for i in 0..<full / 2 {
            #expect(try buffer.append([makeBatch("after-\(i)", count: 20)]).committed.count == 1)
        }
    }

    @Test func aDiskAlreadyFullAtOpenStillOpensAndAcknowledges() throws {
        let disk = try SmallDisk(size: "1m")
        defer { withExtendedLifetime(disk) {} }  // unmounted only after the buffer closed
        do {
            let buffer = try DiskBuffer(stateDirectory: disk.state, options: BufferOptions(maxAge: nil))
            for i in 0..<200 { try buffer.append([makeBatch("d\(i)", count: 20)]) }
            buffer.close()
        }
        // Something else fills every byte left.
        let filler = disk.directory.appendingPathComponent("filler").path
        let fd = open(filler, O_WRONLY | O_CREAT, 0o600)
        let chunk = [UInt8](repeating: 1, count: 4096)
        while write(fd, chunk, chunk.count) > 0 {}
        close(fd)
        let buffer = try DiskBuffer(stateDirectory: disk.state, options: BufferOptions(maxAge: nil))
        defer { buffer.close() }
        let before = try buffer.stats()
        #expect(before.backlogRecords == 4000)
        #expect(try buffer.acknowledge(1...2000) == 2000)
        let result = try buffer.append([makeBatch("new", count: 20)])
        #expect(result.committed.count == 1, "\(result.drops)")
        #expect(try buffer.stats().backlogRecords == 2020)
    }
}
