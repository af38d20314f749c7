import StrictJSON

/// One entry of `config_groups`: which modules (``targets``) are quantized
/// and how (``weights``, ``inputActivations``, ``outputActivations``).
///
/// A group is either a scheme object or, as compressed-tensors also allows, a
/// bare list of target strings whose group key names a preset scheme
/// (`"W4A16": ["Linear"]`). Presets are exposed through ``preset`` without
/// arguments: CheckpointKit does not expand them, so callers treat them as
/// unsupported.
public struct QuantizationScheme: Sendable, Equatable {
  /// The `config_groups` key, for example `"group_0"`.
  public let name: String
  /// `targets` as written (for a preset group, the list itself).
  public let targets: [String]
  /// ``targets`` parsed.
  public let targetPatterns: [NamePattern]
  /// `weights`; `nil` when absent or `null`, and for presets.
  public let weights: QuantizationArgs?
  /// `input_activations`; `nil` when absent or `null`, and for presets.
  public let inputActivations: QuantizationArgs?
  /// `output_activations`; `nil` when absent or `null`, and for presets.
  public let outputActivations: QuantizationArgs?
  /// The per-scheme `format`, if set.
  public let format: String?
  /// For a group written as a bare list of targets: the preset scheme name,
  /// the group key upper-cased as the library looks it up (`"W4A16"`).
  public let preset: String?
  /// The group's value as written.
  public let raw: JSONValue

  /// Whether the group names a preset instead of spelling out its arguments.
  public var isPreset: Bool { preset != nil }

  /// Keys a scheme object may have (the library uses `extra="forbid"`).
  public static let knownKeys: [String] = [
    "targets", "weights", "input_activations", "output_activations", "format",
  ]

  /// Parses the value of `config_groups[name]`.
  ///
  /// - Parameter memoize: Passed to each ``NamePattern``.
  /// - Throws: ``QuantizationConfigError`` naming the group and key.
  public init(name: String, json: JSONValue, memoize: Bool = true)
    throws(QuantizationConfigError)
  {
    let path = ConfigPath(group: name)
    self.name = name
    raw = json
    switch json {
    case .array:
      let r = JSONReader(object: JSONObject([("targets", json)]), path: ConfigPath(group: name))
      // Reads the list with the usual element checks; errors name `targets`.
      let list = try r.strings("targets") ?? []
      targets = list
      preset = name.uppercased()
      weights = nil
      inputActivations = nil
      outputActivations = nil
      format = nil
    case .object(let obj):
      for key in obj.keys where !Self.knownKeys.contains(key) {
        throw path.error(
          .unknownKey,
          "unknown key \"\(key)\" (compressed-tensors forbids extra keys; known: "
            + Self.knownKeys.joined(separator: ", ") + ")")
      }
      let r = JSONReader(object: obj, path: path)
      guard obj["targets"] != nil, obj["targets"] != .null else {
        throw path.appending("targets").error(.missingKey, "targets is required")
      }
      targets = try r.strings("targets") ?? []
      preset = nil
      func args(_ key: String) throws(QuantizationConfigError) -> QuantizationArgs? {
        guard let v = obj[key], v != .null else { return nil }
        return try QuantizationArgs(json: v, path: path.appending(key))
      }
      weights = try args("weights")
      inputActivations = try args("input_activations")
      outputActivations = try args("output_activations")
      format = try r.string("format")
      if format == "mixed-precision" {
        throw path.appending("format").error(
          .invalidValue, "\"mixed-precision\" cannot be the format of a single scheme")
      }
      if let inputs = inputActivations {
        guard [.token, .tensor, .group, .tensorGroup, .attnHead].contains(inputs.strategy)
        else {
          throw path.appending("input_activations").error(
            .inconsistentArguments,
            "strategy \"\(inputs.strategy.rawValue)\" is not supported for activations")
        }
        if inputs.actorder != nil {
          throw path.appending("input_activations").error(
            .inconsistentArguments, "actorder cannot apply to input activations")
        }
      }
      if outputActivations?.actorder != nil {
        throw path.appending("output_activations").error(
          .inconsistentArguments, "actorder cannot apply to output activations")
      }
    default:
      throw path.wrongType(expected: "an object or a list of target strings", found: json)
    }
    var patterns: [NamePattern] = []
    patterns.reserveCapacity(targets.count)
    for (i, t) in targets.enumerated() {
      patterns.append(
        try NamePattern(t, memoize: memoize, path: path.appending("targets[\(i)]")))
    }
    targetPatterns = patterns
  }
}
