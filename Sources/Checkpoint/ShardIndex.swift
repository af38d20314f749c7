import SafeTensors
import StrictJSON

/// `model.safetensors.index.json`: which shard holds each tensor.
///
/// Format (FORMATS.md §1.5): `{"metadata": {...}, "weight_map": {tensor: shard}}`.
/// Hugging Face writes `metadata.total_size`, the sum of the tensors' data
/// sizes; DeepSeek writes an empty `metadata`. Other metadata keys are kept.
public struct ShardIndex: Sendable {
  /// The conventional file name.
  public static let fileName = "model.safetensors.index.json"

  /// The `metadata` object, every key kept.
  public var metadata: JSONObject
  /// The tensor → shard map in document order.
  public private(set) var weightMap: [(tensor: String, shard: String)]
  /// The `weight_map` as parsed (or built): its key index serves lookups.
  private var lookup: JSONObject

  /// Creates an index from a weight map.
  public init(weightMap: [(tensor: String, shard: String)], metadata: JSONObject = JSONObject()) {
    self.metadata = metadata
    self.weightMap = weightMap
    self.lookup = JSONObject(weightMap.map { ($0.tensor, JSONValue.string($0.shard)) })
  }

  private init(weightMap: [(tensor: String, shard: String)], parsed: JSONObject, metadata: JSONObject) {
    self.metadata = metadata
    self.weightMap = weightMap
    self.lookup = parsed
  }

  /// `metadata.total_size`, if present and an integer.
  public var totalSize: Int? {
    get { metadata["total_size"]?.intValue }
    set { metadata["total_size"] = newValue.map { .number(JSONNumber($0)) } }
  }

  /// The shard named for `tensor`.
  public func shard(for tensor: String) -> String? { lookup[tensor]?.stringValue }

  /// The distinct shard names in order of first appearance.
  public var shards: [String] {
    var seen = Set<String>()
    return weightMap.compactMap { seen.insert($0.shard).inserted ? $0.shard : nil }
  }

  /// Parses an index file's bytes.
  ///
  /// - Throws: ``CheckpointError`` (`invalid-index`) naming what is malformed.
  public static func parse(_ bytes: [UInt8], file: String = ShardIndex.fileName) throws(CheckpointError) -> ShardIndex {
    func bad(_ why: String) -> CheckpointError { CheckpointError("invalid-index", file: file, why) }
    let root: JSONValue
    do { root = try JSONParser.parse(bytes, duplicateKeys: .reject) } catch {
      if case .duplicateKey(let key, let path) = error.reason, path == ["weight_map"] {
        throw CheckpointError("invalid-index", file: file, tensor: key, "weight_map lists tensor \"\(key)\" twice")
      }
      throw bad("not valid JSON: \(error)")
    }
    guard let object = root.objectValue else { throw bad("top level is a JSON \(root.kindName), expected an object") }
    guard let mapValue = object["weight_map"] else { throw bad("missing \"weight_map\"") }
    guard let map = mapValue.objectValue else { throw bad("\"weight_map\" is a JSON \(mapValue.kindName), expected an object") }
    var weightMap: [(String, String)] = []
    weightMap.reserveCapacity(map.count)
    for (tensor, shard) in map.members {
      guard let s = shard.stringValue, !s.isEmpty else {
        throw CheckpointError("invalid-index", file: file, tensor: tensor, "weight_map entry for \"\(tensor)\" is not a file name")
      }
      guard !s.contains("/"), s != ".", s != ".." else {
        throw CheckpointError("invalid-index", file: file, tensor: tensor, "weight_map entry \"\(s)\" for \"\(tensor)\" is not a plain file name in the checkpoint folder")
      }
      weightMap.append((tensor, s))
    }
    var metadata = JSONObject()
    if let m = object["metadata"] {
      guard let mo = m.objectValue else { throw bad("\"metadata\" is a JSON \(m.kindName), expected an object") }
      metadata = mo
      if let ts = mo["total_size"], ts.numberValue?.int == nil {
        throw bad("\"metadata.total_size\" is \(JSONWriter.string(ts)), expected an integer")
      }
    }
    return ShardIndex(weightMap: weightMap, parsed: map, metadata: metadata)
  }

  /// The index as JSON, Hugging Face style (`metadata` first, `weight_map` sorted by tensor name).
  public func json() -> JSONValue {
    let sorted = weightMap.sorted { $0.tensor.utf8.lexicographicallyPrecedes($1.tensor.utf8) }
    var root = JSONObject()
    root["metadata"] = .object(metadata)
    root["weight_map"] = .object(JSONObject(sorted.map { ($0.tensor, JSONValue.string($0.shard)) }))
    return .object(root)
  }

  /// The bytes of the index file as transformers writes it (`indent=2`, trailing newline).
  public func fileBytes() -> [UInt8] {
    JSONWriter.bytes(json(), style: .pretty(indent: 2, asciiOnly: true)) + [0x0A]
  }
}
