import StrictJSON

/// A compressed-tensors `quantization_config` (the object in `config.json`).
///
/// Parsing validates what compressed-tensors validates (see
/// ``QuantizationScheme`` and ``QuantizationArgs``); unknown *top-level* keys
/// are ignored, as the library does, because new versions keep adding them
/// (`global_compression_ratio`, `sparsity_config`, `transform_config`,
/// `version`, …). Every key, known or not, stays in ``raw`` in document order,
/// and ``toJSON()`` of an unmodified config equals the input exactly.
///
/// ## Matching
///
/// ``scheme(forModule:isLinear:)`` decides as
/// `compressed_tensors.quantization.lifecycle.apply.apply_quantization_config`:
/// a module is quantized when some target matches it and no ``ignore`` entry
/// does. Among matching targets, the library's priority picks the scheme:
/// an exact-name target first, then `re:` targets in sorted order of their text,
/// then the class target `"Linear"`; a target text listed by several groups
/// belongs to the last of them. With one group per module (every real config)
/// this is simply the group whose targets match;
/// ``matchingSchemes(forModule:isLinear:)`` lists all of them for callers that
/// want to refuse overlaps.
///
/// `"Linear"`, in `targets` or `ignore`, matches when `isLinear` is `true`; any
/// other entry without `re:` is an exact module name. Class names other than
/// `"Linear"` (``NamePattern/looksLikeClassName``) therefore match nothing here:
/// check ``unsupportedClassTargets`` before trusting the result.
public struct QuantizationConfig: Sendable {
  /// `quantization_status` values.
  public enum QuantizationStatus: String, Sendable, CaseIterable {
    case initialized, calibration, frozen, compressed, decompressed
  }

  /// The only `quant_method` this type accepts.
  public static let compressedTensorsMethod = "compressed-tensors"

  /// The whole object, every key in document order. Editing it does not
  /// update the parsed properties; use ``setValue(_:forKey:)`` for an edit that
  /// is validated and re-parsed, or ``reparsed()`` after editing.
  public var raw: JSONObject

  /// `quant_method`, always `"compressed-tensors"`.
  public let quantMethod: String
  /// `format`, for example `"pack-quantized"`; `nil` when absent (the library
  /// then assumes `"fakequant"`).
  public let format: String?
  /// `quantization_status`; `nil` when absent (the library then assumes
  /// `initialized`).
  public let quantizationStatus: QuantizationStatus?
  /// `kv_cache_scheme` as written; `nil` when absent or `null`.
  public let kvCacheScheme: JSONValue?
  /// ``kvCacheScheme`` parsed and validated as quantization arguments.
  public let kvCacheArgs: QuantizationArgs?
  /// `config_groups` in document order.
  public let configGroups: [QuantizationScheme]
  /// `ignore` as written (empty when absent or `null`).
  public let ignore: [String]
  /// ``ignore`` parsed.
  public let ignorePatterns: [NamePattern]

  private let matcher: Matcher
  private let memoizeMatching: Bool

