import StrictJSON

/// compressed-tensors `QuantizationArgs`: how one tensor role (weights, input
/// or output activations, KV cache) of a module is quantized.
///
/// Parsing follows `compressed_tensors/quantization/quant_args.py`: the same
/// defaults, the same case-insensitive enum spellings and aliases, the same
/// strategy inference, and the same cross-field checks. Unknown keys are
/// rejected, as the library's `extra="forbid"` does, except the keys in
/// ``newerKeys``, which newer library versions write and which change the
/// numerics: they are accepted and exposed (``scaleDtype``, ``zpDtype``) so
/// callers can refuse what they do not support.
///
/// Beyond the library: `num_bits` must be 1...8 for `int` and 4 or 8 for
/// `float`, and `block_structure` entries must be positive.
public struct QuantizationArgs: Sendable, Equatable {
  /// `type`.
  public enum ValueType: String, Sendable, CaseIterable {
    case int
    case float
  }

  /// `strategy`: the scope one scale covers.
  public enum Strategy: String, Sendable, CaseIterable {
    case tensor
    case channel
    case group
    case block
    case token
    case tensorGroup = "tensor_group"
    /// Per attention head; newer library versions only.
    case attnHead = "attn_head"
  }

  /// `dynamic`: JSON `false`, `true` or `"local"`.
  public enum Dynamic: Sendable, Equatable {
    /// `false`: static, calibrated parameters.
    case off
    /// `true`: all parameters computed at run time.
    case on
    /// `"local"`: only local parameters computed at run time (NVFP4).
    case local
  }

  /// `actorder` (GPTQ activation ordering).
  public enum ActivationOrdering: String, Sendable, CaseIterable {
    /// `"group"` (alias `"dynamic"`, or JSON `true`): checkpoints carry `g_idx`.
    case group
    /// `"weight"` (alias `"static"`): affects calibration only.
    case weight
  }

  /// Keys compressed-tensors 0.12 defines.
  public static let knownKeys: [String] = [
    "num_bits", "type", "symmetric", "group_size", "strategy", "block_structure", "dynamic",
    "actorder", "observer", "observer_kwargs",
  ]

  /// Newer keys accepted and exposed although they change the numerics.
  public static let newerKeys: [String] = ["scale_dtype", "zp_dtype"]

  /// `num_bits` (default 8).
  public let numBits: Int
  /// `type` (default `int`).
  public let type: ValueType
  /// `symmetric` (default `true`).
  public let symmetric: Bool
  /// `group_size`; `nil` when absent or `null`.
  public let groupSize: Int?
  /// `strategy`, inferred when absent or `null`: `group_size > 0` ⇒ group,
  /// `group_size == -1` ⇒ channel, no `group_size` ⇒ tensor.
  public let strategy: Strategy
  /// `block_structure` `[rows, cols]` (the legacy `"RxC"` string is accepted too).
  public let blockStructure: [Int]?
  /// `dynamic` (default `false`).
  public let dynamic: Dynamic
  /// `actorder`; `nil` when absent, `null` or `false`.
  public let actorder: ActivationOrdering?
  /// `observer`: the written value; `"minmax"` when absent and not dynamic
  /// (compressed-tensors 0.12); `nil` for `dynamic: true`, which the library
  /// forces to no observer; `"minmax"` when absent and `dynamic: "local"`.
  public let observer: String?
  /// `observer_kwargs` (default `{}`).
  public let observerKwargs: JSONObject
  /// `scale_dtype` (newer key), for example `"torch.float8_e4m3fn"`; `nil` when
  /// absent or `null`.
  public let scaleDtype: String?
  /// `zp_dtype` (newer key); `nil` when absent or `null`.
  public let zpDtype: String?
  /// The object as written, for rewriting.
  public let raw: JSONObject

  /// Whether any of ``newerKeys`` is set to a non-null value.
  public var usesNewerKeys: Bool { scaleDtype != nil || zpDtype != nil }

  /// Parses an args object.
  ///
  /// - Parameters:
  ///   - json: The object.
  ///   - group: The config group it belongs to, for error messages.
  ///   - key: Its key (`"weights"`, `"input_activations"`, …), for error messages.
  /// - Throws: ``QuantizationConfigError`` naming the group and key.
  public init(json: JSONValue, group: String? = nil, key: String? = nil)
    throws(QuantizationConfigError)
  {
    var path = ConfigPath(group: group)
    if let key { path = path.appending(key) }
    try self.init(json: json, path: path)
  }

