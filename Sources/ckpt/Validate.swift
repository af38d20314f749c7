import ArgumentParser
import Checkpoint
import Reports
import SafeTensors
import StrictJSON
import Verification

/// `ckpt validate PATH [--data] [--checksums FILE] [--json]`.
struct Validate: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check a checkpoint's integrity and report every problem found.",
    discussion: """
      By default reads headers only: every safetensors reader rule per shard, the index against \
      the shards, compressed-tensors completeness per quantized module, and config.json against \
      the tensors present (DeepSeek-V3 / Kimi family).
      --data also scans all tensor data (NaN/Inf, zero or negative scales, padding nibbles).
      --checksums FILE compares each shard's SHA-256 with a sha256sum-format file, or with the JSON \
      written by `ckpt hash --tensors`, which also names the tensors that changed.
      Exit status: 0 valid, 1 problems found, 64 usage error.
      """)

  @Argument(help: "A checkpoint folder or a single .safetensors file.")
  var path: String

  @Flag(help: "Scan all tensor data for NaN/Inf, bad scales and non-zero padding.")
  var data = false

  @Option(help: "Expected digests: a sha256sum-format file, or the JSON of `ckpt hash --tensors` (then a mismatching shard's changed tensors are named).")
  var checksums: String?

  @Option(help: "Threads for per-shard work (default: all cores).")
  var jobs: Int = Parallel.defaultJobs

  @OptionGroup var output: OutputOptions

  func validate() throws {
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
  }

  func run() throws {
    // Checked here rather than in validate(): `ckpt run` parses the options
    // of every step before an earlier step has written this file.
    if let checksums, FileSystem.fileSize(checksums) == nil {
      throw ValidationError("--checksums: cannot read \(checksums)")
    }
    let checkpoint = try loadCheckpoint(path)
    var options = ValidationOptions(scanData: data, checksumsFile: checksums, jobs: jobs)
    options.skipTeardown = true
    Teardown.keep(checkpoint)
    var progress: ProgressReporter? = nil
    if data || checksums != nil {
      let total = (checkpoint.shards + checkpoint.unindexedShards).compactMap { FileSystem.fileSize(checkpoint.pathOf($0)) }.reduce(0, +)
      let p = ProgressReporter(label: "validate", total: total * ((data ? 1 : 0) + (checksums != nil ? 1 : 0)), enabled: !output.json)
      options.progress = { p.add($0) }
      progress = p
    }
    let start = now()
    let report = Validator.validate(checkpoint, options: options)
    progress?.finish()
    let seconds = now() - start
    if output.json {
      printJSON(Self.json(report, seconds: seconds))
    } else {
      print(Self.text(report, seconds: seconds), terminator: "")
    }
    // Exit now: freeing the checkpoint's tables would only cost time.
    Teardown.keep(report)
    exitFlushing(report.isValid ? 0 : 1)
  }

  static func json(_ r: ValidationReport, seconds: Double) -> JSONValue {
    var root = JSONObject()
    root["path"] = .string(r.path)
    root["valid"] = .bool(r.isValid)
    root["errors"] = .number(JSONNumber(r.errors.count))
    root["warnings"] = .number(JSONNumber(r.warnings.count))
    root["shards"] = .array(r.shards.map { s in
      var o = JSONObject()
      o["name"] = .string(s.name)
      o["bytes"] = s.bytes.map { .number(JSONNumber($0)) } ?? .null
      o["tensors"] = .number(JSONNumber(s.tensors))
      o["header_valid"] = .bool(s.headerValid)
      if let d = s.sha256 { o["sha256"] = .string(d) }
      return .object(o)
    })
    root["problems"] = .array(r.problems.map(problemJSON))
    root["summary"] = .object(JSONObject([
      ("tensors", .number(JSONNumber(r.tensorCount))),
      ("quantized_modules", .number(JSONNumber(r.quantizedModules))),
      ("inventory_checked", .bool(r.inventoryChecked)),
      ("scanned_bytes", .number(JSONNumber(r.scannedBytes))),
      ("hashed_bytes", .number(JSONNumber(r.hashedBytes))),
      ("seconds", .number(JSONNumber((seconds * 1000).rounded() / 1000))),
    ]))
    return .object(root)
  }

  static func text(_ r: ValidationReport, seconds: Double) -> String {
    var out = render(r.problems)
    var checks = ["headers", "index", "quantized modules"]
    if r.inventoryChecked { checks.append("config inventory") }
    if r.scannedBytes > 0 { checks.append("data (\(Format.bytes(r.scannedBytes)))") }
    if r.hashedBytes > 0 { checks.append("checksums (\(Format.bytes(r.hashedBytes)))") }
    let what = "\(r.shards.count) shard(s), \(Format.grouped(r.tensorCount)) tensors, \(Format.grouped(r.quantizedModules)) quantized modules; checked \(checks.joined(separator: ", ")) in \(Format.fixed(seconds, 2)) s"
    if r.isValid {
      out += "valid: \(r.path): \(what)" + (r.warnings.isEmpty ? "" : " (\(r.warnings.count) warning(s))") + "\n"
    } else {
      out += "INVALID: \(r.path): \(r.errors.count) error(s), \(r.warnings.count) warning(s) in \(what)\n"
    }
    return out
  }
}
