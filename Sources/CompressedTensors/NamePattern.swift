import Synchronization

/// One entry of a compressed-tensors `targets` or `ignore` list, matched
/// against module names the way `compressed_tensors.utils.match.match_name` does.
///
/// * `"re:<regex>"` is Python `re.match(regex, name)`: the regex must match a
///   **prefix** of the name (anchored at the start only, not at the end).
/// * Any other string must **equal** the name. Class names such as `"Linear"`
///   are not special here; ``QuantizationConfig`` handles the `"Linear"` class
///   target, and ``looksLikeClassName`` flags other class-like entries.
///
/// Regular expressions use Swift's `Regex` with Unicode-scalar semantics (as
/// Python matches code points). The constructs of real configs (`.*`, `\.`,
/// `(a|b)`, classes, `(?P<name>…)`) mean the same in both; a regex Swift cannot
/// compile is rejected rather than guessed at.
///
/// ## Memoization
///
/// `Regex` costs microseconds per call, and a Kimi K2 checkpoint has ~70,000
/// quantized modules. When a regex provably cannot tell ASCII digits apart
/// (``isMemoizable``), its result for a name equals its result for the name with
/// every ASCII digit replaced by `0`: `model.layers.17.mlp.experts.203.up_proj`
/// and `model.layers.42.mlp.experts.111.up_proj` share one cached answer.
/// Replacing each digit (rather than each digit run) keeps the length, so even
/// `.` and `\d` count correctly. A regex is memoizable only when its text is
/// ASCII and contains no digit, no Unicode property (`\p`, `\P`, `[:…:]`), no
/// named character (`\N`) and no back-reference or subroutine (`\k`, `\g`,
/// `(?P=`, `(?P>`, `(?&`, `(?R`, `(?(`): everything left treats all ten digits
/// alike. Results are cached in a table shared by copies of the pattern and
/// safe to use from several threads; the table stops growing at 65,536 keys.
public struct NamePattern: Sendable, Hashable, CustomStringConvertible {
  /// The pattern exactly as written in the config, including any `re:` prefix.
  public let text: String

  /// The regular expression after `re:`, or `nil` for an exact name.
  public let regexSource: String?

  /// Whether results are cached by digit-normalized name (see the type's
  /// discussion). Always `false` for exact names, which are compared directly.
  public let isMemoizable: Bool

  private let regex: CompiledRegex?
  private let memo: Memo<Bool>?

  /// Parses a pattern.
  ///
  /// - Parameters:
  ///   - pattern: The entry, `"re:<regex>"` or an exact module name.
  ///   - memoize: Whether to cache results when that is provably sound
  ///     (``isMemoizable``). Pass `false` to run the regex on every call.
  /// - Throws: ``QuantizationConfigError/Code/invalidPattern`` naming the
  ///   pattern when the regex does not compile.
  public init(_ pattern: String, memoize: Bool = true) throws(QuantizationConfigError) {
    try self.init(pattern, memoize: memoize, path: ConfigPath())
  }

  init(_ pattern: String, memoize: Bool, path: ConfigPath) throws(QuantizationConfigError) {
    text = pattern
    if pattern.hasPrefix("re:") {
      let source = String(pattern.dropFirst(3))
      regexSource = source
      do {
        regex = CompiledRegex(try Regex(source).matchingSemantics(.unicodeScalar))
      } catch {
        throw path.error(
          .invalidPattern,
          "pattern \"\(pattern)\" is not a valid regular expression (\(error))",
          pattern: pattern)
      }
      isMemoizable = NamePattern.treatsDigitsAlike(source)
      memo = memoize && isMemoizable ? Memo() : nil
    } else {
      regexSource = nil
      regex = nil
      isMemoizable = false
      memo = nil
    }
  }

  /// Whether this is a `re:` pattern.
  public var isRegex: Bool { regexSource != nil }

  /// Whether this exact-name entry looks like a Python class name (`"Linear"`,
  /// `"MoE"`, `"DeepseekV3MoE"`): no dot, starts with an ASCII capital letter,
  /// only letters, digits and `_`. compressed-tensors matches such entries
  /// against the module's class hierarchy, which a checkpoint does not record;
  /// callers should refuse ones they cannot interpret rather than read them as
  /// names that match nothing.
  public var looksLikeClassName: Bool {
    guard !isRegex, let first = text.unicodeScalars.first, ("A"..."Z").contains(first) else {
      return false
    }
    return text.unicodeScalars.allSatisfy {
      ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
    }
  }

