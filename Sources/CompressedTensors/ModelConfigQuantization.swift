import StrictJSON

/// Finds and rewrites `quantization_config` inside a model's `config.json`.
///
/// Kimi K2 keeps it at the top level; K2.5 and other multimodal layouts keep
/// it under `text_config` (FORMATS.md §8, pitfall 2). Look in both places.
public enum ModelConfigQuantization {
  /// The key holding the quantization config.
  public static let key = "quantization_config"

  /// Where `quantization_config` can sit, in the order ``locate(in:)`` tries.
  public static let candidatePaths: [[String]] = [
    ["quantization_config"],
    ["text_config", "quantization_config"],
  ]

  /// The first `quantization_config` found, top level first, then under
  /// `text_config`. A `null` value is reported too: loaders that test for the
  /// key's presence trip over it, so callers should remove it.
  public static func locate(in config: JSONObject) -> (path: [String], json: JSONValue)? {
    locateAll(in: config).first
  }

  /// Every `quantization_config` present, in ``candidatePaths`` order; more
  /// than one means the file is ambiguous.
  public static func locateAll(in config: JSONObject) -> [(path: [String], json: JSONValue)] {
    candidatePaths.compactMap { path in value(in: config, at: path).map { (path, $0) } }
  }

  /// The value at `path` (object keys from the root), if every step exists.
  public static func value(in config: JSONObject, at path: [String]) -> JSONValue? {
    guard let first = path.first, let v = config[first] else { return nil }
    if path.count == 1 { return v }
    guard case .object(let inner) = v else { return nil }
    return value(in: inner, at: Array(path.dropFirst()))
  }

  /// `config` with the value at `path` replaced, or removed when `value` is
  /// `nil`. Every other key keeps its value and position; a replaced key keeps
  /// its position, a new one is appended to its object.
  ///
  /// Removing at a path that does not exist returns `config` unchanged. Setting
  /// below a missing object creates it (appended); setting below a non-object
  /// replaces nothing and returns `config` unchanged.
  public static func replacing(
    in config: JSONObject, at path: [String], with value: JSONValue?
  ) -> JSONObject {
    guard let first = path.first else { return config }
    var out = config
    if path.count == 1 {
      out[first] = value
      return out
    }
    let inner: JSONObject
    switch config[first] {
    case .object(let o)?: inner = o
    case nil:
      guard value != nil else { return config }
      inner = JSONObject()
    default:
      return config
    }
    out[first] = .object(replacing(in: inner, at: Array(path.dropFirst()), with: value))
    return out
  }
}