  init(json: JSONValue, path: ConfigPath) throws(QuantizationConfigError) {
    guard case .object(let obj) = json else {
      throw path.wrongType(expected: "an object", found: json)
    }
    raw = obj
    let allowed = Set(Self.knownKeys + Self.newerKeys)
    for key in obj.keys where !allowed.contains(key) {
      throw path.error(
        .unknownKey,
        "unknown key \"\(key)\" (compressed-tensors forbids extra keys; known: "
          + (Self.knownKeys + Self.newerKeys).joined(separator: ", ") + ")")
    }
    let r = JSONReader(object: obj, path: path)

    // num_bits and type
    let numBits = try r.int("num_bits", nullable: false) ?? 8
    let typeName = try r.string("type", nullable: false)?.lowercased() ?? "int"
    guard let type = ValueType(rawValue: typeName) else {
      throw path.appending("type").error(.invalidValue, "unknown type \"\(typeName)\" (int, float)")
    }
    switch type {
    case .int where !(1...8).contains(numBits):
      throw path.appending("num_bits").error(
        .invalidValue, "num_bits \(numBits) is outside 1...8 for type int")
    case .float where numBits != 4 && numBits != 8:
      throw path.appending("num_bits").error(
        .invalidValue, "num_bits \(numBits) is not 4 or 8 for type float")
    default: break
    }
    self.numBits = numBits
    self.type = type
    symmetric = try r.bool("symmetric", nullable: false) ?? true

    // group_size
    let groupSize = try r.int("group_size")
    if let groupSize, groupSize < -1 {
      throw path.appending("group_size").error(
        .invalidValue,
        "invalid group_size \(groupSize): use a positive value for strategy \"group\" "
          + "and -1 for \"channel\"")
    }
    self.groupSize = groupSize

    // block_structure
    var blockStructure: [Int]? = nil
    switch obj["block_structure"] {
    case nil, .null?: break
    case .string(let s)?:
      let parts = s.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
      guard parts.count == 2, let rows = parts[0], let cols = parts[1] else {
        throw path.appending("block_structure").error(
          .invalidValue, "block_structure \"\(s)\" is not \"ROWSxCOLS\"")
      }
      blockStructure = [rows, cols]
    case .array(let items)?:
      let ints = items.compactMap(\.intValue)
      guard items.count == 2, ints.count == 2 else {
        throw path.appending("block_structure").error(
          .invalidValue, "block_structure must be a list of two integers [rows, cols]")
      }
      blockStructure = ints
    case let other?:
      throw path.appending("block_structure").wrongType(
        expected: "a list of two integers", found: other)
    }
    if let blockStructure, blockStructure.contains(where: { $0 <= 0 }) {
      throw path.appending("block_structure").error(
        .invalidValue, "block_structure \(blockStructure) must be positive")
    }
    self.blockStructure = blockStructure

    // strategy
    var strategy: Strategy
    if let name = try r.string("strategy") {
      guard let s = Strategy(rawValue: name.lowercased()) else {
        throw path.appending("strategy").error(
          .invalidValue,
          "unknown strategy \"\(name)\" ("
            + Strategy.allCases.map(\.rawValue).joined(separator: ", ") + ")")
      }
      strategy = s
    } else if let groupSize {
      if groupSize > 0 {
        strategy = .group
      } else if groupSize == -1 {
        strategy = .channel
      } else {
        throw path.appending("group_size").error(
          .invalidValue,
          "invalid group_size \(groupSize): use a positive value for strategy \"group\" "
            + "and -1 for \"channel\"")
      }
    } else {
      strategy = .tensor
    }

    // dynamic
    let dynamic: Dynamic
    switch obj["dynamic"] {
    case nil: dynamic = .off
    case .bool(let b)?: dynamic = b ? .on : .off
    case .string(let s)? where s.lowercased() == "local": dynamic = .local
    case .string(let s)?:
      throw path.appending("dynamic").error(
        .invalidValue, "dynamic \"\(s)\" is not true, false or \"local\"")
    case let other?:
      throw path.appending("dynamic").wrongType(
        expected: "a boolean or \"local\"", found: other)
    }
    self.dynamic = dynamic

    // actorder
    var actorder: ActivationOrdering? = nil
    switch obj["actorder"] {
    case nil, .null?, .bool(false)?: break
    case .bool(true)?: actorder = .group
    case .string(let s)?:
      switch s.lowercased() {
      case "group", "dynamic": actorder = .group
      case "weight", "static": actorder = .weight
      default:
        throw path.appending("actorder").error(
          .invalidValue, "unknown actorder \"\(s)\" (group, weight, dynamic, static)")
      }
    case let other?:
      throw path.appending("actorder").wrongType(
        expected: "a string, boolean or null", found: other)
    }
    self.actorder = actorder

    var observer = try r.string("observer")
    switch obj["observer_kwargs"] {
    case nil: observerKwargs = JSONObject()
    case .object(let o)?: observerKwargs = o
    case let other?:
      throw path.appending("observer_kwargs").wrongType(expected: "an object", found: other)
    }
    scaleDtype = try r.string("scale_dtype")
    zpDtype = try r.string("zp_dtype")

    // Cross-field checks (`validate_model_after`).
    func inconsistent(_ what: String) -> QuantizationConfigError {
      path.error(.inconsistentArguments, what)
    }
    if strategy == .token && dynamic == .off {
      throw inconsistent("strategy \"token\" requires dynamic quantization")
    }
    if strategy == .group || strategy == .tensorGroup {
      guard let groupSize, groupSize > 0 else {
        throw inconsistent(
          "strategy \"\(strategy.rawValue)\" requires a positive group_size")
      }
    }
    if let groupSize, groupSize > 0, strategy != .group, strategy != .tensorGroup {
      throw inconsistent(
        "group_size \(groupSize) requires strategy \"group\" or \"tensor_group\", "
          + "not \"\(strategy.rawValue)\"")
    }
    if strategy == .block && blockStructure == nil {
      throw inconsistent("strategy \"block\" requires block_structure")
    }
    if blockStructure != nil && strategy != .block {
      throw inconsistent(
        "block_structure requires strategy \"block\", not \"\(strategy.rawValue)\"")
    }
    if actorder == .group, strategy != .group, strategy != .tensorGroup {
      throw inconsistent(
        "actorder \"group\" requires strategy \"group\" or \"tensor_group\", "
          + "not \"\(strategy.rawValue)\"")
    }
    switch dynamic {
    case .on, .local:
      guard [.token, .tensor, .tensorGroup, .group].contains(strategy) else {
        throw inconsistent(
          "strategy \"\(strategy.rawValue)\" cannot be used for dynamic quantization")
      }
      if dynamic == .local && strategy != .tensorGroup {
        throw inconsistent("dynamic \"local\" requires strategy \"tensor_group\"")
      }
      if dynamic == .on {
        observer = nil
      } else if observer == nil {
        observer = "minmax"
      }
    case .off:
      if observer == nil { observer = "minmax" }
    }
    self.strategy = strategy
    self.observer = observer
  }
}

