// A small, strict YAML subset (and JSON) reader for pipeline files.
//
// The grammar this file accepts is documented on ``PipelineText``. The parser
// is a recursive descent over the UTF-8 bytes: block structure is decided by
// the indentation of content lines, flow collections (`[...]`, `{...}`) are
// scanned token by token and may span lines. Every node and every error
// carries the 1-based line on which it starts.

/// A node of a parsed pipeline file, with the line on which it starts.
public struct PipelineNode: Sendable, Equatable {
  /// What a node holds.
  public enum Kind: Sendable, Equatable {
    /// `~`, `null`, or an empty value (`key:` or `- ` with nothing nested, `{key: }`).
    case null
    /// A plain or quoted scalar's text, uninterpreted: numbers and `true`/`false`
    /// stay text. `quoted` tells whether it was written in quotes (so `"null"`
    /// and `"~"` are scalars, not nulls).
    case scalar(String, quoted: Bool)
    /// A block (`- item`) or flow (`[a, b]`) sequence.
    case sequence([PipelineNode])
    /// A block (`key: value`) or flow (`{key: value}`) mapping, in file order,
    /// with no key twice.
    case mapping([PipelineEntry])
  }

  /// What this node holds.
  public var kind: Kind
  /// The 1-based line on which the node starts: a block mapping's first key,
  /// a block sequence's first `-`, a flow collection's opening bracket, a
  /// scalar's first character. An empty value's line is that of its key or `-`.
  public var line: Int

  /// Creates a node.
  public init(kind: Kind, line: Int) {
    self.kind = kind
    self.line = line
  }
}

/// One `key: value` pair of a mapping.
public struct PipelineEntry: Sendable, Equatable {
  /// The key's text (quoted keys unescaped).
  public var key: String
  /// The 1-based line of the key.
  public var line: Int
  /// The value.
  public var value: PipelineNode

  /// Creates an entry.
  public init(key: String, line: Int, value: PipelineNode) {
    self.key = key
    self.line = line
    self.value = value
  }
}

/// Why a pipeline text was rejected, and on which line.
public struct PipelineTextError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The 1-based line of the problem.
  public var line: Int
  /// What is wrong, for a person to read.
  public var message: String

  /// Creates an error.
  public init(line: Int, message: String) {
    self.line = line
    self.message = message
  }

  /// `line N: message`.
  public var description: String { "line \(line): \(message)" }
}

extension PipelineNode {
  /// The scalar's text, quoted or not, if this is a scalar.
  public var string: String? {
    if case .scalar(let text, _) = kind { return text }
    return nil
  }

  /// Whether this is a null (`~`, `null` or an empty value).
  public var isNull: Bool {
    if case .null = kind { return true }
    return false
  }

  /// The items, if this is a sequence.
  public var items: [PipelineNode]? {
    if case .sequence(let items) = kind { return items }
    return nil
  }

  /// The entries in file order, if this is a mapping.
  public var entries: [PipelineEntry]? {
    if case .mapping(let entries) = kind { return entries }
    return nil
  }

  /// The keys in file order, if this is a mapping.
  public var keys: [String]? { entries?.map(\.key) }

  /// The value for `key`, if this is a mapping that has it.
  public subscript(key: String) -> PipelineNode? {
    entries?.first { $0.key == key }?.value
  }

  /// The entry for `key` (with its line), if this is a mapping that has it.
  public func entry(_ key: String) -> PipelineEntry? {
    entries?.first { $0.key == key }
  }

  /// "null", "scalar", "sequence" or "mapping", for error messages.
  public var kindName: String {
    switch kind {
    case .null: "null"
    case .scalar: "scalar"
    case .sequence: "sequence"
    case .mapping: "mapping"
    }
  }
}

