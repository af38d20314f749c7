import Checkpoint
import SafeTensors
import StrictJSON
import Verification

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The journal `ckpt convert` keeps in OUT: what is being converted, and each
/// finished shard with its SHA-256. It is rewritten atomically after every
/// shard, so after SIGINT or SIGKILL it lists only shards that are complete.
public struct ConvertJournal: Sendable {
  public static let fileName = ".ckpt-convert-journal.json"

  /// Identifies the conversion: input path, target, block size, cast-all.
  public var settings: JSONObject
  /// Finished shards: name → (sha256, bytes).
  public var shards: [(name: String, sha256: String, bytes: Int)]

  public init(settings: JSONObject, shards: [(name: String, sha256: String, bytes: Int)] = []) {
    self.settings = settings
    self.shards = shards
  }

  public func json() -> JSONValue {
    var root = JSONObject()
    root["version"] = .number(JSONNumber(1))
    root["settings"] = .object(settings)
    root["shards"] = .array(shards.map { s in
      var o = JSONObject()
      o["name"] = .string(s.name)
      o["sha256"] = .string(s.sha256)
      o["bytes"] = .number(JSONNumber(s.bytes))
      return .object(o)
    })
    return .object(root)
  }

  /// Reads a journal; `nil` when there is none.
  public static func read(in directory: String) throws(ConversionError) -> ConvertJournal? {
    let path = directory + "/" + fileName
    guard FileSystem.kind(of: path).exists else { return nil }
    do {
      let bytes = try FileSystem.readAll(path)
      let value = try JSONParser.parse(bytes)
      guard let root = value.objectValue, let settings = root["settings"]?.objectValue, let list = root["shards"]?.arrayValue else {
        throw ConversionError("bad-journal", file: path, "not a convert journal")
      }
      var shards: [(name: String, sha256: String, bytes: Int)] = []
      for entry in list {
        guard let o = entry.objectValue, let name = o["name"]?.stringValue, let digest = o["sha256"]?.stringValue,
          let bytes = o["bytes"]?.intValue
        else { throw ConversionError("bad-journal", file: path, "malformed shard entry") }
        shards.append((name, digest, bytes))
      }
      return ConvertJournal(settings: settings, shards: shards)
    } catch let e as ConversionError {
      throw e
    } catch {
      throw ConversionError("bad-journal", file: path, "\(error)")
    }
  }

  func write(in directory: String) throws(ConversionError) {
    let bytes = Array(JSONWriter.string(json(), style: .pretty(indent: 2, asciiOnly: false)).utf8) + [10]
    do { try FileSystem.writeAtomically(bytes, to: directory + "/" + Self.fileName) } catch {
      throw ConversionError("write-failed", file: Self.fileName, "\(error)")
    }
  }
}

/// The result of a whole conversion.
public struct ConvertReport: Sendable {
  public let input: String
  public let output: String
  public let target: ConvertTarget
  public let shards: [ShardResult]
  public let bytesIn: Int
  public let bytesOut: Int
  public let seconds: Double

  public var tensors: [TensorExactness] { shards.flatMap(\.tensors) }
  public var lossy: [TensorExactness] { tensors.filter { !$0.isExact } }
}

/// Runs a planned conversion into a folder: journal, resume, atomic outputs.
public enum ConvertJob {
  /// Checks that OUT is usable: not inside IN, and either new, empty, or a
  /// previous run of the same conversion (its journal's settings match).
  public static func prepareOutput(
    input: String, output: String, settings: JSONObject
  ) throws(ConversionError) -> ConvertJournal {
    let inReal = realPath(input) ?? input
    let (parent, leaf) = FileSystem.split(output)
    let outReal = realPath(output) ?? (realPath(parent).map { $0 + "/" + leaf } ?? output)
    if outReal == inReal || outReal.hasPrefix(inReal + "/") {
      throw ConversionError("output-inside-input", file: output, "OUT must not be IN or inside it (\(inReal))")
    }
    let kind = FileSystem.kind(of: output)
    if kind.exists && !kind.isDirectory {
      throw ConversionError("output-not-directory", file: output, "exists and is not a folder")
    }
    if !kind.exists {
      do { try FileSystem.createDirectory(output) } catch { throw ConversionError("write-failed", file: output, "\(error)") }
      return ConvertJournal(settings: settings)
    }
    if let journal = try ConvertJournal.read(in: output) {
      guard journal.settings == settings else {
        throw ConversionError(
          "journal-mismatch", file: output + "/" + ConvertJournal.fileName,
          "OUT holds a different conversion (\(JSONWriter.string(.object(journal.settings), style: .compact))); use another OUT or delete it")
      }
      return journal
    }
    let entries: [String]
    do { entries = try FileSystem.listDirectory(output) } catch { throw ConversionError("unreadable-output", file: output, "\(error)") }
    let leftovers = entries.filter { !FileSystem.isTemporaryName($0) }
    if !leftovers.isEmpty {
      throw ConversionError("output-not-empty", file: output, "holds \(leftovers.count) file(s) and no convert journal; refusing to overwrite")
    }
    return ConvertJournal(settings: settings)
  }

