import Foundation
import SwiftProtobuf
import Testing
@testable import Publisher

/// The generated Sparkplug B code against the specification's field numbers, read back with an
/// independent protobuf wire reader (not the generated decoder).
@Suite("Sparkplug B wire format")
struct SparkplugWireTests {
    @Test func payloadFieldNumbersAreTheSpecifications() throws {
        var metric = Org_Eclipse_Tahu_Protobuf_Payload.Metric()
        metric.name = "bdSeq"
        metric.datatype = 8
        metric.longValue = 7
        var payload = Org_Eclipse_Tahu_Protobuf_Payload()
        payload.timestamp = 1_700_000_000_000
        payload.seq = 3
        payload.metrics = [metric]
        let bytes = try [UInt8](payload.serializedData())
        let fields = try WireReader.fields(bytes)
        #expect(fields.first { $0.number == 1 }?.varint == 1_700_000_000_000)
        #expect(fields.first { $0.number == 3 }?.varint == 3)
        let metricBytes = try #require(fields.first { $0.number == 2 }?.bytes)
        let metricFields = try WireReader.fields(metricBytes)
        #expect(metricFields.first { $0.number == 1 }?.bytes.map { String(decoding: $0, as: UTF8.self) } == "bdSeq")
        #expect(metricFields.first { $0.number == 4 }?.varint == 8)
        #expect(metricFields.first { $0.number == 11 }?.varint == 7)
    }
}

/// A minimal protobuf wire-format reader: field number, wire type and value, nothing else.
enum WireReader {
    struct Field {
        var number: Int
        var varint: UInt64?
        var bytes: [UInt8]?
        var fixed: UInt64?
    }

    struct Malformed: Error {}

    static func fields(_ data: [UInt8]) throws -> [Field] {
        var out: [Field] = []
        var index = 0
        func varint() throws -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < data.count, shift < 64 else { throw Malformed() }
                let byte = data[index]
                index += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return result }
                shift += 7
            }
        }
        while index < data.count {
            let key = try varint()
            let number = Int(key >> 3)
            switch key & 7 {
            case 0: out.append(Field(number: number, varint: try varint()))
            case 1:
                guard index + 8 <= data.count else { throw Malformed() }
                var v: UInt64 = 0
                for i in 0..<8 { v |= UInt64(data[index + i]) << (8 * UInt64(i)) }
                index += 8
                out.append(Field(number: number, fixed: v))
            case 2:
                let length = Int(try varint())
                guard length >= 0, index + length <= data.count else { throw Malformed() }
                out.append(Field(number: number, bytes: Array(data[index..<index + length])))
                index += length
            case 5:
                guard index + 4 <= data.count else { throw Malformed() }
                var v: UInt64 = 0
                for i in 0..<4 { v |= UInt64(data[index + i]) << (8 * UInt64(i)) }
                index += 4
                out.append(Field(number: number, fixed: v))
            default: throw Malformed()
            }
        }
        return out
    }
}