/// Reads pipeline files: a strict subset of YAML that includes JSON.
///
/// Accepted:
/// - `#` comments (whole-line, or after whitespace outside quotes), blank
///   lines, one optional leading `---` line, a leading byte-order mark, and
///   LF, CRLF or CR line ends.
/// - Block mappings (`key: value`, keys plain or quoted) and block sequences
///   (`- item`), nested by indentation with spaces. `- key: value` starts a
///   mapping inside a sequence item; its further keys align with the first
///   key. A sequence that is a mapping value may sit at the key's own
///   indentation (`steps:` then `- a`) or deeper.
/// - Plain scalars on one line: trailing spaces and comments are stripped, and
///   `:` belongs to the scalar unless whitespace or the line end follows it
///   (`a:b`, `http://x/y`). `~` and `null` (unquoted) are null; every other
///   scalar stays text.
/// - Single-quoted scalars (`''` is a quote) and double-quoted scalars with
///   JSON escapes (`\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t` `\uXXXX`, surrogate
///   pairs joined), each ending on the line where it starts.
/// - Flow collections `[a, "b", 3]` and `{a: 1, "b": [2, 3]}`, nested and
///   spanning lines freely (so any JSON text parses). One trailing comma
///   before the closing bracket is tolerated, as YAML allows; an empty entry
///   (`[a,,b]`, `[,]`) is an error. `{key: }` and `{key:, ...}` give a null
///   value; a key without `:` (`{a}`) is an error.
///
/// Rejected with the line of the problem: anchors and aliases (`&`, `*`),
/// tags (`!`), block scalars (`|`, `>`), complex keys (`?`), directives
/// (`%`), the reserved `@` and `` ` ``, a second document (`---` later on) or
/// `...`, tabs in indentation, inconsistent indentation (which includes
/// multi-line plain scalars), text after a scalar or flow collection, a
/// nested mapping on its key's line (`a: b: c`), `key: value` pairs inside
/// flow sequences, collections as keys, unterminated quotes or flow
/// collections, duplicate keys in one mapping, unpaired surrogates, control
/// characters other than tab, nesting deeper than ``maxDepth``, and an empty
/// document.
public enum PipelineText {
  /// The deepest nesting of sequences and mappings accepted.
  public static let maxDepth = 64

  /// Parses a complete pipeline text (YAML subset or JSON).
  ///
  /// - Parameter text: The file's text.
  /// - Returns: The document's top-level node.
  /// - Throws: ``PipelineTextError`` naming the first problem's line.
  public static func parse(_ text: String) throws(PipelineTextError) -> PipelineNode {
    var parser = try Parser(text)
    return try parser.parseDocument()
  }
}

// MARK: - Parser

private enum ASCII {
  static let tab = UInt8(ascii: "\t")
  static let lf = UInt8(ascii: "\n")
  static let cr = UInt8(ascii: "\r")
  static let space = UInt8(ascii: " ")
  static let hash = UInt8(ascii: "#")
  static let dash = UInt8(ascii: "-")
  static let dot = UInt8(ascii: ".")
  static let colon = UInt8(ascii: ":")
  static let comma = UInt8(ascii: ",")
  static let question = UInt8(ascii: "?")
  static let lbracket = UInt8(ascii: "[")
  static let rbracket = UInt8(ascii: "]")
  static let lbrace = UInt8(ascii: "{")
  static let rbrace = UInt8(ascii: "}")
  static let dquote = UInt8(ascii: "\"")
  static let squote = UInt8(ascii: "'")
  static let backslash = UInt8(ascii: "\\")
  static let amp = UInt8(ascii: "&")
  static let star = UInt8(ascii: "*")
  static let bang = UInt8(ascii: "!")
  static let pipe = UInt8(ascii: "|")
  static let gt = UInt8(ascii: ">")
  static let percent = UInt8(ascii: "%")
  static let at = UInt8(ascii: "@")
  static let backtick = UInt8(ascii: "`")
}

private struct Parser {
  /// The text's bytes with line ends normalized to LF and any BOM removed.
  private let b: [UInt8]
  private var pos = 0
  /// The 1-based line of `pos`.
  private var line = 1
  /// The index of the first byte of `pos`'s line.
  private var lineStart = 0
  private var depth = 0

