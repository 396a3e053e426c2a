// libFuzzer harness: the register decoder. The first two bytes pick the type and the byte order, the
// rest are register words. Properties: no crash; too few words is `tooShort`, never a value; integer
// results fit their type; a float32 widened to its shortest decimal gives back the same bits.
import UplinkCore

@_cdecl("LLVMFuzzerTestOneInput")
public func uplinkFuzzDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 2 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var words: [UInt16] = []
    var index = 2
    while index + 1 < bytes.count {
        words.append(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]))
        index += 2
    }
    let types: [DataType] = [.bool, .bit(Int(bytes[0] & 15)), .int16, .uint16, .int32, .uint32, .int64, .uint64, .float32, .float64,
                             .string(registers: Int(bytes[0] % 126))]
    let type = types[Int(bytes[1] & 0x0F) % types.count]
    let order = ByteOrder.allCases[Int(bytes[1] >> 6)]
    switch Decoder.decode(type, order: order, words: words[...]) {
    case .failure(.tooShort(let needed, let got)):
        precondition(words.count < type.width && needed == type.width && got == words.count, "tooShort with enough words")
    case .failure(.notASCII):
        if case .string = type {} else { preconditionFailure("notASCII for \(type)") }
    case .success(let value):
        precondition(words.count >= type.width, "a value from too few words")
        switch (type, value) {
        case (.int16, .int(let v)): precondition(Int64(Int16.min)...Int64(Int16.max) ~= v)
        case (.int32, .int(let v)): precondition(Int64(Int32.min)...Int64(Int32.max) ~= v)
        case (.uint16, .uint(let v)): precondition(v <= UInt64(UInt16.max))
        case (.uint32, .uint(let v)): precondition(v <= UInt64(UInt32.max))
        case (.float32, .double(let d)):
            if d.isFinite, case .success(.uint(let bits)) = Decoder.decode(.uint32, order: order, words: words[...]) {
                precondition(Float(d).bitPattern == UInt32(bits), "float32 widening changed the value")
            }
        case (.string, .string(let text)):
            precondition(text.unicodeScalars.allSatisfy { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F }, "non-printable text")
        default: break
        }
    }
    return 0
}
