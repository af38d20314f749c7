/// What to do when an object names the same key twice.
public enum DuplicateKeyPolicy: Sendable {
  /// Throw ``JSONParseError/Reason/duplicateKey(_:path:)``.
  case reject
  /// Keep the last value, at the first key's position (Python's `json` behaviour).
  case lastWins
}

/// Why a JSON text was rejected, and where.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The kinds of failure.
  public enum Reason: Sendable, Equatable {
    /// The bytes are not valid UTF-8.
    case invalidUTF8
    /// A syntax error; the string says what was expected.
    case syntax(String)
    /// Nesting is deeper than the parser's limit.
    case tooDeep(limit: Int)
    /// An object names `key` twice; `path` lists the keys of the enclosing objects.
    case duplicateKey(String, path: [String])
  }

  /// Why the text was rejected.
  public let reason: Reason
  /// The byte offset at which the problem was found.
  public let offset: Int

  public var description: String {
    switch reason {
    case .invalidUTF8: "invalid UTF-8 at byte \(offset)"
    case .syntax(let what): "\(what) at byte \(offset)"
    case .tooDeep(let limit): "nesting deeper than \(limit) at byte \(offset)"
    case .duplicateKey(let key, let path):
      "duplicate key \"\(key)\"" + (path.isEmpty ? "" : " in \(path.joined(separator: "."))")
        + " at byte \(offset)"
    }
  }
}

/// A strict RFC 8259 JSON parser over bytes.
///
/// Differences from Foundation's `JSONSerialization` that matter for
/// untrusted checkpoint headers: input must be valid UTF-8 as a whole (checked
/// first, as the safetensors reference does), duplicate keys can be rejected,
/// nesting depth is bounded, numbers keep their text, and every error carries
/// a byte offset. Whitespace may surround the top-level value; anything else
/// after it is an error.
public enum JSONParser {
  /// Parses a complete JSON text.
  ///
  /// - Parameters:
  ///   - bytes: The UTF-8 text.
  ///   - duplicateKeys: What to do with a repeated key.
  ///   - maxDepth: The deepest nesting of arrays and objects accepted.
  /// - Returns: The value.
  /// - Throws: ``JSONParseError``.
  public static func parse(
    _ bytes: UnsafeRawBufferPointer, duplicateKeys: DuplicateKeyPolicy = .reject,
    maxDepth: Int = 128
  ) throws(JSONParseError) -> JSONValue {
    if let bad = firstInvalidUTF8(bytes) {
      throw JSONParseError(reason: .invalidUTF8, offset: bad)
    }
    var p = Cursor(bytes: bytes, duplicateKeys: duplicateKeys, maxDepth: maxDepth)
    p.skipWhitespace()
    let value = try p.parseValue(depth: 0)
    p.skipWhitespace()
    if p.i != bytes.count { throw p.error("unexpected content after the JSON value") }
    return value
  }

  /// Parses a complete JSON text held in a byte array.
  public static func parse(
    _ bytes: [UInt8], duplicateKeys: DuplicateKeyPolicy = .reject, maxDepth: Int = 128
  ) throws(JSONParseError) -> JSONValue {
    let r = bytes.withUnsafeBytes { raw -> Result<JSONValue, JSONParseError> in
      do throws(JSONParseError) {
        return .success(try parse(raw, duplicateKeys: duplicateKeys, maxDepth: maxDepth))
      } catch { return .failure(error) }
    }
    return try r.get()
  }

  /// Parses a complete JSON text held in a string.
  public static func parse(
    _ text: String, duplicateKeys: DuplicateKeyPolicy = .reject, maxDepth: Int = 128
  ) throws(JSONParseError) -> JSONValue {
    try parse(Array(text.utf8), duplicateKeys: duplicateKeys, maxDepth: maxDepth)
  }