  /// Parses a `quantization_config` object.
  ///
  /// - Parameters:
  ///   - json: The object.
  ///   - memoizeMatching: Whether matching may cache results by
  ///     digit-normalized module name where that is provably sound (see
  ///     ``NamePattern``). `false` runs every regex on every call.
  /// - Throws: ``QuantizationConfigError``; ``QuantizationConfigError/Code/notCompressedTensors``
  ///   when `quant_method` is absent or another method (DeepSeek's `"fp8"`, …).
  public init(json: JSONValue, memoizeMatching: Bool = true) throws(QuantizationConfigError) {
    let root = ConfigPath()
    guard case .object(let obj) = json else {
      throw QuantizationConfigError(
        code: .notAnObject,
        message: "quantization_config: expected an object, found \(json.kindName)")
    }
    guard case .string(let method)? = obj["quant_method"], method == Self.compressedTensorsMethod
    else {
      throw .notCompressedTensors(method: obj["quant_method"]?.stringValue)
    }
    raw = obj
    quantMethod = method
    self.memoizeMatching = memoizeMatching
    let r = JSONReader(object: obj, path: root)
    format = try r.string("format")
    if let status = try r.string("quantization_status") {
      guard let s = QuantizationStatus(rawValue: status) else {
        throw root.appending("quantization_status").error(
          .invalidValue,
          "unknown quantization_status \"\(status)\" ("
            + QuantizationStatus.allCases.map(\.rawValue).joined(separator: ", ") + ")")
      }
      quantizationStatus = s
    } else {
      quantizationStatus = nil
    }
    if let kv = obj["kv_cache_scheme"], kv != .null {
      kvCacheScheme = kv
      kvCacheArgs = try QuantizationArgs(json: kv, path: root.appending("kv_cache_scheme"))
    } else {
      kvCacheScheme = nil
      kvCacheArgs = nil
    }
    switch obj["config_groups"] {
    case .object(let groups)?:
      var schemes: [QuantizationScheme] = []
      for (name, value) in groups.members {
        schemes.append(try QuantizationScheme(name: name, json: value, memoize: memoizeMatching))
      }
      configGroups = schemes
    case nil:
      throw root.appending("config_groups").error(.missingKey, "config_groups is required")
    case let other?:
      throw root.appending("config_groups").wrongType(expected: "an object", found: other)
    }
    ignore = try r.strings("ignore") ?? []
    var patterns: [NamePattern] = []
    patterns.reserveCapacity(ignore.count)
    for (i, entry) in ignore.enumerated() {
      patterns.append(
        try NamePattern(entry, memoize: memoizeMatching, path: root.appending("ignore[\(i)]")))
    }
    ignorePatterns = patterns
    matcher = Matcher(groups: configGroups, ignore: patterns, memoize: memoizeMatching)
  }

  /// The config as JSON: ``raw``, including every unknown key and any edits.
  public func toJSON() -> JSONValue { .object(raw) }

  /// Parses ``raw`` again, validating edits made to it directly.
  public func reparsed() throws(QuantizationConfigError) -> QuantizationConfig {
    try QuantizationConfig(json: .object(raw), memoizeMatching: memoizeMatching)
  }

  /// Sets (or, with `nil`, removes) a top-level key, keeping its position when
  /// it exists, and re-parses. On error `self` is unchanged.
  public mutating func setValue(_ value: JSONValue?, forKey key: String)
    throws(QuantizationConfigError)
  {
    var edited = raw
    edited[key] = value
    self = try QuantizationConfig(json: .object(edited), memoizeMatching: memoizeMatching)
  }

  /// Replaces the `ignore` list and re-parses.
  public mutating func setIgnore(_ entries: [String]) throws(QuantizationConfigError) {
    try setValue(.array(entries.map { .string($0) }), forKey: "ignore")
  }

  /// Target entries without `re:` that look like class names other than
  /// `"Linear"` (`"MoE"`, …): compressed-tensors would match them against
  /// module classes, which this type cannot see.
  public var unsupportedClassTargets: [String] {
    configGroups.flatMap(\.targetPatterns).filter { $0.looksLikeClassName && $0.text != "Linear" }
      .map(\.text)
  }

  /// Whether an `ignore` entry matches the module: an equal name, a `re:`
  /// prefix match, or `"Linear"` when `isLinear` is `true`.
  public func isIgnored(_ name: String, isLinear: Bool = false) -> Bool {
    matcher.isIgnored(name, isLinear: isLinear)
  }

  /// The scheme that quantizes the module, or `nil` when no target matches or
  /// an `ignore` entry does. See the type's discussion for the priority rule.
  ///
  /// - Parameters:
  ///   - name: The module name, for example `model.layers.1.mlp.experts.5.up_proj`
  ///     (no `.weight` suffix).
  ///   - isLinear: Whether the module is a `torch.nn.Linear`, for the
  ///     `"Linear"` class target (``DeepSeekV3Modules/isLinear(_:)`` knows this
  ///     for DeepSeek-V3-style models).
  public func scheme(forModule name: String, isLinear: Bool) -> QuantizationScheme? {
    matcher.schemeIndex(forModule: name, isLinear: isLinear).map { configGroups[$0] }
  }

  /// Every group with a target matching the module (ignoring `ignore`), in
  /// document order.
  public func matchingSchemes(forModule name: String, isLinear: Bool) -> [QuantizationScheme] {
    configGroups.filter { group in
      group.targetPatterns.contains { p in
        (p.text == "Linear" && !p.isRegex && isLinear) || p.matches(name)
      }
    }
  }

