import Checkpoint
import Dispatch
import SafeTensors
import Synchronization
import StrictJSON
import Verification

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One process's share of a conversion spread over several (`--shard-index I
/// --shard-count N`, a Slurm job array, a Kubernetes Indexed Job): the planned
/// shards whose position `k` in the plan (sorted by name) has `k % count == index`.
public struct ShardPart: Sendable, Equatable {
  public let index: Int
  public let count: Int
  /// Where `index` came from: `--shard-index`, `SLURM_ARRAY_TASK_ID` or `JOB_COMPLETION_INDEX`.
  public let source: String

  public init(index: Int, count: Int, source: String) {
    self.index = index
    self.count = count
    self.source = source
  }

  /// Whether the shard at plan position `ordinal` belongs to this part.
  public func contains(_ ordinal: Int) -> Bool { ordinal % count == index }

  /// This part's journal file in OUT.
  public var journalName: String { ".ckpt-convert-journal.part-\(index)-of-\(count).json" }

  /// Reads the part from flags, else from the environment of a Slurm job array
  /// (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`) or
  /// a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with `--shard-count`);
  /// `nil` when none applies. Throws a message for inconsistent values.
  public static func resolve(index: Int?, count: Int?, environment: [String: String]) throws(ConversionError) -> ShardPart? {
    func number(_ name: String) throws(ConversionError) -> Int? {
      guard let v = environment[name] else { return nil }
      guard let n = Int(v.trimmingCharacters(in: " ")), n >= 0 else {
        throw ConversionError("bad-shard-part", "\(name)=\(v) is not a non-negative integer")
      }
      return n
    }
    var part: ShardPart? = nil
    if let index {
      guard let count else { throw ConversionError("bad-shard-part", "--shard-index needs --shard-count") }
      part = ShardPart(index: index, count: count, source: "--shard-index")
    } else if let id = try number("SLURM_ARRAY_TASK_ID") {
      let min = try number("SLURM_ARRAY_TASK_MIN") ?? 0
      let envCount = try number("SLURM_ARRAY_TASK_COUNT")
      guard let n = count ?? envCount else {
        throw ConversionError("bad-shard-part", "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor --shard-count")
      }
      guard id >= min else { throw ConversionError("bad-shard-part", "SLURM_ARRAY_TASK_ID \(id) is below SLURM_ARRAY_TASK_MIN \(min)") }
      part = ShardPart(index: id - min, count: n, source: "SLURM_ARRAY_TASK_ID")
    } else if let id = try number("JOB_COMPLETION_INDEX") {
      guard let count else {
        throw ConversionError("bad-shard-part", "JOB_COMPLETION_INDEX is set; give --shard-count (the Job's completions)")
      }
      part = ShardPart(index: id, count: count, source: "JOB_COMPLETION_INDEX")
    } else if count != nil {
      throw ConversionError("bad-shard-part", "--shard-count needs --shard-index (or SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX)")
    }
    if let p = part {
      guard p.count >= 1 else { throw ConversionError("bad-shard-part", "the shard count must be at least 1") }
      guard p.index < p.count else {
        throw ConversionError("bad-shard-part", "part index \(p.index) (from \(p.source)) is not below the count \(p.count)")
      }
    }
    return part
  }
}

extension String {
  fileprivate func trimmingCharacters(in c: Character) -> String {
    var s = Substring(self)
    while s.first == c { s.removeFirst() }
    while s.last == c { s.removeLast() }
    return String(s)
  }
}

extension ConversionPlan {
  /// The plan's shards that belong to `part` (all when `nil`), in plan order.
  public func shards(of part: ShardPart?) -> [ShardPlan] {
    shards.enumerated().filter { part?.contains($0.offset) ?? true }.map(\.element)
  }
}

/// The journal `ckpt convert` keeps in OUT: what is being converted, and each
/// finished shard with its SHA-256. It is rewritten atomically after every
/// shard, so after SIGINT or SIGKILL it lists only shards that are complete.
/// A part of a spread conversion keeps its own (``ShardPart/journalName``), so
/// processes never write the same file; `--finalize` merges them.
public struct ConvertJournal: Sendable {
  public static let fileName = ".ckpt-convert-journal.json"
  static let prefix = ".ckpt-convert-journal"

  /// Identifies the conversion: input path, target, block size, cast-all.
  public var settings: JSONObject
  /// Finished shards: name → (sha256, bytes).
  public var shards: [(name: String, sha256: String, bytes: Int)]

  public init(settings: JSONObject, shards: [(name: String, sha256: String, bytes: Int)] = []) {
    self.settings = settings
    self.shards = shards
  }

