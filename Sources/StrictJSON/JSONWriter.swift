/// Serializes ``JSONValue`` trees.
///
/// Two styles cover the files CheckpointKit writes:
/// - ``Style/compact`` matches serde_json's `to_string`, which the safetensors
///   reference writer uses for headers: no spaces, non-ASCII written raw.
/// - ``Style/pretty(indent:asciiOnly:)`` matches Python's
///   `json.dumps(value, indent=2)`, which transformers uses for `config.json`
///   and index files (`asciiOnly` is Python's default `ensure_ascii=True`).
public enum JSONWriter {
  /// Output layouts.
  public enum Style: Sendable {
    /// serde_json compact form.
    case compact
    /// Python `json.dumps(indent:)` form.
    case pretty(indent: Int = 2, asciiOnly: Bool = true)
  }

  /// Serializes `value` to UTF-8 bytes.
  public static func bytes(_ value: JSONValue, style: Style = .compact) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(256)
    switch style {
    case .compact:
      writeCompact(value, into: &out)
    case .pretty(let indent, let asciiOnly):
      writePretty(value, indent: indent, level: 0, asciiOnly: asciiOnly, into: &out)
    }
    return out
  }

  /// Serializes `value` to a string.
  public static func string(_ value: JSONValue, style: Style = .compact) -> String {
    String(decoding: bytes(value, style: style), as: UTF8.self)
  }

  /// Appends `s` as a JSON string literal, serde_json style (non-ASCII raw).
  public static func appendString(_ s: String, into out: inout [UInt8]) {
    appendString(s, asciiOnly: false, into: &out)
  }

  static func writeCompact(_ value: JSONValue, into out: inout [UInt8]) {
    switch value {
    case .null: out.append(contentsOf: "null".utf8)
    case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
    case .number(let n): out.append(contentsOf: n.text.utf8)
    case .string(let s): appendString(s, asciiOnly: false, into: &out)
    case .array(let a):
      out.append(UInt8(ascii: "["))
      for (k, e) in a.enumerated() {
        if k > 0 { out.append(UInt8(ascii: ",")) }
        writeCompact(e, into: &out)
      }
      out.append(UInt8(ascii: "]"))
    case .object(let o):
      out.append(UInt8(ascii: "{"))
      for (k, m) in o.members.enumerated() {
        if k > 0 { out.append(UInt8(ascii: ",")) }
        appendString(m.key, asciiOnly: false, into: &out)
        out.append(UInt8(ascii: ":"))
        writeCompact(m.value, into: &out)
      }
      out.append(UInt8(ascii: "}"))
    }
  }

  static func writePretty(
    _ value: JSONValue, indent: Int, level: Int, asciiOnly: Bool, into out: inout [UInt8]
  ) {
    func newline(_ level: Int) {
      out.append(0x0A)
      out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: indent * level))
    }
    switch value {
    case .array(let a) where !a.isEmpty:
      out.append(UInt8(ascii: "["))
      for (k, e) in a.enumerated() {
        if k > 0 { out.append(UInt8(ascii: ",")) }
        newline(level + 1)
        writePretty(e, indent: indent, level: level + 1, asciiOnly: asciiOnly, into: &out)
      }
      newline(level)
      out.append(UInt8(ascii: "]"))
    case .object(let o) where !o.isEmpty:
      out.append(UInt8(ascii: "{"))
      for (k, m) in o.members.enumerated() {
        if k > 0 { out.append(UInt8(ascii: ",")) }
        newline(level + 1)
        appendString(m.key, asciiOnly: asciiOnly, into: &out)
        out.append(contentsOf: ": ".utf8)
        writePretty(m.value, indent: indent, level: level + 1, asciiOnly: asciiOnly, into: &out)
      }
      newline(level)
      out.append(UInt8(ascii: "}"))
    case .string(let s):
      appendString(s, asciiOnly: asciiOnly, into: &out)
    default:
      writeCompact(value, into: &out)
    }
  }

  static func appendString(_ s: String, asciiOnly: Bool, into out: inout [UInt8]) {
    let hex = Array("0123456789abcdef".utf8)
    func u(_ v: UInt32) {
      out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u")])
      for shift in stride(from: 12, through: 0, by: -4) { out.append(hex[Int((v >> UInt32(shift)) & 0xF)]) }
    }
    out.append(UInt8(ascii: "\""))
    for scalar in s.unicodeScalars {
      let v = scalar.value
      switch v {
      case 0x22: out.append(contentsOf: [0x5C, 0x22])
      case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
      case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
      case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
      case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
      case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
      case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
      case 0..<0x20: u(v)
      case 0x7F where asciiOnly: u(v)
      case 0x80... where asciiOnly:
        if v >= 0x10000 {
          let w = v - 0x10000
          u(0xD800 + (w >> 10))
          u(0xDC00 + (w & 0x3FF))
        } else {
          u(v)
        }
      default:
        out.append(contentsOf: Array(String(scalar).utf8))
      }
    }
    out.append(UInt8(ascii: "\""))
  }
}