  init(_ text: String) throws(PipelineTextError) {
    let src = Array(text.utf8)
    var out: [UInt8] = []
    out.reserveCapacity(src.count)
    var i = src.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
    var line = 1
    while i < src.count {
      let c = src[i]
      if c == ASCII.cr {
        out.append(ASCII.lf)
        line += 1
        if i + 1 < src.count && src[i + 1] == ASCII.lf { i += 1 }
      } else if c == ASCII.lf {
        out.append(ASCII.lf)
        line += 1
      } else if c == ASCII.tab || (c >= 0x20 && c != 0x7F) {
        out.append(c)
      } else {
        let hex = String(c, radix: 16, uppercase: true)
        throw PipelineTextError(
          line: line,
          message: "control character U+\(String(repeating: "0", count: 4 - hex.count))\(hex) is not allowed")
      }
      i += 1
    }
    b = out
  }

  // MARK: Low-level scanning

  private func peek(_ offset: Int = 0) -> UInt8? {
    let i = pos + offset
    return i < b.count ? b[i] : nil
  }

  private var column: Int { pos - lineStart }
  private var atEnd: Bool { pos >= b.count }

  private static func isBlank(_ c: UInt8?) -> Bool { c == ASCII.space || c == ASCII.tab }

  /// Whitespace, a line end, or the end of the input.
  private static func isSep(_ c: UInt8?) -> Bool {
    guard let c else { return true }
    return c == ASCII.space || c == ASCII.tab || c == ASCII.lf
  }

  private static func isFlowIndicator(_ c: UInt8?) -> Bool {
    c == ASCII.comma || c == ASCII.lbracket || c == ASCII.rbracket || c == ASCII.lbrace
      || c == ASCII.rbrace
  }

  private var atDashItem: Bool { peek() == ASCII.dash && Self.isSep(peek(1)) }

  private mutating func advance() {
    guard pos < b.count else { return }
    if b[pos] == ASCII.lf {
      line += 1
      lineStart = pos + 1
    }
    pos += 1
  }

  /// Skips spaces and tabs on the current line; tells whether there was a tab.
  @discardableResult
  private mutating func skipInline() -> Bool {
    var sawTab = false
    while let c = peek(), Self.isBlank(c) {
      if c == ASCII.tab { sawTab = true }
      pos += 1
    }
    return sawTab
  }

  /// Whether `pos` is at a `#` that starts a comment.
  private var atComment: Bool {
    peek() == ASCII.hash && (pos == lineStart || Self.isBlank(b[pos - 1]))
  }

  /// Whether only a comment (or nothing) is left on the line.
  private var atLineEnd: Bool {
    guard let c = peek() else { return true }
    return c == ASCII.lf || atComment
  }

  /// Consumes the rest of a line known to hold only whitespace or a comment.
  private mutating func endLine() {
    while let c = peek(), c != ASCII.lf { pos += 1 }
    advance()
  }

  /// Consumes the rest of the line after a value, which must be empty or a comment.
  private mutating func finishLine(after what: String) throws(PipelineTextError) {
    skipInline()
    if atLineEnd {
      endLine()
      return
    }
    if peek() == ASCII.colon {
      throw fail("unexpected ':' after \(what); a nested mapping must start on its own line")
    }
    throw fail("unexpected text after \(what): \(snippet())")
  }

  /// Moves from the start of a line to the first character of the next line
  /// with content, skipping blank and comment lines. Returns false at the end.
  private mutating func skipToContent(markers: Bool = true) throws(PipelineTextError) -> Bool {
    while pos < b.count {
      var i = pos
      var sawTab = false
      while i < b.count && Self.isBlank(b[i]) {
        if b[i] == ASCII.tab { sawTab = true }
        i += 1
      }
      pos = i
      guard let c = peek() else { return false }
      if c == ASCII.lf || c == ASCII.hash {
        endLine()
        continue
      }
      if sawTab { throw fail("tab character in indentation; indent with spaces") }
      if markers && column == 0 {
        if isMarker(ASCII.dash) {
          throw fail("multiple documents are not supported ('---' after the first document)")
        }
        if isMarker(ASCII.dot) { throw fail("document end marker '...' is not supported") }
      }
      return true
    }
    return false
  }

