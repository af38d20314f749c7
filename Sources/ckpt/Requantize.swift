import ArgumentParser
import Checkpoint
import Conversion
import QuantKernels
import Reports
import SafeTensors
import StrictJSON
import Verification

/// `ckpt requantize IN OUT --to int4 …`.
struct Requantize: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Requantize a BF16, FP16, FP32 or FP8-block checkpoint to compressed-tensors INT4, recovering the trained grid.",
    discussion: """
      Each targeted Linear's X.weight becomes X.weight_packed (I32), X.weight_scale and X.weight_shape, \
      exactly as compressed-tensors' pack-quantized format stores them. Targets: the Kimi K2 Thinking \
      scheme (Linear modules matched by targets and not by ignore: the routed experts), or with --like \
      REF exactly the modules REF quantizes, with REF's config, dtypes and names.
      Per group of --group-size inputs, requantize looks for a scale and codes that `ckpt convert` \
      dequantizes back to the input bit for bit (the QAT grid the weights came from). When several \
      pairs do, the scale rule picks; when none does (fine-tuned or FP8 weights), the group is \
      quantized with the rule: qat7 (absmax/7, codes in [-7, 7], the grid Kimi K2 was trained on), \
      minmax (absmax/7.5, codes in [-8, 7], compressed-tensors' default), or mse (the detected rule's \
      grid, scale searched for the least squared error). auto detects the rule from the input's \
      recovered groups (or REF's codes) and reports how sure it is.
      Same pipeline as convert: validated input, temporary names renamed when complete, a journal of \
      verified shards (rerun or --resume skips them), bounded memory, --jobs threads.
      Exit status: 0 requantized, 1 refused or failed, 64 usage error.
      """)

  @Argument(help: "IN OUT: the input checkpoint folder (or single .safetensors file) and the output folder.")
  var paths: [String] = []

  @Option(name: .customLong("to"), help: "Target: int4 (compressed-tensors pack-quantized).")
  var target: String

  @Option(help: "Inputs per scale (compressed-tensors group size).")
  var groupSize = 32

  @Option(help: "auto, qat7, minmax or mse (see above).")
  var scaleRule = "auto"

  @Option(help: "A reference INT4 checkpoint: copy its quantization config, targets, names and dtypes.")
  var like: String?

  @Option(help: "Threads (default: all cores).")
  var jobs = Parallel.defaultJobs

  @Flag(help: "Skip shards already written and verified (rerunning does the same).")
  var resume = false

  @Flag(help: "Detect the rule and print the plan; write nothing.")
  var dryRun = false

  @OptionGroup var outputOptions: OutputOptions

  static let rules = ["auto", "qat7", "minmax", "mse"]

  func validate() throws {
    guard paths.count == 2 else { throw ValidationError("expected IN and OUT") }
    guard target == "int4" else { throw ValidationError("--to must be int4 (got \(target)); other targets are `ckpt convert`") }
    guard Self.rules.contains(scaleRule) else { throw ValidationError("--scale-rule must be one of \(Self.rules.joined(separator: ", ")) (got \(scaleRule))") }
    guard groupSize >= 1 else { throw ValidationError("--group-size must be at least 1") }
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
  }

  func fail(_ message: String, status: Int32 = 1) -> Never {
    failCommand("requantize", json: outputOptions.json, message, status: status)
  }

  /// How the rule was chosen.
  struct RuleChoice {
    var rule: Int4ScaleRule
    var mse: Bool
    /// `requested`, `input`, `reference` or `assumed`.
    var source: String
    var detection: RuleDetection?
  }

  func run() throws {
    let (input, output) = (paths[0], paths[1])
    let checkpoint: Checkpoint
    do { checkpoint = try Checkpoint.load(input) } catch { fail("\(error)") }
    let report = Validator.validate(checkpoint, options: ValidationOptions(jobs: jobs))
    if !report.isValid {
      fail("\(input) does not pass validation (\(report.errors.count) error(s)):\n" + report.errors.map { "  " + $0.description }.joined(separator: "\n"))
    }
    var reference: RequantReference? = nil
    if let like {
      do { reference = try RequantReference.load(like) } catch { fail("\(error)") }
    }
    var plan: ConversionPlan
    do {
      plan = try ConversionPlan.makeRequantize(
        checkpoint, spec: RequantizeSpec(options: .init(rule: .qat7), groupSize: groupSize), reference: reference)
    } catch {
      fail("\(error)")
    }
    let choice = chooseRule(plan, checkpoint, reference)
    plan.requantize?.options = Int4RequantizeOptions(rule: choice.rule, mse: choice.mse)
    if dryRun {
      printPlan(plan, choice, input: input, output: output)
      exitFlushing(0)
    }
    var settings = JSONObject()
    settings["operation"] = .string("requantize")
    settings["input"] = .string(ConvertJob.realPath(checkpoint.path) ?? checkpoint.path)
    settings["to"] = .string("int4")
    settings["group_size"] = .number(JSONNumber(plan.requantize!.groupSize))
    settings["scale_rule"] = .string(choice.rule.rawValue)
    settings["mse"] = .bool(choice.mse)
    settings["like"] = like.map { .string(ConvertJob.realPath($0) ?? $0) } ?? .null
    let journal: ConvertJournal
    do { journal = try ConvertJob.prepareOutput(input: checkpoint.path, output: output, settings: settings) } catch { fail("\(error)") }
    let progress = ProgressReporter(label: "requantize", total: plan.outputBytes, enabled: !outputOptions.json)
    let result: ConvertReport
    do {
      result = try ConvertJob.run(
        plan, checkpoint: checkpoint, output: output, journal: journal,
        options: ConvertOptions(jobs: jobs, started: { progress.reset(total: $0) }, progress: { progress.add($0) }))
    } catch {
      progress.finish()
      fail("\(error)")
    }
    progress.finish()
    if outputOptions.json {
      printJSON(Self.json(result, choice, groupSize: plan.requantize!.groupSize))
    } else {
      print(Self.text(result, choice, groupSize: plan.requantize!.groupSize), terminator: "")
    }
    exitFlushing(0)
  }

  /// `--scale-rule`, resolved: auto and mse measure the input (64 MiB of its
  /// first targeted weights), then REF's codes, then assume qat7.
  func chooseRule(_ plan: ConversionPlan, _ checkpoint: Checkpoint, _ reference: RequantReference?) -> RuleChoice {
    switch scaleRule {
    case "qat7": return RuleChoice(rule: .qat7, mse: false, source: "requested")
    case "minmax": return RuleChoice(rule: .minmax, mse: false, source: "requested")
    default: break
    }
    let mse = scaleRule == "mse"
    do {
      let sampled = try RuleSampler.sample(plan, checkpoint: checkpoint, budget: 64 << 20, jobs: jobs)
      let d = RuleDetection.detect(sampled)
      if let r = d.rule { return RuleChoice(rule: r, mse: mse, source: "input", detection: d) }
      if let reference {
        let fromRef = RuleDetection.detect(try RuleSampler.referenceCodes(reference, budget: 64 << 20))
        if let r = fromRef.rule { return RuleChoice(rule: r, mse: mse, source: "reference", detection: fromRef) }
      }
      return RuleChoice(rule: .qat7, mse: mse, source: "assumed", detection: d)
    } catch {
      fail("\(error)")
    }
  }

  static func ruleText(_ c: RuleChoice) -> String {
    let name = c.mse ? "mse on the \(c.rule.rawValue) grid" : c.rule.rawValue
    switch c.source {
    case "requested": return "\(name) (requested)"
    case "input": return "\(name), detected from the input with confidence \(Format.fixed((c.detection?.confidence ?? 0) * 100, 1)) %: \(c.detection?.evidence ?? "")"
    case "reference": return "\(name), detected from REF's codes with confidence \(Format.fixed((c.detection?.confidence ?? 0) * 100, 1)) %: \(c.detection?.evidence ?? "")"
    default: return "\(name), assumed (the grid Kimi K2 Thinking was trained on, FORMATS.md §3.6): \(c.detection?.evidence ?? "")"
    }
  }

  func printPlan(_ plan: ConversionPlan, _ choice: RuleChoice, input: String, output: String) {
    let modules = plan.shards.flatMap(\.tensors).filter { if case .int4Packed = $0.source { true } else { false } }.count
    if outputOptions.json {
      var root = JSONObject()
      root["dry_run"] = .bool(true)
      root["to"] = .string("int4")
      root["modules"] = .number(JSONNumber(modules))
      root["bytes_in"] = .number(JSONNumber(plan.inputBytes))
      root["bytes_out"] = .number(JSONNumber(plan.outputBytes))
      root["rule"] = Self.ruleJSON(choice)
      printJSON(.object(root))
      return
    }
    print("Plan: \(input) -> \(output) as int4 (dry run, nothing written)")
    print("  \(plan.shards.count) shard(s), \(modules) module(s) to quantize, group size \(plan.requantize!.groupSize)")
    print("  \(Format.bytes(plan.inputBytes)) in, \(Format.bytes(plan.outputBytes)) out")
    print("  rule: \(Self.ruleText(choice))")
  }

  static func ruleJSON(_ c: RuleChoice) -> JSONValue {
    var o = JSONObject()
    o["used"] = .string(c.rule.rawValue)
    o["mse"] = .bool(c.mse)
    o["source"] = .string(c.source)
    if let d = c.detection {
      o["detected"] = d.rule.map { .string($0.rawValue) } ?? .null
      o["confidence"] = .number(JSONNumber(d.confidence))
      o["evidence"] = .string(d.evidence)
      o["sample_groups"] = .number(JSONNumber(d.stats.groups))
      o["sample_recovered"] = .number(JSONNumber(d.stats.recovered))
    }
    return .object(o)
  }

  static func packedTensors(_ r: ConvertReport) -> [(name: String, stats: Int4RequantizeStats)] {
    r.tensors.compactMap { t in t.requant.map { (String(t.name.dropLast(".weight_packed".count)), $0) } }
  }

  static func rms(_ s: Int4RequantizeStats, _ g: Int) -> Double {
    let n = s.elements(groupSize: g)
    return n > 0 ? (s.sumSquaredError / Double(n)).squareRoot() : 0
  }

  static func relative(_ s: Int4RequantizeStats) -> Double {
    s.sumSquaredInput > 0 ? (s.sumSquaredError / s.sumSquaredInput).squareRoot() : 0
  }

  static func totals(_ r: ConvertReport) -> Int4RequantizeStats {
    packedTensors(r).reduce(Int4RequantizeStats()) { $0 + $1.stats }
  }

  static func text(_ r: ConvertReport, _ c: RuleChoice, groupSize g: Int) -> String {
    let rows = packedTensors(r)
    let t = totals(r)
    var s = "Requantized \(r.input) -> \(r.output) as int4 (group size \(g))\n"
    s += "  rule: \(ruleText(c))\n"
    s += "  shards: \(r.shards.count) (\(r.shards.filter(\.skipped).count) already done and verified)\n"
    if !rows.isEmpty {
      var table = TextTable(
        ["module", "groups", "exact", "ambiguous", "requantized", "max abs error", "rms error"],
        alignments: [.left, .right, .right, .right, .right, .right, .right])
      let worst = rows.sorted { ($0.stats.requantized, $0.stats.sumSquaredError, $1.name) > ($1.stats.requantized, $1.stats.sumSquaredError, $0.name) }
      for (name, st) in worst.prefix(20) {
        table.add([
          name, Format.grouped(st.groups), Format.grouped(st.recovered), Format.grouped(st.ambiguous), Format.grouped(st.requantized),
          String(st.maxAbsError), String(rms(st, g)),
        ])
      }
      s += table.render()
      if rows.count > 20 { s += "  (\(rows.count - 20) more modules; --json lists all)\n" }
    }
    let pct = { (n: Int) in t.groups > 0 ? Format.fixed(Double(n) * 100 / Double(t.groups), 2) + " %" : "0 %" }
    s += "  modules: \(rows.count); groups: \(Format.grouped(t.groups)): \(Format.grouped(t.recovered)) recovered exactly (\(pct(t.recovered))), "
    s += "\(Format.grouped(t.ambiguous)) ambiguous (\(pct(t.ambiguous)); exact, the rule chose among several pairs; \(Format.grouped(t.zeroGroups)) all-zero), "
    s += "\(Format.grouped(t.requantized)) requantized (\(pct(t.requantized)))\n"
    if t.requantized == 0 {
      s += "  exact: every group dequantizes back to the input bit for bit\n"
    } else {
      s += "  error against the input: max abs \(t.maxAbsError), rms \(rms(t, g)), relative rms \(relative(t))\n"
    }
    if c.mse, t.plainSumSquaredError > 0 {
      s += "  mse search: squared error \(Format.fixed((1 - t.searchedSumSquaredError / t.plainSumSquaredError) * 100, 2)) % below the plain \(c.rule.rawValue) rule on the requantized groups\n"
    }
    let full = RuleDetection.detect(t)
    if let d = full.rule, d != c.rule, c.source != "requested" {
      s += "  warning: the whole input points to \(d.rawValue) (\(full.evidence)); ambiguous groups were resolved with \(c.rule.rawValue): rerun with --scale-rule \(d.rawValue)\n"
    } else if full.rule != nil {
      s += "  whole input: \(full.evidence)\n"
    }
    let rate = r.seconds > 0 ? Double(r.bytesIn) / r.seconds : 0
    s += "  bytes: \(Format.bytes(r.bytesIn)) in, \(Format.bytes(r.bytesOut)) out in \(Format.fixed(r.seconds, 2)) s (\(Format.rate(rate)) in)\n"
    return s
  }

  static func statsJSON(_ st: Int4RequantizeStats, groupSize g: Int) -> JSONObject {
    var o = JSONObject()
    o["groups"] = .number(JSONNumber(st.groups))
    o["recovered"] = .number(JSONNumber(st.recovered))
    o["ambiguous"] = .number(JSONNumber(st.ambiguous))
    o["zero_groups"] = .number(JSONNumber(st.zeroGroups))
    o["requantized"] = .number(JSONNumber(st.requantized))
    o["exact"] = .bool(st.requantized == 0)
    o["max_abs_error"] = .number(JSONNumber(st.maxAbsError))
    o["rms_error"] = .number(JSONNumber(rms(st, g)))
    o["relative_rms_error"] = .number(JSONNumber(relative(st)))
    return o
  }

  static func json(_ r: ConvertReport, _ c: RuleChoice, groupSize g: Int) -> JSONValue {
    var root = JSONObject()
    root["ok"] = .bool(true)
    root["input"] = .string(r.input)
    root["output"] = .string(r.output)
    root["to"] = .string("int4")
    root["group_size"] = .number(JSONNumber(g))
    root["rule"] = ruleJSON(c)
    let t = totals(r)
    var totals = statsJSON(t, groupSize: g)
    totals["modules"] = .number(JSONNumber(packedTensors(r).count))
    totals["minus_eight_groups"] = .number(JSONNumber(t.minusEightGroups))
    totals["max_code_histogram"] = .array(t.maxCodeHistogram.map { .number(JSONNumber($0)) })
    totals["code_histogram"] = .array(t.codeHistogram.map { .number(JSONNumber($0)) })
    if c.mse {
      totals["plain_rule_squared_error"] = .number(JSONNumber(t.plainSumSquaredError))
      totals["mse_squared_error"] = .number(JSONNumber(t.searchedSumSquaredError))
    }
    let full = RuleDetection.detect(t)
    totals["detected_rule"] = full.rule.map { .string($0.rawValue) } ?? .null
    totals["detection_evidence"] = .string(full.evidence)
    root["totals"] = .object(totals)
    root["bytes_in"] = .number(JSONNumber(r.bytesIn))
    root["bytes_out"] = .number(JSONNumber(r.bytesOut))
    root["seconds"] = .number(JSONNumber((r.seconds * 1000).rounded() / 1000))
    root["shards"] = .array(r.shards.map { s in
      var o = JSONObject()
      o["name"] = .string(s.shard)
      o["sha256"] = s.sha256.map { .string($0) } ?? .null
      o["bytes"] = .number(JSONNumber(s.bytes))
      o["skipped"] = .bool(s.skipped)
      return .object(o)
    })
    root["modules"] = .array(packedTensors(r).map { (name, st) in
      var o = statsJSON(st, groupSize: g)
      o["name"] = .string(name)
      return .object(o)
    })
    root["other_tensors"] = .array(r.tensors.filter { $0.requant == nil && !["scales", "shape"].contains($0.action) }.map { t in
      var o = JSONObject()
      o["name"] = .string(t.name)
      o["action"] = .string(t.action)
      o["exact"] = .bool(t.isExact)
      o["max_abs_error"] = .number(JSONNumber(t.maxAbsError))
      return .object(o)
    })
    return .object(root)
  }
}
