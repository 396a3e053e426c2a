// DiskReserve: space set aside in the state directory so a full disk can still be worked on.
// In WAL mode every transaction, even one that only deletes, appends pages to the WAL, and a
// checkpoint may have to grow the database file: on a disk with no byte left nothing commits, so
// neither drop-oldest nor the broker's acknowledgements could free anything. The reserve is an
// allocated file (`buffer.reserve`) that is given back to the file system the moment SQLite says
// the disk is full, and taken again once space is back.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Not thread-safe: owned by `Core`, used under its lock.
final class DiskReserve {
    static let fileName = "buffer.reserve"

    let path: String
    private let directoryPath: String
    /// Bytes held while the reserve is in place.
    let size: Int64
    /// WAL pages between automatic checkpoints, so that a checkpoint never needs more room than the
    /// reserve gives back.
    let walCheckpointPages: Int
    private(set) var held = false

    /// Records deleted per transaction while the disk is full: about a sixteenth of the reserve in
    /// accounted bytes (~64 bytes a record), so that each transaction's WAL (the pages it touches,
    /// the b-tree above them, the free list) fits in the room freed, even half of it.
    var pieceRecords: Int { Int(max(32, size / 16 / 64)) }

    /// Sizes the reserve from the file system holding `directory`: 1/32 of it, between 64 KiB and
    /// 8 MiB (a 2 MB tmpfs gets 64 KiB; an SD card 8 MiB).
    init(directory: URL, pageSize: Int64 = 4096) {
        path = directory.appendingPathComponent(Self.fileName).path
        directoryPath = directory.path
        let total = Self.fileSystemBytes(directory.path).total
        size = min(max(total / 32, 64 << 10), 8 << 20)
        walCheckpointPages = Int(min(max(size / pageSize / 2, 8), 1000))
    }

    /// Takes the reserve (allocates the file) if there is room; returns whether it is held.
    @discardableResult
    func take() -> Bool {
        if held { return true }
        // Asked after every commit while the disk is full: a statvfs, not an allocation attempt.
        guard freeBytes >= size else { return false }
        let fd = systemOpen(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { systemClose(fd) }
        if posix_fallocate(fd, 0, off_t(size)) == 0, fsync(fd) == 0 {
            held = true
        } else {
            _ = ftruncate(fd, 0)  // a partial allocation would only take space from the buffer
        }
        return held
    }

    /// Gives the reserved bytes back to the file system.
    func release() {
        let fd = systemOpen(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 {
            _ = ftruncate(fd, 0)
            systemClose(fd)
        }
        held = false
    }

    /// Free bytes for unprivileged writers on the file system holding the reserve.
    var freeBytes: Int64 { Self.fileSystemBytes(directoryPath).free }

    static func fileSystemBytes(_ path: String) -> (total: Int64, free: Int64) {
        var fs = statvfs()
        guard statvfs(path, &fs) == 0 else { return (0, 0) }
        let unit = Int64(fs.f_frsize)
        return (Int64(fs.f_blocks) * unit, Int64(fs.f_bavail) * unit)
    }
}