  /// Whether `pos` is at `---` or `...` (three of `c`) followed by whitespace or a line end.
  private func isMarker(_ c: UInt8) -> Bool {
    peek() == c && peek(1) == c && peek(2) == c && Self.isSep(peek(3))
  }

  private func fail(_ message: String) -> PipelineTextError {
    PipelineTextError(line: line, message: message)
  }

  private func fail(line: Int, _ message: String) -> PipelineTextError {
    PipelineTextError(line: line, message: message)
  }

  /// The rest of the line from `pos`, shortened and quoted, for messages.
  private func snippet() -> String {
    guard pos < b.count, b[pos] != ASCII.lf else { return pos < b.count ? "end of line" : "end of input" }
    var end = pos
    while end < b.count && b[end] != ASCII.lf { end += 1 }
    var text = String(decoding: b[pos..<end], as: UTF8.self)
    while let last = text.last, last == " " || last == "\t" { text.removeLast() }
    if text.count > 30 { text = String(text.prefix(30)) + "…" }
    return "'\(text)'"
  }

  private static func spaces(_ n: Int) -> String { n == 1 ? "1 space" : "\(n) spaces" }

  private static func describe(_ node: PipelineNode) -> String {
    switch node.kind {
    case .null: "null"
    case .scalar(let text, _): "\"\(text.count > 30 ? String(text.prefix(30)) + "…" : text)\""
    case .sequence: "the flow sequence"
    case .mapping: "the flow mapping"
    }
  }

  private mutating func enter() throws(PipelineTextError) {
    depth += 1
    if depth > PipelineText.maxDepth {
      throw fail("nesting deeper than \(PipelineText.maxDepth) levels")
    }
  }

  /// Rejects characters that would start a YAML feature outside the subset.
  private func checkIndicators(flow: Bool) throws(PipelineTextError) {
    guard let c = peek() else { return }
    let next = peek(1)
    let ends = Self.isSep(next) || (flow && Self.isFlowIndicator(next))
    switch c {
    case ASCII.amp: throw fail("anchors ('&') are not supported")
    case ASCII.star: throw fail("aliases ('*') are not supported")
    case ASCII.bang: throw fail("tags ('!') are not supported")
    case ASCII.pipe, ASCII.gt:
      throw fail("block scalars ('|', '>') are not supported; use a quoted scalar")
    case ASCII.percent:
      throw fail("directives ('%') are not supported; quote a value that starts with '%'")
    case ASCII.at, ASCII.backtick:
      throw fail("'\(Character(Unicode.Scalar(c)))' is reserved and cannot start a plain scalar; quote the value")
    case ASCII.question where ends: throw fail("complex mapping keys ('?') are not supported")
    case ASCII.colon where ends: throw fail("missing mapping key before ':'")
    case ASCII.dash where ends && flow:
      throw fail("block sequence items ('- ') are not allowed inside a flow collection")
    case ASCII.comma, ASCII.rbracket, ASCII.rbrace:
      throw fail("unexpected '\(Character(Unicode.Scalar(c)))'")
    case ASCII.hash: throw fail("unexpected '#'; a comment must follow whitespace")
    default: return
    }
  }

  // MARK: Scalars

