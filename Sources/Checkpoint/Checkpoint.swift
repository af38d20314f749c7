import CompressedTensors
import SafeTensors
import StrictJSON

/// A checkpoint on disk: a folder of safetensors shards with `config.json`
/// and (usually) `model.safetensors.index.json`, or a single `.safetensors` file.
///
/// A shard may be stored as a `ckpt compress` archive, `NAME.safetensors.zst`:
/// it keeps its name `NAME.safetensors` here (as the index names it) and
/// ``pathOf(_:)`` gives the archive's path, which the readers open as the
/// shard (``SafeTensors/VirtualFiles``).
///
/// Loading reads only the small JSON files and the directory listing; shard
/// headers are read by whoever needs them. Problems with `config.json` or the
/// index are collected in ``loadProblems`` rather than thrown, so a validator
/// can report them together with everything else.
public struct Checkpoint: Sendable {
  /// The path as given.
  public let path: String
  /// The folder holding the shards.
  public let root: String
  /// Whether the checkpoint is a single file rather than a folder.
  public let isSingleFile: Bool
  /// The parsed `config.json`, if present and valid.
  public let config: JSONObject?
  /// The parsed index, if present and valid.
  public let index: ShardIndex?
  /// Shard file names relative to ``root``: those named by the index, or, with
  /// no index, every `*.safetensors` file in the folder (sorted).
  public let shards: [String]
  /// `*.safetensors` files in the folder that the index does not name.
  public let unindexedShards: [String]
  /// Every other regular file in the folder (tokenizer, templates, code, …),
  /// excluding `config.json`, the index and temporary files.
  public let otherFiles: [String]
  /// Problems found while loading `config.json` and the index.
  public let loadProblems: [Problem]
  /// Shards (by their `.safetensors` name) stored as `NAME.safetensors.zst` archives.
  public let archivedShards: Set<String>

  /// The name of the model config file.
  public static let configFileName = "config.json"