  /// Converts every shard of `plan` not yet verified in the journal, then
  /// writes the other files, the config and the index (each atomically).
  public static func run(
    _ plan: ConversionPlan, checkpoint: Checkpoint, output: String, journal start: ConvertJournal, options: ConvertOptions,
    shardSubset: Set<String>? = nil, finalize: Bool = true
  ) throws(ConversionError) -> ConvertReport {
    let t0 = monotonicSeconds()
    var journal = start
    removeTemporaries(in: output)
    var results: [ShardResult] = []
    var done = Set<String>()
    // Resume: a journal entry counts only if the file is there and hashes to it.
    var verified: [(name: String, sha256: String, bytes: Int)] = []
    for entry in journal.shards {
      let path = output + "/" + entry.name
      if FileSystem.fileSize(path) == entry.bytes, (try? Hashing.sha256(file: path)) == entry.sha256 {
        verified.append(entry)
        done.insert(entry.name)
      }
    }
    journal.shards = verified
    let todo = plan.shards.filter { !done.contains($0.output) && (shardSubset?.contains($0.input) ?? true) }
    let needed = todo.reduce(0) { $0 + $1.outputBytes } + (finalize ? 1 << 20 : 0)
    if let free = freeBytes(output), free < needed {
      throw ConversionError(
        "no-space", file: output, "needs \(needed) bytes for \(todo.count) shard(s), \(free) bytes free")
    }
    for shard in plan.shards where done.contains(shard.output) && (shardSubset?.contains(shard.input) ?? true) {
      let e = journal.shards.first { $0.name == shard.output }!
      results.append(ShardResult(shard: shard.output, sha256: e.sha256, bytes: e.bytes, skipped: true, tensors: []))
      options.progress?(shard.inputBytes)
    }
    for shard in todo {
      let r = try Converter.convert(shard, plan: plan, input: checkpoint.root, output: output, options: options)
      journal.shards.append((r.shard, r.sha256 ?? "", r.bytes))
      try journal.write(in: output)
      results.append(r)
      options.progress?(shard.inputBytes)
    }
    if finalize { try writeMetadata(plan, checkpoint: checkpoint, output: output, journal: journal) }
    let bytesIn = plan.shards.filter { shardSubset?.contains($0.input) ?? true }.reduce(0) { $0 + $1.inputBytes }
    return ConvertReport(
      input: checkpoint.path, output: output, target: plan.target, shards: results, bytesIn: bytesIn,
      bytesOut: results.reduce(0) { $0 + $1.bytes }, seconds: monotonicSeconds() - t0)
  }

  /// Checks every planned shard is in the journal and verifies, then writes
  /// other files, config and index.
  public static func writeMetadata(
    _ plan: ConversionPlan, checkpoint: Checkpoint, output: String, journal: ConvertJournal
  ) throws(ConversionError) {
    let finished = Set(journal.shards.map(\.name))
    let missing = plan.shards.map(\.output).filter { !finished.contains($0) }
    if !missing.isEmpty {
      throw ConversionError("incomplete", file: output, "\(missing.count) shard(s) not converted yet: \(missing.prefix(5).joined(separator: ", "))")
    }
    for name in plan.otherFiles {
      if name.hasSuffix(".sha256") {
        // The input's checksums describe the input shards: write the outputs' instead.
        let lines = plan.shards.compactMap { s in journal.shards.first { $0.name == s.output }.map { "\($0.sha256)  \(s.output)\n" } }
        do { try FileSystem.writeAtomically(Array(lines.joined().utf8), to: output + "/" + name) } catch {
          throw ConversionError("write-failed", file: name, "\(error)")
        }
        continue
      }
      do {
        let bytes = try FileSystem.readAll(checkpoint.pathOf(name))
        let target = output + "/" + name
        let dir = FileSystem.split(target).directory
        if !FileSystem.kind(of: dir).exists { try FileSystem.createDirectory(dir) }
        try FileSystem.writeAtomically(bytes, to: target)
      } catch {
        throw ConversionError("copy-failed", file: name, "\(error)")
      }
    }
    if let config = plan.config {
      let text = JSONWriter.string(.object(config), style: .pretty(indent: 2, asciiOnly: false)) + "\n"
      do { try FileSystem.writeAtomically(Array(text.utf8), to: output + "/" + Checkpoint.configFileName) } catch {
        throw ConversionError("write-failed", file: Checkpoint.configFileName, "\(error)")
      }
    }
    if let index = plan.index {
      let text = JSONWriter.string(index.json(), style: .pretty(indent: 2, asciiOnly: false)) + "\n"
      do { try FileSystem.writeAtomically(Array(text.utf8), to: output + "/" + ShardIndex.fileName) } catch {
        throw ConversionError("write-failed", file: ShardIndex.fileName, "\(error)")
      }
    }
  }

  /// Removes temporary files a killed run left behind (never finished outputs).
  static func removeTemporaries(in directory: String) {
    guard let entries = try? FileSystem.listDirectory(directory) else { return }
    for e in entries where FileSystem.isTemporaryName(e) { unlink(directory + "/" + e) }
  }

  /// The canonical absolute path (`realpath(3)`), or `nil` when it does not exist.
  public static func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
  }

  /// Free bytes for an unprivileged writer on the file system holding `path`.
  static func freeBytes(_ path: String) -> Int? {
    var s = statvfs()
    guard statvfs(path, &s) == 0 else { return nil }
    return Int(s.f_bavail) * Int(s.f_frsize)
  }

  static func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
  }
}
