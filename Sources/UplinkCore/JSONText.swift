/// Minimal, allocation-light JSON text writing for records (payloads, `uplink read --json`).
/// Non-finite floats, which JSON cannot carry as numbers, are written as the strings "NaN",
/// "Infinity" and "-Infinity" so that no reading is silently lost.
public enum JSONText {
    /// Appends `text` as a quoted JSON string.
    public static func appendString(_ text: String, to out: inout String) {
        out.append("\"")
        var needsEscape = false
        for byte in text.utf8 where byte < 0x20 || byte == 0x22 || byte == 0x5C {
            needsEscape = true
            break
        }
        if !needsEscape {
            out.append(text)
        } else {
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out.append("\\\"")
                case "\\": out.append("\\\\")
                case "\n": out.append("\\n")
                case "\r": out.append("\\r")
                case "\t": out.append("\\t")
                default:
                    if scalar.value < 0x20 {
                        let hex = String(scalar.value, radix: 16)
                        out.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
        }
        out.append("\"")
    }

    /// Appends a value as a JSON literal.
    public static func appendValue(_ value: Value?, to out: inout String) {
        switch value {
        case nil: out.append("null")
        case .bool(let b): out.append(b ? "true" : "false")
        case .int(let i): out.append(String(i))
        case .uint(let u): out.append(String(u))
        case .double(let d): appendDouble(d, to: &out)
        case .string(let s): appendString(s, to: &out)
        }
    }

    public static func appendDouble(_ d: Double, to out: inout String) {
        if d.isNaN { out.append("\"NaN\"") } else if d.isInfinite { out.append(d > 0 ? "\"Infinity\"" : "\"-Infinity\"") } else if d == d.rounded(.towardZero) && abs(d) < 1e15 {
            // Whole numbers without the trailing ".0" Swift prints.
            out.append(String(Int64(d)))
        } else {
            out.append(d.description)
        }
    }
}

extension Value: CustomStringConvertible {
    /// The value as a person reads it in a table.
    public var description: String {
        switch self {
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .uint(let u): String(u)
        case .double(let d): d.description
        case .string(let s): s
        }
    }
}