  /// A DeepSeek-V3 block-FP8 `quantization_config` (FORMATS.md §4):
  /// `{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[R,C]}`.
  ///
  /// Keys are in the order of DeepSeek-V3's own `config.json` (alphabetical),
  /// so a converted Kimi K2 config reads like Kimi-K2-Instruct's.
  ///
  /// - Precondition: `blockSize` holds two positive integers.
  public static func fp8BlockConfig(blockSize: [Int] = [128, 128]) -> JSONValue {
    precondition(
      blockSize.count == 2 && blockSize.allSatisfy { $0 > 0 },
      "weight_block_size must be two positive integers, got \(blockSize)")
    return .object(
      JSONObject([
        ("activation_scheme", "dynamic"),
        ("fmt", "e4m3"),
        ("quant_method", "fp8"),
        ("weight_block_size", .array(blockSize.map { .number(JSONNumber($0)) })),
      ]))
  }
}

/// Precomputed matching tables for one config.
private final class Matcher: Sendable {
  /// What the `re:` entries say about one module name.
  struct RegexOutcome: Sendable {
    var ignored: Bool
    var targetGroup: Int?
  }

  let exactIgnore: Set<String>
  let ignoresLinear: Bool
  let regexIgnore: [NamePattern]
  /// Exact-name targets → index of the last group listing them.
  let exactTargets: [String: Int]
  /// `re:` targets, deduplicated (last group wins), in Python's sort order.
  let regexTargets: [(pattern: NamePattern, group: Int)]
  /// The group of the `"Linear"` class target (last group listing it).
  let linearGroup: Int?
  /// Set when every regex treats digits alike, so whole outcomes can be cached.
  let memo: Memo<RegexOutcome>?

  init(groups: [QuantizationScheme], ignore: [NamePattern], memoize: Bool) {
    exactIgnore = Set(ignore.filter { !$0.isRegex }.map(\.text))
    ignoresLinear = exactIgnore.contains("Linear")
    regexIgnore = ignore.filter(\.isRegex)
    var exact: [String: Int] = [:]
    var regex: [String: (pattern: NamePattern, group: Int)] = [:]
    var linear: Int? = nil
    for (g, group) in groups.enumerated() {
      for p in group.targetPatterns {
        if p.isRegex {
          regex[p.text] = (p, g)
        } else {
          exact[p.text] = g
          if p.text == "Linear" { linear = g }
        }
      }
    }
    exactTargets = exact
    // Python sorts str by code point.
    regexTargets = regex.values.sorted {
      $0.pattern.text.unicodeScalars.lexicographicallyPrecedes($1.pattern.text.unicodeScalars)
    }
    linearGroup = linear
    let allRegexes = regexIgnore + regexTargets.map(\.pattern)
    memo = memoize && allRegexes.allSatisfy(\.isMemoizable) ? Memo() : nil
  }

  private func regexOutcome(_ name: String) -> RegexOutcome {
    let compute = {
      RegexOutcome(
        ignored: self.regexIgnore.contains { $0.matches(name) },
        targetGroup: self.regexTargets.first { $0.pattern.matches(name) }?.group)
    }
    guard let memo else { return compute() }
    let key = NamePattern.digitKey(name)
    if let hit = memo.lookup(key) { return hit }
    let outcome = compute()
    memo.store(key, outcome)
    return outcome
  }

  func isIgnored(_ name: String, isLinear: Bool) -> Bool {
    if exactIgnore.contains(name) || (isLinear && ignoresLinear) { return true }
    if regexIgnore.isEmpty { return false }
    if memo == nil { return regexIgnore.contains { $0.matches(name) } }
    return regexOutcome(name).ignored
  }

  func schemeIndex(forModule name: String, isLinear: Bool) -> Int? {
    if exactIgnore.contains(name) || (isLinear && ignoresLinear) { return nil }
    let outcome: RegexOutcome =
      regexIgnore.isEmpty && regexTargets.isEmpty
      ? RegexOutcome(ignored: false, targetGroup: nil) : regexOutcome(name)
    if outcome.ignored { return nil }
    if let g = exactTargets[name] { return g }
    if let g = outcome.targetGroup { return g }
    if isLinear, let g = linearGroup { return g }
    return nil
  }
}