  /// Scans a plain scalar from `pos` and leaves `pos` just after its last
  /// non-blank character. It ends at a line end, at whitespace before `#`, at
  /// `:` followed by whitespace or the line end, and in flow context also at
  /// `,`, `[`, `]`, `{`, `}` and at `:` followed by one of them.
  private mutating func scanPlain(flow: Bool) -> String {
    let start = pos
    var end = pos
    var i = pos
    while i < b.count {
      let c = b[i]
      if c == ASCII.lf { break }
      if Self.isBlank(c) {
        var j = i
        while j < b.count && Self.isBlank(b[j]) { j += 1 }
        if j < b.count && b[j] == ASCII.hash { break }
        i = j
        continue
      }
      if c == ASCII.colon {
        let next: UInt8? = i + 1 < b.count ? b[i + 1] : nil
        if Self.isSep(next) || (flow && Self.isFlowIndicator(next)) { break }
      }
      if flow && Self.isFlowIndicator(c) { break }
      i += 1
      end = i
    }
    pos = end
    return String(decoding: b[start..<end], as: UTF8.self)
  }

  /// A quoted scalar's text, or nil (without moving) if `pos` is not at a quote.
  private mutating func quoted() throws(PipelineTextError) -> String? {
    switch peek() {
    case ASCII.dquote: return try doubleQuoted()
    case ASCII.squote: return try singleQuoted()
    default: return nil
    }
  }

  private mutating func singleQuoted() throws(PipelineTextError) -> String {
    let openLine = line
    pos += 1
    var out: [UInt8] = []
    while true {
      guard let c = peek(), c != ASCII.lf else {
        throw fail(line: openLine, "unterminated single-quoted scalar (quoted scalars must end on the line they start)")
      }
      pos += 1
      if c == ASCII.squote {
        if peek() == ASCII.squote {
          out.append(ASCII.squote)
          pos += 1
        } else {
          return String(decoding: out, as: UTF8.self)
        }
      } else {
        out.append(c)
      }
    }
  }

  private mutating func doubleQuoted() throws(PipelineTextError) -> String {
    let openLine = line
    let unterminatedError = fail(
      line: openLine, "unterminated double-quoted scalar (quoted scalars must end on the line they start)")
    pos += 1
    var out: [UInt8] = []
    while true {
      guard let c = peek(), c != ASCII.lf else { throw unterminatedError }
      pos += 1
      if c == ASCII.dquote { return String(decoding: out, as: UTF8.self) }
      guard c == ASCII.backslash else {
        out.append(c)
        continue
      }
      guard let e = peek(), e != ASCII.lf else { throw unterminatedError }
      pos += 1
      switch e {
      case ASCII.dquote, ASCII.backslash, UInt8(ascii: "/"): out.append(e)
      case UInt8(ascii: "b"): out.append(0x08)
      case UInt8(ascii: "f"): out.append(0x0C)
      case UInt8(ascii: "n"): out.append(ASCII.lf)
      case UInt8(ascii: "r"): out.append(ASCII.cr)
      case UInt8(ascii: "t"): out.append(ASCII.tab)
      case UInt8(ascii: "u"):
        var value = try hex4()
        if (0xD800...0xDBFF).contains(value) {
          guard peek() == ASCII.backslash, peek(1) == UInt8(ascii: "u") else {
            throw fail("unpaired surrogate \\u\(Self.hexString(value)) in double-quoted scalar")
          }
          pos += 2
          let low = try hex4()
          guard (0xDC00...0xDFFF).contains(low) else {
            throw fail("unpaired surrogate \\u\(Self.hexString(value)) in double-quoted scalar")
          }
          value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00...0xDFFF).contains(value) {
          throw fail("unpaired surrogate \\u\(Self.hexString(value)) in double-quoted scalar")
        }
        guard let scalar = Unicode.Scalar(value) else {
          throw fail("invalid escape \\u\(Self.hexString(value)) in double-quoted scalar")
        }
        out.append(contentsOf: String(Character(scalar)).utf8)
      default:
        let shown = e < 0x80 ? String(Character(Unicode.Scalar(e))) : "…"
        throw fail("unsupported escape '\\\(shown)' in double-quoted scalar (only JSON escapes are allowed)")
      }
    }
  }

