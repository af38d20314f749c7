import ArgumentParser
import Checkpoint
import Conversion
import Reports
import SafeTensors
import StrictJSON
import Verification

#if canImport(Glibc)
  import Glibc
#endif

/// `ckpt convert IN OUT --to bf16|fp16|fp32|fp8-block …`.
struct Convert: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Convert a compressed-tensors INT4 checkpoint to BF16, FP16, FP32 or DeepSeek-V3 block FP8.",
    discussion: """
      Each quantized module X (X.weight_packed, X.weight_scale, X.weight_shape, …) becomes X.weight \
      in the target dtype; fp8-block also writes X.weight_scale_inv (F32, one scale per block) and \
      turns every other Linear except lm_head and the router gate into FP8 as DeepSeek-V3 does. \
      Other tensors are copied byte for byte unless --cast-all. One output shard per input shard; \
      config.json and the index are rewritten, every other file is copied.
      The input must pass `ckpt validate` (headers); OUT must not be inside IN. Outputs are written \
      under temporary names and renamed when complete; a journal in OUT lists finished shards with \
      their SHA-256, and rerunning (or --resume) skips shards whose outputs verify.
      Beyond one machine: --shard-index I --shard-count N (or SLURM_ARRAY_TASK_ID with \
      SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shard-count) converts only the \
      shards at plan positions k with k % N == I, into a shared OUT, with its own journal; \
      then `ckpt convert --finalize OUT` checks that every shard is present and verifies, and \
      writes config, index and other files (see Docs/SCALE-OUT.md).
      Exit status: 0 converted, 1 refused or failed (validation problems, loss with \
      --require-exact, I/O errors, missing parts at --finalize), 64 usage error.
      """)

  @Argument(help: "IN OUT: the input checkpoint folder (or single .safetensors file) and the output folder (created if missing). With --finalize: OUT, or IN OUT.")
  var paths: [String] = []

  @Option(name: .customLong("to"), help: "Target: bf16, fp16, fp32 or fp8-block (with --finalize: taken from the journal).")
  var target: String?

  @Option(help: "Convert only part I (0-based) of --shard-count parts.")
  var shardIndex: Int?

  @Option(help: "The number of parts a spread conversion has.")
  var shardCount: Int?

  @Flag(help: "Check that every part of a spread conversion is done and verifies, then write config, index and other files.")
  var finalize = false

  @Option(help: "FP8 block size (square blocks).")
  var blockSize = 128

  @Option(help: "Threads (default: all cores).")
  var jobs = Parallel.defaultJobs

  @Flag(help: "Skip shards already converted and verified (rerunning does the same).")
  var resume = false

  @Flag(help: "Print the plan (shards, tensors, bytes in and out, exactness) and write nothing.")
  var dryRun = false

  @Flag(help: "Fail, before writing anything, if any output value would not equal its source exactly.")
  var requireExact = false

  @Flag(help: "Also cast non-quantized floating-point tensors (to the target; to BF16 for fp8-block).")
  var castAll = false

  @OptionGroup var outputOptions: OutputOptions

  var input: String { paths.count == 2 ? paths[0] : "" }
  var output: String { paths.last ?? "" }

  func validate() throws {
    if finalize {
      guard paths.count == 1 || paths.count == 2 else { throw ValidationError("--finalize takes OUT (or IN OUT)") }
      guard shardIndex == nil && shardCount == nil else { throw ValidationError("--finalize takes no --shard-index/--shard-count") }
    } else {
      guard paths.count == 2 else { throw ValidationError("expected IN and OUT") }
      guard target != nil else { throw ValidationError("missing --to (bf16, fp16, fp32 or fp8-block)") }
    }
    if target == ConvertTarget.int4.rawValue {
      throw ValidationError("--to int4 is `ckpt requantize IN OUT --to int4`")
    }
    if let target, ConvertTarget(rawValue: target) == nil {
      throw ValidationError("--to must be one of bf16, fp16, fp32, fp8-block (got \(target))")
    }
    if let i = shardIndex, i < 0 { throw ValidationError("--shard-index must be at least 0") }
    if let n = shardCount, n < 1 { throw ValidationError("--shard-count must be at least 1") }
    if let i = shardIndex, let n = shardCount, i >= n { throw ValidationError("--shard-index must be below --shard-count") }
    guard blockSize >= 1 else { throw ValidationError("--block-size must be at least 1") }
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
  }

  func fail(_ message: String, status: Int32 = 1) -> Never {
    failCommand("convert", json: outputOptions.json, message, status: status)
  }

  func run() throws {
    if finalize { runFinalize() }
    let target = ConvertTarget(rawValue: self.target!)!
    let part: ShardPart?
    do {
      part = try ShardPart.resolve(
        index: shardIndex, count: shardCount,
        environment: Self.environment(["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX"]))
    } catch {
      fail("\(error)", status: 64)
    }
    let checkpoint: Checkpoint
    do { checkpoint = try Checkpoint.load(input) } catch { fail("\(error)") }
    // Structural validation first: convert refuses what validate rejects.
    let report = Validator.validate(checkpoint, options: ValidationOptions(jobs: jobs))
    if !report.isValid {
      let lines = report.errors.map { "  " + $0.description }
      fail("\(input) does not pass validation (\(report.errors.count) error(s)):\n" + lines.joined(separator: "\n"))
    }
    let plan: ConversionPlan
    do { plan = try ConversionPlan.make(checkpoint, target: target, blockSize: blockSize, castAll: castAll) } catch {
      fail("\(error)")
    }
    if dryRun {
      printPlan(plan, part: part)
      exitFlushing(0)
    }
    if requireExact {
      let lossy = try lossyTensors(plan, checkpoint)
      if !lossy.isEmpty {
        var exactTargets: [String] = []
        for other in ConvertTarget.allCases where other != target && other != .int4 {
          guard let p = try? ConversionPlan.make(checkpoint, target: other, blockSize: blockSize, castAll: castAll) else { continue }
          if try lossyTensors(p, checkpoint).isEmpty { exactTargets.append(other.rawValue) }
        }
        let examples = lossy.prefix(5).map { "  \($0.name): \($0.inexact) inexact, \($0.overflow) overflow, max abs error \($0.maxAbsError)" }
        fail(
          "--require-exact: \(lossy.count) tensor(s) would not be exact in \(target.rawValue):\n"
            + examples.joined(separator: "\n")
            + "\n  exact targets for this checkpoint: \(exactTargets.isEmpty ? "none" : exactTargets.joined(separator: ", "))")
      }
    }
    let settings = Self.settings(checkpoint, target: target, blockSize: blockSize, castAll: castAll)
    let journal: ConvertJournal
    do { journal = try ConvertJob.prepareOutput(input: checkpoint.path, output: output, settings: settings, part: part) } catch {
      fail("\(error)")
    }
    let progress = ProgressReporter(label: part.map { "convert part \($0.index + 1)/\($0.count)" } ?? "convert", total: plan.outputBytes, enabled: !outputOptions.json)
    let result: ConvertReport
    do {
      result = try ConvertJob.run(
        plan, checkpoint: checkpoint, output: output, journal: journal,
        options: ConvertOptions(jobs: jobs, started: { progress.reset(total: $0) }, progress: { progress.add($0) }), part: part)
    } catch {
      progress.finish()
      fail("\(error)")
    }
    progress.finish()
    if outputOptions.json {
      printJSON(Self.json(result))
    } else {
      print(Self.text(result), terminator: "")
    }
    exitFlushing(0)
  }

  /// `--finalize OUT`: reads IN and the settings from the journals in OUT.
  func runFinalize() -> Never {
    let journals: [(file: String, journal: ConvertJournal)]
    do { journals = try ConvertJournal.readAll(in: output) } catch { fail("\(error)") }
    guard let settings = journals.first?.journal.settings else {
      fail("\(output): no convert journal; nothing to finalize (run the parts first)")
    }
    for (file, j) in journals where j.settings != settings {
      fail("\(output)/\(file): a different conversion than \(journals[0].file); the parts must use the same IN, --to and options")
    }
    guard let recorded = settings["input"]?.stringValue, let to = settings["to"]?.stringValue.flatMap(ConvertTarget.init(rawValue:))
    else { fail("\(output): the journal has no input or target") }
    if let t = target, t != to.rawValue { fail("--to \(t) does not match the journal's target \(to.rawValue)") }
    let inputPath = paths.count == 2 ? paths[0] : recorded
    if paths.count == 2, (ConvertJob.realPath(inputPath) ?? inputPath) != recorded {
      fail("IN \(inputPath) is not the journal's input \(recorded)")
    }
    let block = settings["block_size"]?.intValue ?? blockSize
    let castAll = settings["cast_all"]?.boolValue ?? false
    let checkpoint: Checkpoint
    do { checkpoint = try Checkpoint.load(inputPath) } catch { fail("\(error)") }
    let report = Validator.validate(checkpoint, options: ValidationOptions(jobs: jobs))
    if !report.isValid { fail("\(inputPath) does not pass validation any more (\(report.errors.count) error(s)); not finalizing") }
    let plan: ConversionPlan
    do { plan = try ConversionPlan.make(checkpoint, target: to, blockSize: block, castAll: castAll) } catch { fail("\(error)") }
    let result: ConvertReport
    do { result = try ConvertJob.finalize(plan, checkpoint: checkpoint, output: output, jobs: jobs) } catch { fail("\(error)") }
    if outputOptions.json {
      var o = Self.json(result).objectValue!
      o["finalized"] = .bool(true)
      printJSON(.object(o))
    } else {
      print("Finalized \(output): \(result.shards.count) shard(s) verified (\(Format.bytes(result.bytesOut))); config.json, index and \(plan.otherFiles.count) other file(s) written")
    }
    exitFlushing(0)
  }

  /// Runs the computation without writing and returns the lossy tensors.
  func lossyTensors(_ plan: ConversionPlan, _ checkpoint: Checkpoint) throws -> [TensorExactness] {
    var lossy: [TensorExactness] = []
    for shard in plan.shards {
      do {
        let r = try Converter.convert(shard, plan: plan, input: checkpoint, output: "", options: ConvertOptions(jobs: jobs, computeOnly: true))
        lossy += r.tensors.filter { !$0.isExact }
      } catch {
        fail("\(error)")
      }
    }
    return lossy
  }

  static func settings(_ c: Checkpoint, target: ConvertTarget, blockSize: Int, castAll: Bool) -> JSONObject {
    var o = JSONObject()
    o["input"] = .string(ConvertJob.realPath(c.path) ?? c.path)
    o["to"] = .string(target.rawValue)
    if target == .fp8Block { o["block_size"] = .number(JSONNumber(blockSize)) }
    o["cast_all"] = .bool(castAll)
    return o
  }

  func printPlan(_ full: ConversionPlan, part: ShardPart?) {
    let plan = full
    let shards = full.shards(of: part)
    let bytesIn = shards.reduce(0) { $0 + $1.inputBytes }
    let bytesOut = shards.reduce(0) { $0 + $1.outputBytes }
    let predicted: String
    switch plan.target {
    case .fp32: predicted = "exact (every INT4 value times a BF16/FP16/FP32 scale is an FP32 value)"
    case .fp16: predicted = "exact unless a value leaves FP16's range (checked while converting)"
    case .bf16: predicted = "lossy where q·s needs more than 8 significant bits (about 37 % of K2's values)"
    case .fp8Block: predicted = "lossy (3-bit mantissa, one scale per block)"
    case .int4: predicted = "exact where a group lies on an INT4 grid (ckpt requantize)"
    }
    if outputOptions.json {
      var root = JSONObject()
      root["dry_run"] = .bool(true)
      if let part { root["part"] = Self.json(part) }
      root["to"] = .string(plan.target.rawValue)
      root["bytes_in"] = .number(JSONNumber(bytesIn))
      root["bytes_out"] = .number(JSONNumber(bytesOut))
      root["exactness"] = .string(predicted)
      root["shards"] = .array(shards.map { s in
        var o = JSONObject()
        o["input"] = .string(s.input)
        o["output"] = .string(s.output)
        o["tensors"] = .number(JSONNumber(s.tensors.count))
        o["converted"] = .number(JSONNumber(s.tensors.filter { $0.isConverted }.count))
        o["bytes_in"] = .number(JSONNumber(s.inputBytes))
        o["bytes_out"] = .number(JSONNumber(s.outputBytes))
        return .object(o)
      })
      root["other_files"] = .array(plan.otherFiles.map { .string($0) })
      printJSON(.object(root))
      return
    }
    var t = TextTable(["shard", "tensors", "converted", "bytes in", "bytes out"], alignments: [.left, .right, .right, .right, .right])
    for s in shards {
      t.add([s.input, Format.grouped(s.tensors.count), Format.grouped(s.tensors.filter { $0.isConverted }.count), Format.bytes(s.inputBytes), Format.bytes(s.outputBytes)])
    }
    print("Plan: \(input) -> \(output) as \(plan.target.rawValue)\(part.map { " part \($0.index) of \($0.count)" } ?? "") (dry run, nothing written)")
    print(t.render(), terminator: "")
    print("Total: \(Format.bytes(bytesIn)) in, \(Format.bytes(bytesOut)) out; \(plan.otherFiles.count) other file(s) copied; config.json and index rewritten")
    print("Exactness: \(predicted)")
  }

  static func text(_ r: ConvertReport) -> String {
    let tensors = r.tensors
    let converted = tensors.filter { $0.action != "copied" && $0.action != "scales" }
    let lossy = r.lossy
    var s = "Converted \(r.input) -> \(r.output) as \(r.target.rawValue)\n"
    if let p = r.part {
      s = "Converted part \(p.index) of \(p.count) (from \(p.source)) of \(r.input) -> \(r.output) as \(r.target.rawValue)\n"
      s += "  not finalized: when every part is done, run `ckpt convert --finalize \(r.output)`\n"
    }
    s += "  shards: \(r.shards.count) (\(r.shards.filter(\.skipped).count) already done and verified)\n"
    let scales = tensors.filter { $0.action == "scales" }.count
    s += "  tensors: \(converted.count) converted\(scales > 0 ? " (+\(scales) weight_scale_inv)" : ""), \(tensors.filter { $0.action == "copied" }.count) copied\n"
    s += "  exact: \(converted.count - lossy.count) of \(converted.count) converted tensors\n"
    if !lossy.isEmpty {
      let worstAbs = lossy.map(\.maxAbsError).max() ?? 0
      let worstRel = lossy.map(\.maxRelError).max() ?? 0
      let values = lossy.reduce(0) { $0 + $1.inexact }
      let overflow = lossy.reduce(0) { $0 + $1.overflow }
      s += "  lossy: \(lossy.count) tensor(s), \(Format.grouped(values)) value(s) rounded, \(overflow) overflowed; max abs error \(worstAbs), max rel error \(worstRel)\n"
    }
    let rate = r.seconds > 0 ? Double(r.bytesOut) / r.seconds : 0
    s += "  bytes: \(Format.bytes(r.bytesIn)) in, \(Format.bytes(r.bytesOut)) out in \(Format.fixed(r.seconds, 2)) s (\(Format.rate(rate)) out)\n"
    return s
  }

  static func json(_ r: ConvertReport) -> JSONValue {
    var root = JSONObject()
    root["ok"] = .bool(true)
    root["input"] = .string(r.input)
    root["output"] = .string(r.output)
    root["to"] = .string(r.target.rawValue)
    root["bytes_in"] = .number(JSONNumber(r.bytesIn))
    root["bytes_out"] = .number(JSONNumber(r.bytesOut))
    root["seconds"] = .number(JSONNumber((r.seconds * 1000).rounded() / 1000))
    root["part"] = r.part.map { json($0) } ?? .null
    root["finalized"] = .bool(r.part == nil)
    root["shards"] = .array(r.shards.map { s in
      var o = JSONObject()
      o["name"] = .string(s.shard)
      o["sha256"] = s.sha256.map { .string($0) } ?? .null
      o["bytes"] = .number(JSONNumber(s.bytes))
      o["skipped"] = .bool(s.skipped)
      return .object(o)
    })
    root["tensors"] = .array(r.tensors.map { t in
      var o = JSONObject()
      o["name"] = .string(t.name)
      o["action"] = .string(t.action)
      o["exact"] = .bool(t.isExact)
      o["inexact"] = .number(JSONNumber(t.inexact))
      o["overflow"] = .number(JSONNumber(t.overflow))
      o["max_abs_error"] = .number(JSONNumber(t.maxAbsError))
      o["max_rel_error"] = .number(JSONNumber(t.maxRelError))
      return .object(o)
    })
    let lossy = r.lossy
    var summary = JSONObject()
    summary["converted"] = .number(JSONNumber(r.tensors.filter { $0.action != "copied" && $0.action != "scales" }.count))
    summary["lossy"] = .number(JSONNumber(lossy.count))
    summary["max_abs_error"] = .number(JSONNumber(lossy.map(\.maxAbsError).max() ?? 0))
    summary["max_rel_error"] = .number(JSONNumber(lossy.map(\.maxRelError).max() ?? 0))
    root["summary"] = .object(summary)
    return .object(root)
  }
}

extension Convert {
  static func environment(_ names: [String]) -> [String: String] {
    var out: [String: String] = [:]
    for n in names { if let v = getenv(n) { out[n] = String(cString: v) } }
    return out
  }

  static func json(_ p: ShardPart) -> JSONValue {
    var o = JSONObject()
    o["index"] = .number(JSONNumber(p.index))
    o["count"] = .number(JSONNumber(p.count))
    o["source"] = .string(p.source)
    return .object(o)
  }
}

extension OutputTensor {
  var isConverted: Bool {
    if case .copy = source { return false }
    return true
  }
}