  /// Returns the offset of the first byte that is not part of a valid UTF-8
  /// sequence, or `nil` when the whole buffer is valid.
  ///
  /// Rejects overlong forms, surrogates (U+D800–U+DFFF) and code points above
  /// U+10FFFF, as Rust's `str::from_utf8` does.
  public static func firstInvalidUTF8(_ b: UnsafeRawBufferPointer) -> Int? {
    let n = b.count
    var i = 0
    while i < n {
      // ASCII fast path, 8 bytes at a time.
      while i + 8 <= n, b.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
        i += 8
      }
      if i >= n { break }
      let c = b[i]
      if c < 0x80 { i += 1; continue }
      var need = 0
      var lo: UInt8 = 0x80
      var hi: UInt8 = 0xBF
      switch c {
      case 0xC2...0xDF: need = 1
      case 0xE0: need = 2; lo = 0xA0
      case 0xE1...0xEC, 0xEE...0xEF: need = 2
      case 0xED: need = 2; hi = 0x9F
      case 0xF0: need = 3; lo = 0x90
      case 0xF1...0xF3: need = 3
      case 0xF4: need = 3; hi = 0x8F
      default: return i
      }
      if i + need >= n { return i }  // sequence runs past the end
      let b1 = b[i + 1]
      if b1 < lo || b1 > hi { return i }
      for k in 1..<need where b[i + 1 + k] & 0xC0 != 0x80 { return i }
      i += need + 1
    }
    return nil
  }
}

private struct Cursor {
  let bytes: UnsafeRawBufferPointer
  let duplicateKeys: DuplicateKeyPolicy
  let maxDepth: Int
  var i = 0
  /// Keys of the enclosing objects, for duplicate-key errors.
  var path: [String] = []

  init(bytes: UnsafeRawBufferPointer, duplicateKeys: DuplicateKeyPolicy, maxDepth: Int) {
    self.bytes = bytes
    self.duplicateKeys = duplicateKeys
    self.maxDepth = maxDepth
  }

  func error(_ what: String) -> JSONParseError {
    JSONParseError(reason: .syntax(what), offset: i)
  }

  mutating func skipWhitespace() {
    while i < bytes.count {
      switch bytes[i] {
      case 0x20, 0x0A, 0x0D, 0x09: i += 1
      default: return
      }
    }
  }

  mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
    guard i < bytes.count else { throw error("unexpected end of input, expected a value") }
    switch bytes[i] {
    case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
    case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
    case UInt8(ascii: "\""): return .string(try parseString())
    case UInt8(ascii: "t"): try literal("true"); return .bool(true)
    case UInt8(ascii: "f"): try literal("false"); return .bool(false)
    case UInt8(ascii: "n"): try literal("null"); return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
    default: throw error("unexpected character, expected a value")
    }
  }

  mutating func literal(_ word: StaticString) throws(JSONParseError) {
    let n = word.utf8CodeUnitCount
    guard i + n <= bytes.count else { throw error("unexpected end of input in a literal") }
    let w = word.utf8Start
    for k in 0..<n where bytes[i + k] != w[k] { throw error("invalid literal") }
    i += n
  }

  mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
    if depth > maxDepth { throw JSONParseError(reason: .tooDeep(limit: maxDepth), offset: i) }
    i += 1  // {
    var object = JSONObject()
    skipWhitespace()
    if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(object) }
    while true {
      skipWhitespace()
      guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
        throw error("expected a string key")
      }
      let keyOffset = i
      let key = try parseString()
      skipWhitespace()
      guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
      i += 1
      skipWhitespace()
      path.append(key)
      let value = try parseValue(depth: depth)
      path.removeLast()
      if object.contains(key) {
        if duplicateKeys == .reject {
          throw JSONParseError(reason: .duplicateKey(key, path: path), offset: keyOffset)
        }
        object[key] = value
      } else {
        object.appendNew(key, value)
      }
      skipWhitespace()
      guard i < bytes.count else { throw error("unexpected end of input in an object") }
      if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
      if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(object) }
      throw error("expected ',' or '}'")
    }
  }

  mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
    if depth > maxDepth { throw JSONParseError(reason: .tooDeep(limit: maxDepth), offset: i) }
    i += 1  // [
    var elements: [JSONValue] = []
    skipWhitespace()
    if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(elements) }
    while true {
      skipWhitespace()
      elements.append(try parseValue(depth: depth))
      skipWhitespace()
      guard i < bytes.count else { throw error("unexpected end of input in an array") }
      if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
      if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(elements) }
      throw error("expected ',' or ']'")
    }
  }

  mutating func parseNumber() throws(JSONParseError) -> JSONNumber {
    let start = i
    func digit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    let negative = bytes[i] == UInt8(ascii: "-")
    if negative { i += 1 }
    guard i < bytes.count, digit(bytes[i]) else { throw error("invalid number") }
    var value: UInt64 = 0
    var fits = !negative
    if bytes[i] == 0x30 {
      i += 1
    } else {
      while i < bytes.count, digit(bytes[i]) {
        let (m, o1) = value.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(UInt64(bytes[i] - 0x30))
        value = a
        fits = fits && !o1 && !o2
        i += 1
      }
    }
    let integerEnd = i
    if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
      i += 1
      guard i < bytes.count, digit(bytes[i]) else { throw error("invalid number fraction") }
      while i < bytes.count, digit(bytes[i]) { i += 1 }
    }
    if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
      i += 1
      if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
      guard i < bytes.count, digit(bytes[i]) else { throw error("invalid number exponent") }
      while i < bytes.count, digit(bytes[i]) { i += 1 }
    }
    let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
    return JSONNumber(validatedText: text, unsigned: fits && integerEnd == i ? value : nil)
  }

  mutating func parseString() throws(JSONParseError) -> String {
    i += 1  // opening quote
    let start = i
    // Fast path: no escapes.
    while i < bytes.count {
      let c = bytes[i]
      if c == UInt8(ascii: "\"") {
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        i += 1
        return s
      }
      if c == UInt8(ascii: "\\") { break }
      if c < 0x20 { throw error("control character in a string") }
      i += 1
    }
    var out = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
    while i < bytes.count {
      let c = bytes[i]
      if c == UInt8(ascii: "\"") {
        i += 1
        return String(decoding: out, as: UTF8.self)
      }
      if c < 0x20 { throw error("control character in a string") }
      if c != UInt8(ascii: "\\") {
        out.append(c)
        i += 1
        continue
      }
      i += 1
      guard i < bytes.count else { break }
      let e = bytes[i]
      i += 1
      switch e {
      case UInt8(ascii: "\""): out.append(0x22)
      case UInt8(ascii: "\\"): out.append(0x5C)
      case UInt8(ascii: "/"): out.append(0x2F)
      case UInt8(ascii: "b"): out.append(0x08)
      case UInt8(ascii: "f"): out.append(0x0C)
      case UInt8(ascii: "n"): out.append(0x0A)
      case UInt8(ascii: "r"): out.append(0x0D)
      case UInt8(ascii: "t"): out.append(0x09)
      case UInt8(ascii: "u"):
        var scalar = try hex4()
        if (0xD800...0xDBFF).contains(scalar) {
          guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u")
          else { throw error("lone surrogate in \\u escape") }
          i += 2
          let low = try hex4()
          guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid surrogate pair") }
          scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00...0xDFFF).contains(scalar) {
          throw error("lone surrogate in \\u escape")
        }
        // This is safe: surrogates were handled above, and scalar <= 0x10FFFF.
        out.append(contentsOf: Array(String(Unicode.Scalar(scalar)!).utf8))
      default:
        throw error("invalid escape")
      }
    }
    throw error("unterminated string")
  }

  mutating func hex4() throws(JSONParseError) -> UInt32 {
    guard i + 4 <= bytes.count else { throw error("truncated \\u escape") }
    var v: UInt32 = 0
    for _ in 0..<4 {
      let c = bytes[i]
      let d: UInt32
      switch c {
      case 0x30...0x39: d = UInt32(c - 0x30)
      case 0x41...0x46: d = UInt32(c - 0x41 + 10)
      case 0x61...0x66: d = UInt32(c - 0x61 + 10)
      default: throw error("invalid hex digit in \\u escape")
      }
      v = v << 4 | d
      i += 1
    }
    return v
  }
}
