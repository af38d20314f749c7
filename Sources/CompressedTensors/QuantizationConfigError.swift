import StrictJSON

/// Why a `quantization_config` (or one of its patterns) was rejected.
///
/// ``code`` is a stable kebab-case identifier for programs; ``message`` is a
/// sentence for people that names the config group, key and pattern involved.
/// The optional fields carry the same facts in structured form.
public struct QuantizationConfigError: Error, CustomStringConvertible, Sendable, Equatable {
  /// Stable error identifiers; the raw values never change.
  public enum Code: String, Sendable, CaseIterable {
    /// The value that should be a JSON object is not one.
    case notAnObject = "not-an-object"
    /// `quant_method` is absent or is not `"compressed-tensors"` (for example
    /// DeepSeek's `"fp8"`); ``QuantizationConfigError/method`` holds it.
    case notCompressedTensors = "not-compressed-tensors"
    /// A required key is absent.
    case missingKey = "missing-key"
    /// A key holds a JSON value of the wrong kind.
    case wrongType = "wrong-type"
    /// A key that the library's `extra="forbid"` models would reject.
    case unknownKey = "unknown-key"
    /// A value is of the right kind but not allowed (unknown strategy,
    /// `num_bits` out of range, …).
    case invalidValue = "invalid-value"
    /// Values that are valid one by one but not together (group strategy
    /// without `group_size`, …), as the library's model validators reject.
    case inconsistentArguments = "inconsistent-arguments"
    /// A `re:` pattern that is not a valid regular expression.
    case invalidPattern = "invalid-pattern"
  }

  /// The stable identifier.
  public let code: Code
  /// A sentence naming the group, key and pattern involved.
  public let message: String
  /// The `config_groups` key involved, if any.
  public let group: String?
  /// The key involved, as a dotted path below the group (`"weights.num_bits"`)
  /// or below `quantization_config` when no group is involved.
  public let key: String?
  /// The target or ignore pattern involved, if any, including any `re:` prefix.
  public let pattern: String?
  /// The `quant_method` found, for ``Code/notCompressedTensors``.
  public let method: String?

  /// Creates an error.
  public init(
    code: Code, message: String, group: String? = nil, key: String? = nil,
    pattern: String? = nil, method: String? = nil
  ) {
    self.code = code
    self.message = message
    self.group = group
    self.key = key
    self.pattern = pattern
    self.method = method
  }

  public var description: String { message }

  /// The error for a `quantization_config` whose `quant_method` is not
  /// `"compressed-tensors"`; `method` is `nil` when the key is absent or not a string.
  public static func notCompressedTensors(method: String?) -> QuantizationConfigError {
    let found = method.map { "\"\($0)\"" } ?? "absent"
    return QuantizationConfigError(
      code: .notCompressedTensors,
      message:
        "quantization_config: quant_method is \(found), not \"compressed-tensors\"",
      key: "quant_method", method: method)
  }
}

/// Where in `quantization_config` a value sits, for error messages.
struct ConfigPath: Sendable {
  /// The config group, if inside `config_groups`.
  var group: String?
  /// Keys below the group (or below `quantization_config`).
  var keys: [String] = []

  func appending(_ key: String) -> ConfigPath {
    ConfigPath(group: group, keys: keys + [key])
  }

  /// The dotted key path, or `nil` at the root.
  var key: String? { keys.isEmpty ? nil : keys.joined(separator: ".") }

  /// `quantization_config.config_groups.G.k1.k2` style text.
  var text: String {
    var parts = ["quantization_config"]
    if let group { parts += ["config_groups", group] }
    parts += keys
    return parts.joined(separator: ".")
  }

  func error(_ code: QuantizationConfigError.Code, _ what: String, pattern: String? = nil)
    -> QuantizationConfigError
  {
    QuantizationConfigError(
      code: code, message: "\(text): \(what)", group: group, key: key, pattern: pattern)
  }

  func wrongType(expected: String, found: JSONValue) -> QuantizationConfigError {
    error(.wrongType, "expected \(expected), found \(found.kindName)")
  }
}