  /// Whether `name` matches: a prefix regex match for `re:` patterns, string
  /// equality otherwise.
  public func matches(_ name: String) -> Bool {
    guard let regex else { return name == text }
    guard let memo else { return regex.prefixMatches(name) }
    let key = NamePattern.digitKey(name)
    if let hit = memo.lookup(key) { return hit }
    let result = regex.prefixMatches(name)
    memo.store(key, result)
    return result
  }

  public var description: String { text }

  public static func == (lhs: NamePattern, rhs: NamePattern) -> Bool { lhs.text == rhs.text }
  public func hash(into hasher: inout Hasher) { hasher.combine(text) }

  // MARK: Digit normalization

  /// `name` with every ASCII digit replaced by `0` (same length).
  static func digitKey(_ name: String) -> String {
    let utf8 = name.utf8
    guard utf8.contains(where: { $0 >= 0x31 && $0 <= 0x39 }) else { return name }
    return String(unsafeUninitializedCapacity: utf8.count) { buffer in
      var i = 0
      for byte in utf8 {
        buffer[i] = (byte >= 0x31 && byte <= 0x39) ? 0x30 : byte
        i += 1
      }
      return i
    }
  }

  /// Whether the regex `source` provably gives the same answer for names that
  /// differ only in which ASCII digits they contain (conservative: `false`
  /// whenever unsure).
  static func treatsDigitsAlike(_ source: String) -> Bool {
    let scalars = Array(source.unicodeScalars)
    // Non-ASCII text could spell a digit some other way; refuse it.
    guard scalars.allSatisfy({ $0.isASCII }) else { return false }
    // Literal digits (also inside ranges, counted repetitions, escapes such as
    // \x31 \u{0031} \061, and numbered back-references) distinguish digits.
    guard !scalars.contains(where: { ("0"..."9").contains($0) }) else { return false }
    // Escapes that can name a digit or compare against captured text.
    let refusedEscapes: Set<Unicode.Scalar> = ["p", "P", "N", "k", "g", "x", "u", "o", "U"]
    var i = 0
    while i < scalars.count {
      if scalars[i] == "\\" {
        guard i + 1 < scalars.count else { return false }
        if refusedEscapes.contains(scalars[i + 1]) { return false }
        i += 2
        continue
      }
      i += 1
    }
    // Named back-references, subroutine calls, conditionals, POSIX/Oniguruma
    // property classes.
    for construct in ["(?P=", "(?P>", "(?&", "(?R", "(?(", "[:"] where source.contains(construct) {
      return false
    }
    return true
  }
}

/// A compiled regex, shared immutably between threads.
///
/// `Regex<Output>` is `Sendable` whenever `Output` is: its own storage
/// (including the lazily lowered program) is safe to share. Only the match
/// output type `AnyRegexOutput` is not `Sendable`, and matches never leave
/// ``prefixMatches(_:)``. The initializer runs one match so the program is
/// lowered before the regex is shared.
final class CompiledRegex: @unchecked Sendable {
  let regex: Regex<AnyRegexOutput>

  init(_ regex: Regex<AnyRegexOutput>) {
    self.regex = regex
    _ = try? regex.prefixMatch(in: "")
  }

  /// Python `re.match`: anchored at the start, any end.
  func prefixMatches(_ name: String) -> Bool {
    (try? regex.prefixMatch(in: name)) != nil
  }
}

/// A bounded, thread-safe cache from digit-normalized names to results.
final class Memo<Value: Sendable>: Sendable {
  /// The most keys stored; later keys are computed but not cached.
  static var capacity: Int { 1 << 16 }

  private let table = Mutex<[String: Value]>([:])

  init() {}

  func lookup(_ key: String) -> Value? { table.withLock { $0[key] } }

  func store(_ key: String, _ value: Value) {
    table.withLock { t in
      if t.count < Memo.capacity { t[key] = value }
    }
  }
}