  /// Whether `name` is a journal file (the main one or a part's).
  public static func isJournalName(_ name: String) -> Bool { name.hasPrefix(prefix) && name.hasSuffix(".json") }

  public func json() -> JSONValue {
    var root = JSONObject()
    root["version"] = .number(JSONNumber(1))
    root["settings"] = .object(settings)
    root["shards"] = .array(shards.sorted { $0.name < $1.name }.map { s in
      var o = JSONObject()
      o["name"] = .string(s.name)
      o["sha256"] = .string(s.sha256)
      o["bytes"] = .number(JSONNumber(s.bytes))
      return .object(o)
    })
    return .object(root)
  }

  /// Reads one journal file; `nil` when there is none.
  public static func read(in directory: String, name: String = fileName) throws(ConversionError) -> ConvertJournal? {
    let path = directory + "/" + name
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

  /// Every journal in `directory` (main and parts), by file name.
  public static func readAll(in directory: String) throws(ConversionError) -> [(file: String, journal: ConvertJournal)] {
    let entries: [String]
    do { entries = try FileSystem.listDirectory(directory) } catch { throw ConversionError("unreadable-output", file: directory, "\(error)") }
    var out: [(file: String, journal: ConvertJournal)] = []
    for name in entries.sorted() where isJournalName(name) && !FileSystem.isTemporaryName(name) {
      if let j = try read(in: directory, name: name) { out.append((name, j)) }
    }
    return out
  }

  func write(in directory: String, name: String = fileName) throws(ConversionError) {
    let bytes = Array(JSONWriter.string(json(), style: .pretty(indent: 2, asciiOnly: false)).utf8) + [10]
    do { try FileSystem.writeAtomically(bytes, to: directory + "/" + name) } catch {
      throw ConversionError("write-failed", file: name, "\(error)")
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
  /// The part this process converted, or `nil` for the whole checkpoint.
  public let part: ShardPart?

  public var tensors: [TensorExactness] { shards.flatMap(\.tensors) }
  public var lossy: [TensorExactness] { tensors.filter { !$0.isExact } }
}

/// Runs a planned conversion into a folder: journal, resume, atomic outputs,
/// parts of a conversion spread over processes, and the finalize step.
public enum ConvertJob {
  /// Checks that OUT is usable: not inside IN, and either new, empty, or a
  /// previous (or concurrent) run of the same conversion (every journal's
  /// settings match). Writes this process's journal at once, so that other
  /// parts starting at the same time see a journal, not a stray file.
  ///
  /// - Returns: This process's journal, holding the entries of every journal
  ///   in OUT (entries are verified again by ``run(_:checkpoint:output:journal:options:part:)``).
  public static func prepareOutput(
    input: String, output: String, settings: JSONObject, part: ShardPart? = nil
  ) throws(ConversionError) -> ConvertJournal {
    let inReal = resolvedPath(input)
    let outReal = resolvedPath(output)
    if outReal == inReal || outReal.hasPrefix(inReal + "/") {
      throw ConversionError("output-inside-input", file: output, "OUT must not be IN or inside it (\(inReal))")
    }
    let kind = FileSystem.kind(of: output)
    if kind.exists && !kind.isDirectory {
      throw ConversionError("output-not-directory", file: output, "exists and is not a folder")
    }
    if !kind.exists {
      // mkdir tolerates a concurrent part creating it first.
      do { try FileSystem.createDirectory(output) } catch { throw ConversionError("write-failed", file: output, "\(error)") }
    }
    let journals = try ConvertJournal.readAll(in: output)
    for (file, j) in journals where j.settings != settings {
      throw ConversionError(
        "journal-mismatch", file: output + "/" + file,
        "OUT holds a different conversion (\(JSONWriter.string(.object(j.settings), style: .compact))); use another OUT or delete it")
    }
    if journals.isEmpty {
      let entries: [String]
      do { entries = try FileSystem.listDirectory(output) } catch { throw ConversionError("unreadable-output", file: output, "\(error)") }
      let leftovers = entries.filter { !FileSystem.isTemporaryName($0) }
      if !leftovers.isEmpty {
        throw ConversionError("output-not-empty", file: output, "holds \(leftovers.count) file(s) and no convert journal; refusing to overwrite")
      }
    }
    var merged = ConvertJournal(settings: settings)
    var seen = Set<String>()
    for (_, j) in journals {
      for e in j.shards where seen.insert(e.name).inserted { merged.shards.append(e) }
    }
    let own = part?.journalName ?? ConvertJournal.fileName
    let mine = journals.first { $0.file == own }?.journal ?? ConvertJournal(settings: settings)
    try mine.write(in: output, name: own)
    return merged
  }

  /// How `jobs` threads are spent: shards converted at once, and kernel threads
  /// for each. Every shard being written also keeps a hashing thread busy
  /// (``PipelinedSink``), so each takes two of the jobs; on 2 cores that is one
  /// shard at a time with one kernel thread, which measured fastest. When a
  /// shard writes fewer bytes than it reads (`outputSmaller`: INT4 from BF16
  /// writes a third), its hasher is mostly idle and the kernels take every
  /// job (measured faster on 2 cores, Docs/PERFORMANCE.md).
  public static func split(jobs: Int, shards: Int, outputSmaller: Bool = false) -> (workers: Int, threads: Int) {
    let workers = max(1, min(shards, jobs / 2))
    return (workers, max(1, jobs / workers - (outputSmaller ? 0 : 1)))
  }

  /// Converts every shard of `plan` (of `part`, when given) not yet verified in
  /// the journal; without a part, then writes the other files, the config and
  /// the index (each atomically), as ``finalize(_:checkpoint:output:jobs:)`` does.
  public static func run(
    _ plan: ConversionPlan, checkpoint: Checkpoint, output: String, journal start: ConvertJournal, options: ConvertOptions,
    part: ShardPart? = nil
  ) throws(ConversionError) -> ConvertReport {
    let t0 = monotonicSeconds()
    let mine = plan.shards(of: part)
    let journalName = part?.journalName ?? ConvertJournal.fileName
    removeTemporaries(in: output, only: part == nil ? nil : Set(mine.map(\.output) + [journalName]))
    // Resume: a journal entry counts only if the file is there and hashes to it.
    let verified = verify(start.shards.filter { e in mine.contains { $0.output == e.name } }, in: output, jobs: options.jobs)
    let done = Set(verified.map(\.name))
    let todo = mine.filter { !done.contains($0.output) }
    let needed = todo.reduce(0) { $0 + $1.outputBytes } + (part == nil ? 1 << 20 : 0)
    if let free = freeBytes(output), free < needed {
      throw ConversionError("no-space", file: output, "needs \(needed) bytes for \(todo.count) shard(s), \(free) bytes free")
    }
    var results: [ShardResult] = mine.filter { done.contains($0.output) }.map { shard in
      let e = verified.first { $0.name == shard.output }!
      return ShardResult(shard: shard.output, sha256: e.sha256, bytes: e.bytes, skipped: true, tensors: [])
    }
    options.started?(todo.reduce(0) { $0 + $1.outputBytes })
    let (workers, threads) = split(jobs: options.jobs, shards: todo.count, outputSmaller: plan.outputBytes < plan.inputBytes)
    var shardOptions = options
    shardOptions.jobs = threads
    struct Shared {
      var journal: ConvertJournal
      var results: [ShardResult] = []
      var error: ConversionError? = nil
    }
    let shared = Mutex(Shared(journal: ConvertJournal(settings: start.settings, shards: verified)))
    let next = Atomic<Int>(0)
    let (todoList, opts) = (todo, shardOptions)
    let work: @Sendable (Int) -> Void = { _ in
      while true {
        if shared.withLock({ $0.error != nil }) { return }
        let i = next.add(1, ordering: .relaxed).oldValue
        if i >= todoList.count { return }
        do throws(ConversionError) {
          let r = try Converter.convert(todoList[i], plan: plan, input: checkpoint, output: output, options: opts)
          try shared.withLock { (s) throws(ConversionError) in
            s.journal.shards.append((r.shard, r.sha256 ?? "", r.bytes))
            try s.journal.write(in: output, name: journalName)
            s.results.append(r)
          }
        } catch {
          shared.withLock { if $0.error == nil { $0.error = error } }
          return
        }
      }
    }
    if workers == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: work) }
    let final = shared.withLock { $0 }
    if let e = final.error { throw e }
    results += final.results
    let order = Dictionary(uniqueKeysWithValues: plan.shards.enumerated().map { ($0.element.output, $0.offset) })
    results.sort { order[$0.shard, default: 0] < order[$1.shard, default: 0] }
    if part == nil {
      try writeMetadata(plan, checkpoint: checkpoint, output: output, journal: final.journal)
      try mergeJournals(final.journal, in: output)
    }
    return ConvertReport(
      input: checkpoint.path, output: output, target: plan.target, shards: results, bytesIn: mine.reduce(0) { $0 + $1.inputBytes },
      bytesOut: results.reduce(0) { $0 + $1.bytes }, seconds: monotonicSeconds() - t0, part: part)
  }

  /// The finalize step of a spread conversion: every planned shard must be in
  /// some journal in OUT and its file must verify (size and SHA-256); then the
  /// other files, config and index are written and the journals merged.
  ///
  /// - Returns: The shards, all marked as verified.
  public static func finalize(
    _ plan: ConversionPlan, checkpoint: Checkpoint, output: String, jobs: Int
  ) throws(ConversionError) -> ConvertReport {
    let t0 = monotonicSeconds()
    let journals = try ConvertJournal.readAll(in: output)
    guard let first = journals.first else {
      throw ConversionError("incomplete", file: output, "no convert journal: nothing was converted into this folder")
    }
    // A shard may be listed by more than one journal (a part count changed
    // between runs): any entry that verifies will do.
    var entries: [String: [(name: String, sha256: String, bytes: Int)]] = [:]
    for (_, j) in journals { for e in j.shards { entries[e.name, default: []].append(e) } }
    let missing = plan.shards.filter { entries[$0.output] == nil }.map(\.output)
    if !missing.isEmpty {
      throw ConversionError(
        "incomplete", file: output,
        "\(missing.count) of \(plan.shards.count) shard(s) not converted yet (a part still running or failed?): \(missing.prefix(5).joined(separator: ", "))")
    }
    let candidates = plan.shards.flatMap { entries[$0.output]! }
    var verified: [(name: String, sha256: String, bytes: Int)] = []
    for e in verify(candidates, in: output, jobs: jobs) where !verified.contains(where: { $0.name == e.name }) { verified.append(e) }
    let bad = plan.shards.map(\.output).filter { name in !verified.contains { $0.name == name } }
    if !bad.isEmpty {
      throw ConversionError(
        "shard-mismatch", file: output,
        "\(bad.count) shard(s) do not match their journal's size and SHA-256 (rerun their part): \(bad.prefix(5).joined(separator: ", "))")
    }
    removeTemporaries(in: output, only: nil)
    let journal = ConvertJournal(settings: first.journal.settings, shards: verified)
    try writeMetadata(plan, checkpoint: checkpoint, output: output, journal: journal)
    try mergeJournals(journal, in: output)
    let results = verified.map { ShardResult(shard: $0.name, sha256: $0.sha256, bytes: $0.bytes, skipped: true, tensors: []) }
    return ConvertReport(
      input: checkpoint.path, output: output, target: plan.target, shards: results, bytesIn: plan.inputBytes,
      bytesOut: results.reduce(0) { $0 + $1.bytes }, seconds: monotonicSeconds() - t0, part: nil)
  }

  /// The entries whose file exists with the recorded size and SHA-256 (hashed on `jobs` threads).
  static func verify(
    _ entries: [(name: String, sha256: String, bytes: Int)], in output: String, jobs: Int
  ) -> [(name: String, sha256: String, bytes: Int)] {
    let list = entries
    let ok = Parallel.map(list.count, jobs: jobs) { i in
      let e = list[i]
      let path = output + "/" + e.name
      return FileSystem.fileSize(path) == e.bytes && (try? Hashing.sha256(file: path)) == e.sha256
    }
    return zip(entries, ok).filter(\.1).map(\.0)
  }

  /// Writes the merged journal as the main one and removes the parts' journals.
  static func mergeJournals(_ journal: ConvertJournal, in output: String) throws(ConversionError) {
    try journal.write(in: output)
    for (file, _) in (try? ConvertJournal.readAll(in: output)) ?? [] where file != ConvertJournal.fileName {
      unlink(output + "/" + file)
    }
  }

  /// Writes other files, config and index (the journal must list every planned shard).
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

  /// Removes temporary files a killed run left behind (never finished outputs):
  /// all of them, or with `only`, those of the named files (a part leaves the
  /// other parts' files in progress alone).
  static func removeTemporaries(in directory: String, only: Set<String>?) {
    guard let entries = try? FileSystem.listDirectory(directory) else { return }
    for e in entries where FileSystem.isTemporaryName(e) {
      if let only {
        // `.NAME.tmp-PID-TAG`
        guard let r = e.range(of: ".tmp-", options: .backwards) else { continue }
        let name = String(e[e.index(after: e.startIndex)..<r.lowerBound])
        guard only.contains(name) else { continue }
      }
      unlink(directory + "/" + e)
    }
  }

  /// The canonical absolute path (`realpath(3)`), or `nil` when it does not exist.
  /// `path` resolved (`realpath`), or for a path that does not exist yet, its
  /// resolved parent plus its last component: what "inside IN" is judged on.
  public static func resolvedPath(_ path: String) -> String {
    let (parent, leaf) = FileSystem.split(path)
    return realPath(path) ?? (realPath(parent.isEmpty ? "." : parent).map { $0 + "/" + leaf } ?? path)
  }

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

  /// Seconds on the monotonic clock.
  public static func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
  }
}