  /// Loads the checkpoint at `path` (a folder or a `.safetensors` file).
  ///
  /// - Throws: ``CheckpointError`` (`not-found`) when nothing usable is at `path`.
  public static func load(_ path: String) throws(CheckpointError) -> Checkpoint {
    let (exists, isDirectory) = FileSystem.kind(of: path)
    guard exists else { throw CheckpointError("not-found", file: path, "no such file or folder") }
    if !isDirectory {
      let archived = path.hasSuffix(VirtualFiles.archiveSuffix)
      guard path.hasSuffix(".safetensors") || archived else {
        throw CheckpointError("not-found", file: path, "not a folder, a .safetensors file or a \(VirtualFiles.archiveSuffix) archive")
      }
      let (dir, file) = FileSystem.split(path)
      let name = archived ? String(file.dropLast(archiveExtension.count)) : file
      return Checkpoint(
        path: path, root: dir.isEmpty ? "." : dir, isSingleFile: true, config: nil, index: nil,
        shards: [name], unindexedShards: [], otherFiles: [], loadProblems: [], archivedShards: archived ? [name] : [])
    }
    let root = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
    let names: [String]
    do { names = try FileSystem.listDirectory(root) } catch {
      throw CheckpointError("io-error", file: root, error.message)
    }
    var problems: [Problem] = []
    var config: JSONObject? = nil
    if names.contains(configFileName) {
      do {
        let bytes = try FileSystem.readAll(root + "/" + configFileName)
        let value = try JSONParser.parse(bytes, duplicateKeys: .lastWins)
        if let o = value.objectValue {
          config = o
        } else {
          problems.append(Problem("invalid-config", file: configFileName, "top level is a JSON \(value.kindName), expected an object"))
        }
      } catch let e as SafeTensorsError {
        problems.append(Problem("invalid-config", file: configFileName, e.message))
      } catch {
        problems.append(Problem("invalid-config", file: configFileName, "not valid JSON: \(error)"))
      }
    }
    var index: ShardIndex? = nil
    if names.contains(ShardIndex.fileName) {
      do {
        let bytes = try FileSystem.readAll(root + "/" + ShardIndex.fileName)
        index = try ShardIndex.parse(bytes)
      } catch let e as SafeTensorsError {
        problems.append(Problem("invalid-index", file: ShardIndex.fileName, e.message))
      } catch let e as CheckpointError {
        problems.append(contentsOf: e.problems)
      } catch {
        problems.append(Problem("invalid-index", file: ShardIndex.fileName, "\(error)"))
      }
    }
    var regular: [String] = []
    for n in names where !FileSystem.isTemporaryName(n) && !FileSystem.kind(of: root + "/" + n).isDirectory {
      regular.append(n)
    }
    // A shard may be in the folder as itself or as its archive (never both).
    let plain = Set(regular.filter { $0.hasSuffix(".safetensors") })
    var archived: Set<String> = []
    for n in regular where n.hasSuffix(VirtualFiles.archiveSuffix) {
      let shard = String(n.dropLast(archiveExtension.count))
      if plain.contains(shard) {
        problems.append(Problem("ambiguous-shard", file: n, "both \(shard) and its archive \(n) are in the folder; remove one"))
      } else {
        archived.insert(shard)
      }
    }
    let safetensors = (plain.union(archived)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    var shards: [String]
    var unindexed: [String] = []
    if let index {
      shards = index.shards.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      let named = Set(shards)
      unindexed = safetensors.filter { !named.contains($0) }
    } else {
      shards = safetensors
      if names.contains(ShardIndex.fileName) {
        // The index exists but is broken: still look at every shard.
        unindexed = []
      } else if safetensors.count > 1 {
        problems.append(Problem("missing-index", file: ShardIndex.fileName, "\(safetensors.count) shards but no \(ShardIndex.fileName)", severity: .warning))
      }
    }
    if shards.isEmpty && index == nil {
      problems.append(Problem("no-shards", file: nil, "no .safetensors files in \(root)"))
    }
    let skip = Set(shards + unindexed + archived.map { $0 + archiveExtension } + [configFileName, ShardIndex.fileName])
    let others = regular.filter { !skip.contains($0) }
    return Checkpoint(
      path: path, root: root, isSingleFile: false, config: config, index: index, shards: shards,
      unindexedShards: unindexed, otherFiles: others, loadProblems: problems, archivedShards: archived)
  }

  /// What an archive adds to its shard's name.
  static var archiveExtension: String { String(VirtualFiles.archiveSuffix.dropFirst(".safetensors".count)) }

  /// The full path of a file in the checkpoint; for an archived shard, its archive's.
  public func pathOf(_ name: String) -> String {
    archivedShards.contains(name) ? root + "/" + name + Self.archiveExtension : root + "/" + name
  }

  /// The quantization config (top level or under `text_config`) and where it sits.
  ///
  /// - Returns: `nil` when the config has none.
  /// - Throws: ``CheckpointError`` (`invalid-config`) when it is present but
  ///   not a valid compressed-tensors config (other methods, e.g. DeepSeek's
  ///   `fp8`, are returned as ``QuantizationSource/other(path:json:)``).
  public func quantization() throws(CheckpointError) -> QuantizationSource? {
    guard let config, let (path, json) = ModelConfigQuantization.locate(in: config) else { return nil }
    if let method = json["quant_method"]?.stringValue, method != "compressed-tensors" {
      return .other(path: path, json: json)
    }
    do {
      return .compressedTensors(path: path, config: try QuantizationConfig(json: json))
    } catch {
      throw CheckpointError("invalid-config", file: Self.configFileName, "\(path.joined(separator: ".")): \(error)")
    }
  }

  /// The model's text config: `text_config` when present (K2.5 layout), else the root.
  public var textConfig: JSONObject? {
    guard let config else { return nil }
    return config["text_config"]?.objectValue ?? config
  }
}

/// Where a checkpoint's quantization config came from, and what it is.
public enum QuantizationSource: Sendable {
  /// A compressed-tensors config at `path` (e.g. `["quantization_config"]`).
  case compressedTensors(path: [String], config: QuantizationConfig)
  /// Another method (e.g. DeepSeek `fp8`), kept as JSON.
  case other(path: [String], json: JSONValue)
}