/// Typed access to an object's members with located errors. Absent reads as
/// `nil`; so does `null` unless `nullable` is `false` (a non-optional field).
struct JSONReader {
  let object: JSONObject
  let path: ConfigPath

  func string(_ key: String, nullable: Bool = true) throws(QuantizationConfigError) -> String? {
    switch object[key] {
    case nil: return nil
    case .null? where nullable: return nil
    case .string(let s)?: return s
    case let other?: throw path.appending(key).wrongType(expected: "a string", found: other)
    }
  }

  func bool(_ key: String, nullable: Bool = true) throws(QuantizationConfigError) -> Bool? {
    switch object[key] {
    case nil: return nil
    case .null? where nullable: return nil
    case .bool(let b)?: return b
    case let other?: throw path.appending(key).wrongType(expected: "a boolean", found: other)
    }
  }

  func int(_ key: String, nullable: Bool = true) throws(QuantizationConfigError) -> Int? {
    switch object[key] {
    case nil: return nil
    case .null? where nullable: return nil
    case .number(let n)?:
      guard let i = n.int else {
        throw path.appending(key).error(.invalidValue, "\(n.text) is not an integer")
      }
      return i
    case let other?: throw path.appending(key).wrongType(expected: "an integer", found: other)
    }
  }

  func strings(_ key: String) throws(QuantizationConfigError) -> [String]? {
    switch object[key] {
    case nil, .null?: return nil
    case .array(let items)?:
      var out: [String] = []
      out.reserveCapacity(items.count)
      for (i, item) in items.enumerated() {
        guard case .string(let s) = item else {
          throw path.appending("\(key)[\(i)]").wrongType(expected: "a string", found: item)
        }
        out.append(s)
      }
      return out
    case let other?:
      throw path.appending(key).wrongType(expected: "a list of strings", found: other)
    }
  }
}
