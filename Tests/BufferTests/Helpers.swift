import Foundation
import Synchronization
import TestSupport
import UplinkCore
@testable import Buffer

/// A clock the test moves by hand (UTC ms).
final class ManualClock: Sendable {
    private let value: Mutex<Int64>
    init(_ start: Int64 = 1_800_000_000_000) { value = Mutex(start) }
    var now: Int64 { value.withLock { $0 } }
    func advance(by ms: Int64) { value.withLock { $0 += ms } }
    var closure: @Sendable () -> Int64 { { [self] in self.now } }
}

/// A batch of `count` double readings from `device`.
func makeBatch(_ device: String = "press-1", ts: Int64 = 1_800_000_000_000, count: Int = 3, base: Double = 0) -> PollBatch {
    PollBatch(device: device, timestamp: ts, records: (0..<count).map { i in
        Record(device: device, signal: "s\(i)", timestamp: ts, value: .double(base + Double(i)), unit: "bar")
    })
}

/// The accounted size of a batch, as the buffer computes it.
func accounted(_ batch: PollBatch) -> Int64 {
    batch.records.reduce(0) { $0 + RowCodec.accountedSize($1, device: batch.device) }
}

func freshDirectory() -> URL { TestSupport.temporaryDirectory("uplink-buffer") }

func databasePath(_ dir: URL) -> String { dir.appendingPathComponent("buffer.sqlite").path }

/// Every batch still on disk, oldest first, read through a fresh cursor.
func drainAll(_ buffer: DiskBuffer) throws -> [BufferedBatch] {
    buffer.rewind()
    var all: [BufferedBatch] = []
    while true {
        let next = try buffer.nextBatches(max: 500)
        if next.isEmpty { return all }
        all += next
    }
}

func allSeqs(_ batches: [BufferedBatch]) -> [UInt64] {
    batches.flatMap { $0.batch.records.map(\.seq) }
}