  private static func hexString(_ value: UInt32) -> String {
    let hex = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - hex.count)) + hex
  }

  private mutating func hex4() throws(PipelineTextError) -> UInt32 {
    var value: UInt32 = 0
    for _ in 0..<4 {
      guard let c = peek(), let digit = Self.hexDigit(c) else {
        throw fail("\\u must be followed by four hexadecimal digits")
      }
      value = value << 4 | digit
      pos += 1
    }
    return value
  }

  private static func hexDigit(_ c: UInt8) -> UInt32? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(c - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(c - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(c - UInt8(ascii: "A") + 10)
    default: nil
    }
  }

  /// A quoted or plain scalar at `pos` (indicators already checked).
  private mutating func scalar(flow: Bool) throws(PipelineTextError) -> PipelineNode {
    let startLine = line
    if let text = try quoted() { return PipelineNode(kind: .scalar(text, quoted: true), line: startLine) }
    let text = scanPlain(flow: flow)
    if text.isEmpty { throw fail("expected a value, found \(snippet())") }
    if text == "~" || text == "null" { return PipelineNode(kind: .null, line: startLine) }
    return PipelineNode(kind: .scalar(text, quoted: false), line: startLine)
  }

  // MARK: Document and block structure

  mutating func parseDocument() throws(PipelineTextError) -> PipelineNode {
    guard try skipToContent(markers: false) else { throw fail(line: 1, "empty document") }
    if column == 0 && isMarker(ASCII.dash) {
      pos += 3
      skipInline()
      guard atLineEnd else {
        throw fail("content on the '---' line is not supported; start the document on the next line")
      }
      endLine()
      guard try skipToContent() else { throw fail(line: 1, "empty document") }
    }
    let indent = column
    let node = try blockNode(dashTab: false)
    if !atEnd {
      if column < indent {
        throw fail(
          "inconsistent indentation: this line is indented \(Self.spaces(column)), but the document starts at \(Self.spaces(indent))")
      }
      let hint = node.string != nil ? " (multi-line plain scalars are not supported)" : ""
      throw fail("unexpected content after the document's top-level value\(hint)")
    }
    return node
  }

  /// A node in block context at `pos`, which is at content (the first on its
  /// line, or after `- `). Leaves `pos` at the next content line or the end.
  private mutating func blockNode(dashTab: Bool) throws(PipelineTextError) -> PipelineNode {
    let tabError = "tab character after '-'; indent with spaces"
    if atDashItem {
      if dashTab { throw fail(tabError) }
      return try blockSequence(siblingKeys: false)
    }
    try checkIndicators(flow: false)
    if peek() == ASCII.lbracket || peek() == ASCII.lbrace {
      let node = try flowNode()
      skipInline()
      if peek() == ASCII.colon { throw fail("flow collections cannot be mapping keys") }
      try finishLine(after: Self.describe(node))
      _ = try skipToContent()
      return node
    }
    if looksLikeKey() {
      if dashTab { throw fail(tabError) }
      return try blockMapping()
    }
    let node = try scalar(flow: false)
    try finishLine(after: Self.describe(node))
    _ = try skipToContent()
    return node
  }

  /// Whether the line at `pos` starts with a key and `:`. Does not move.
  private mutating func looksLikeKey() -> Bool {
    let saved = (pos, line, lineStart)
    defer { (pos, line, lineStart) = saved }
    let isQuoted: Bool
    do {
      isQuoted = try quoted() != nil
    } catch {
      return false
    }
    if !isQuoted && scanPlain(flow: false).isEmpty { return false }
    skipInline()
    return peek() == ASCII.colon && (isQuoted || Self.isSep(peek(1)))
  }

  private mutating func blockMapping() throws(PipelineTextError) -> PipelineNode {
    try enter()
    defer { depth -= 1 }
    let indent = column
    let startLine = line
    var entries: [PipelineEntry] = []
    var seen: [String: Int] = [:]
    while true {
      let keyLine = line
      if atDashItem {
        throw fail("expected 'key: value' at this indentation (the mapping at line \(startLine)), found a sequence item")
      }
      try checkIndicators(flow: false)
      if peek() == ASCII.lbracket || peek() == ASCII.lbrace {
        throw fail("flow collections cannot be mapping keys")
      }
      let key: String
      var isQuoted = true
      if let text = try quoted() {
        key = text
      } else {
        key = scanPlain(flow: false)
        isQuoted = false
      }
      skipInline()
      guard peek() == ASCII.colon, isQuoted || !key.isEmpty else {
        pos = lineStart + indent
        throw fail("expected 'key: value' at this indentation (the mapping at line \(startLine)), found \(snippet())")
      }
      pos += 1
      if let first = seen[key] {
        throw fail(line: keyLine, "duplicate key \"\(key)\" at lines \(first) and \(keyLine)")
      }
      seen[key] = keyLine
      let value: PipelineNode
      var inlineScalar = false
      skipInline()
      if atLineEnd {
        endLine()
        if try skipToContent() {
          if column > indent {
            value = try blockNode(dashTab: false)
          } else if column == indent && atDashItem {
            value = try blockSequence(siblingKeys: true)
          } else {
            value = PipelineNode(kind: .null, line: keyLine)
          }
        } else {
          value = PipelineNode(kind: .null, line: keyLine)
        }
      } else {
        value = try inlineValue()
        inlineScalar = value.string != nil || value.isNull
        try finishLine(after: Self.describe(value))
        _ = try skipToContent()
      }
      entries.append(PipelineEntry(key: key, line: keyLine, value: value))
      guard !atEnd, column >= indent else { break }
      if column > indent {
        let hint = inlineScalar ? " (multi-line plain scalars are not supported)" : ""
        throw fail(
          "inconsistent indentation: this line is indented \(Self.spaces(column)), but the mapping at line \(startLine) is indented \(Self.spaces(indent))\(hint)")
      }
    }
    return PipelineNode(kind: .mapping(entries), line: startLine)
  }

  /// The value after `key: ` on the key's line: a scalar or a flow collection.
  private mutating func inlineValue() throws(PipelineTextError) -> PipelineNode {
    if atDashItem {
      throw fail("a block sequence cannot start on its key's line; put the '- ' items on the following lines")
    }
    try checkIndicators(flow: false)
    if peek() == ASCII.lbracket || peek() == ASCII.lbrace { return try flowNode() }
    return try scalar(flow: false)
  }

  private mutating func blockSequence(siblingKeys: Bool) throws(PipelineTextError) -> PipelineNode {
    try enter()
    defer { depth -= 1 }
    let indent = column
    let startLine = line
    var items: [PipelineNode] = []
    while true {
      let itemLine = line
      pos += 1  // the '-'
      let sawTab = skipInline()
      if atLineEnd {
        endLine()
        if try skipToContent(), column > indent {
          items.append(try blockNode(dashTab: false))
        } else {
          items.append(PipelineNode(kind: .null, line: itemLine))
        }
      } else {
        items.append(try blockNode(dashTab: sawTab))
      }
      guard !atEnd, column >= indent else { break }
      if column > indent {
        throw fail(
          "inconsistent indentation: this line is indented \(Self.spaces(column)), but the sequence at line \(startLine) is indented \(Self.spaces(indent))")
      }
      if atDashItem { continue }
      if siblingKeys { break }
      throw fail("expected a sequence item '- ' at this indentation (the sequence at line \(startLine)), found \(snippet())")
    }
    return PipelineNode(kind: .sequence(items), line: startLine)
  }

  // MARK: Flow collections

  /// Skips spaces, tabs, line ends and comments inside a flow collection.
  private mutating func skipFlowSpace() {
    while let c = peek() {
      if Self.isBlank(c) {
        pos += 1
      } else if c == ASCII.lf {
        advance()
      } else if atComment {
        while let d = peek(), d != ASCII.lf { pos += 1 }
      } else {
        return
      }
    }
  }

  private mutating func flowNode() throws(PipelineTextError) -> PipelineNode {
    try checkIndicators(flow: true)
    switch peek() {
    case ASCII.lbracket: return try flowSequence()
    case ASCII.lbrace: return try flowMapping()
    default: return try scalar(flow: true)
    }
  }

  private func unterminated(_ what: String, _ open: Character, _ close: Character, line openLine: Int)
    -> PipelineTextError
  {
    fail(line: openLine, "unterminated flow \(what): '\(open)' at line \(openLine) has no matching '\(close)'")
  }

  private mutating func flowSequence() throws(PipelineTextError) -> PipelineNode {
    try enter()
    defer { depth -= 1 }
    let openLine = line
    pos += 1
    var items: [PipelineNode] = []
    while true {
      skipFlowSpace()
      guard let c = peek() else { throw unterminated("sequence", "[", "]", line: openLine) }
      if c == ASCII.rbracket {
        pos += 1
        break
      }
      if c == ASCII.comma { throw fail("unexpected ',' in flow sequence (empty entry)") }
      items.append(try flowNode())
      skipFlowSpace()
      guard let d = peek() else { throw unterminated("sequence", "[", "]", line: openLine) }
      switch d {
      case ASCII.comma: pos += 1
      case ASCII.rbracket:
        pos += 1
        return PipelineNode(kind: .sequence(items), line: openLine)
      case ASCII.colon:
        throw fail("'key: value' pairs inside a flow sequence are not supported; write {key: value}")
      default:
        throw fail("expected ',' or ']' in the flow sequence opened at line \(openLine), found \(snippet())")
      }
    }
    return PipelineNode(kind: .sequence(items), line: openLine)
  }

  private mutating func flowMapping() throws(PipelineTextError) -> PipelineNode {
    try enter()
    defer { depth -= 1 }
    let openLine = line
    pos += 1
    var entries: [PipelineEntry] = []
    var seen: [String: Int] = [:]
    while true {
      skipFlowSpace()
      guard let c = peek() else { throw unterminated("mapping", "{", "}", line: openLine) }
      if c == ASCII.rbrace {
        pos += 1
        break
      }
      if c == ASCII.comma { throw fail("unexpected ',' in flow mapping (empty entry)") }
      try checkIndicators(flow: true)
      if c == ASCII.lbracket || c == ASCII.lbrace { throw fail("flow collections cannot be mapping keys") }
      let keyLine = line
      let key: String
      if let text = try quoted() {
        key = text
      } else {
        key = scanPlain(flow: true)
        if key.isEmpty { throw fail("expected a mapping key, found \(snippet())") }
      }
      skipFlowSpace()
      guard let d = peek() else { throw unterminated("mapping", "{", "}", line: openLine) }
      guard d == ASCII.colon else {
        throw fail("expected ':' after key \"\(key)\" in the flow mapping opened at line \(openLine)")
      }
      pos += 1
      if let first = seen[key] {
        throw fail(line: keyLine, "duplicate key \"\(key)\" at lines \(first) and \(keyLine)")
      }
      seen[key] = keyLine
      skipFlowSpace()
      guard let v = peek() else { throw unterminated("mapping", "{", "}", line: openLine) }
      let value =
        v == ASCII.comma || v == ASCII.rbrace ? PipelineNode(kind: .null, line: keyLine) : try flowNode()
      entries.append(PipelineEntry(key: key, line: keyLine, value: value))
      skipFlowSpace()
      guard let e = peek() else { throw unterminated("mapping", "{", "}", line: openLine) }
      switch e {
      case ASCII.comma: pos += 1
      case ASCII.rbrace:
        pos += 1
        return PipelineNode(kind: .mapping(entries), line: openLine)
      default:
        throw fail("expected ',' or '}' in the flow mapping opened at line \(openLine), found \(snippet())")
      }
    }
    return PipelineNode(kind: .mapping(entries), line: openLine)
  }
}
