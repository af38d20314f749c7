import ArgumentParser
import BLAS
import Checkpoint
import Diff
import QuantKernels
import Reports
import SafeTensors
import StrictJSON
import Verification

#if canImport(Glibc)
  import Glibc
#endif

/// Report files shared by `ckpt diff` and `ckpt verify`.
struct ReportFiles: ParsableArguments {
  @Option(name: .customLong("json"), help: "Write the JSON report (Docs/REPORTS.md) to FILE; `-` prints it instead of the table.")
  var json: String?

  @Option(help: "Write the HDF5 report (a group per layer) to FILE.")
  var hdf5: String?

  @Option(help: "Write the self-contained HTML report with SVG charts to FILE.")
  var html: String?

  @Option(help: "Rows of the terminal table (worst first; 0: all).")
  var top = 25

  @Option(help: "Threads for decoding and comparing (default: all cores).")
  var jobs = Parallel.defaultJobs

  @Flag(help: "Do not fail on tensors present in one checkpoint only (they are still listed).")
  var allowMissing = false

  var quiet: Bool { json == "-" }

  func check() throws {
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
    guard top >= 0 else { throw ValidationError("--top must be at least 0") }
    let outs = [json, hdf5, html].compactMap { $0 }.filter { $0 != "-" }
    guard Set(outs).count == outs.count else { throw ValidationError("--json, --hdf5 and --html must name different files") }
    for o in outs where FileSystem.kind(of: o).isDirectory { throw ValidationError("\(o) is a directory") }
  }
}

/// The steps both commands share: load and validate both inputs, write reports.
enum CompareSupport {
  static func catalog(_ path: String, side: String, command: String, json: Bool, jobs: Int) -> WeightCatalog {
    let checkpoint: Checkpoint
    do { checkpoint = try Checkpoint.load(path) } catch { failCommand(command, json: json, "\(side) \(error)", status: 1) }
    // Headers and structure first: nothing is mapped that validate rejects.
    let report = Validator.validate(checkpoint, options: ValidationOptions(jobs: jobs))
    if !report.isValid {
      let lines = report.errors.prefix(10).map { "  " + $0.description }
      failCommand(command, json: json, "\(side) \(path) does not pass validation (\(report.errors.count) error(s)):\n" + lines.joined(separator: "\n"), status: 1)
    }
    do { return try WeightCatalog.load(checkpoint) } catch { failCommand(command, json: json, "\(side) \(path): \(error)", status: 1) }
  }

  /// Writes the requested reports and the table; exits 0 when the comparison passed, else 1.
  static func finish(_ report: ComparisonReport, files: ReportFiles, command: String, allowMissing: Bool) -> Never {
    let json = ComparisonJSON.make(report)
    do {
      if let p = files.json, p != "-" {
        try FileSystem.writeAtomically(Array(JSONWriter.string(json, style: .pretty(indent: 1, asciiOnly: false)).utf8) + [10], to: p)
      }
      if let p = files.html { try FileSystem.writeAtomically(Array(ComparisonHTML.render(report).utf8), to: p) }
    } catch {
      failCommand(command, json: files.quiet, "cannot write the report: \(error)", status: 1)
    }
    if let p = files.hdf5 {
      do { try ComparisonHDF5.write(report, to: p) } catch { failCommand(command, json: files.quiet, "cannot write \(p): \(error)", status: 1) }
    }
    if files.quiet {
      printJSON(json)
    } else {
      print(ComparisonTable.render(report, limit: files.top == 0 ? nil : files.top), terminator: "")
      for (flag, p) in [("json", files.json), ("hdf5", files.hdf5), ("html", files.html)] {
        if let p, p != "-" { print("wrote \(flag) report \(p)") }
      }
    }
    let missing = !allowMissing && !(report.onlyInA.isEmpty && report.onlyInB.isEmpty)
    if missing && !files.quiet { printError("ckpt \(command): \(report.onlyInA.count + report.onlyInB.count) tensor(s) in one checkpoint only (--allow-missing to accept)") }
    exitFlushing(report.passed && !missing ? 0 : 1)
  }
}

/// `ckpt diff A B`.
struct DiffCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "diff",
    abstract: "Compare two checkpoints tensor by tensor, in any pair of supported formats.",
    discussion: """
      Matches tensors by module: an INT4 triplet (weight_packed, weight_scale, weight_shape) and an FP8 \
      weight with its weight_scale_inv are each one X.weight; names may differ by a language_model. \
      prefix. Both sides are decoded to FP32 while streaming from the memory-mapped shards, and each \
      tensor gets: max abs error, RMSE, relative error ‖A−B‖/‖A‖, cosine similarity, SQNR (dB), \
      fraction of bit-identical elements and a histogram of |A−B|, aggregated per layer and module kind.
      A is the reference. Each tensor passes when its relative error is within the rounding bound of \
      the two encodings (Docs/REPORTS.md, Tolerances), or within --fail-above when given.
      Exit status: 0 every tensor within tolerance; 1 a tensor above it, a tensor not comparable, \
      a tensor in one checkpoint only (unless --allow-missing), or bad input; 64 usage error.
      """)

  @Argument(help: "A B: the reference and the candidate checkpoint (folders or .safetensors files).")
  var paths: [String] = []

  @Option(help: "Fail when a tensor's relative error ‖A−B‖/‖A‖ exceeds REL (default: the encodings' bound).")
  var failAbove: Double?

  @OptionGroup var files: ReportFiles

  func validate() throws {
    guard paths.count == 2 else { throw ValidationError("expected two checkpoints, A and B") }
    if let f = failAbove { guard f >= 0, f.isFinite else { throw ValidationError("--fail-above must be a non-negative number") } }
    try files.check()
  }

  func run() throws {
    let start = now()
    let a = CompareSupport.catalog(paths[0], side: "A", command: "diff", json: files.quiet, jobs: files.jobs)
    let b = CompareSupport.catalog(paths[1], side: "B", command: "diff", json: files.quiet, jobs: files.jobs)
    let matched = CheckpointDiff.match(a, b)
    let progress = ProgressReporter(label: "diff", total: 0, enabled: !files.quiet)
    let result: (rows: [ComparisonRow], bytes: Int)
    do {
      result = try CheckpointDiff.compare(
        matched.pairs, a: a, b: b,
        options: DiffOptions(jobs: files.jobs, failAbove: failAbove, started: { progress.reset(total: $0) }, progress: { progress.add($0) }))
    } catch {
      progress.finish()
      failCommand("diff", json: files.quiet, "\(error)", status: 1)
    }
    progress.finish()
    let seconds = now() - start
    var settings: [(String, String)] = [("fail_above", failAbove.map { "\($0)" } ?? "per encoding (Tolerance)")]
    settings.append(("jobs", String(files.jobs)))
    let report = ComparisonReport(
      command: "diff", toolVersion: CheckpointKitVersion.string, pathA: paths[0], pathB: paths[1], formatA: a.format, formatB: b.format,
      rows: result.rows, onlyInA: matched.onlyInA, onlyInB: matched.onlyInB, mismatched: matched.mismatched, settings: settings,
      performance: [("seconds", seconds), ("bytes_read", Double(result.bytes)), ("read_gb_per_s", Double(result.bytes) / seconds / 1e9)])
    CompareSupport.finish(report, files: files, command: "diff", allowMissing: files.allowMissing)
  }
}

/// `ckpt verify A B`.
struct VerifyCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "verify",
    abstract: "Run a reference FP32 forward pass (OpenBLAS) of every Linear and MoE block through A's and B's weights.",
    discussion: """
      Every Linear, router and routed expert present in both checkpoints gets the same activations \
      (seeded Gaussian rows, RMS-normalized and scaled by A's norm weight that feeds the module in \
      DeepSeek-V3, or rows from --activations FILE) and reports output-level relative error, cosine \
      and max abs error. Each MoE layer also runs as a whole block, as DeepSeek-V3 defines it: sigmoid \
      router, e_score_correction_bias used only to select, top-k, weights normalized and scaled by \
      routed_scaling_factor, SwiGLU experts plus the shared expert; the report gives the block output \
      error and how often A and B chose the same experts.
      --activations FILE: a safetensors file of 2-D F32/BF16/F16 rows. A tensor named after a module \
      is that module's exact input; otherwise `hidden_states` (or the first tensor of the right width) \
      replaces the Gaussian rows before the norm.
      Reports achieved GFLOP/s next to the OpenBLAS sgemm peak measured in the same run.
      Exit status: 0 every output within tolerance; 1 an output above it, or bad input; 64 usage error.
      """)

  @Argument(help: "A B: the reference and the candidate checkpoint.")
  var paths: [String] = []

  @Option(help: "Activation rows (tokens) per layer.")
  var samples = 32

  @Option(help: "Seed of the Gaussian activations.")
  var seed: UInt64 = 0

  @Option(help: "A safetensors file of activation rows (see above).")
  var activations: String?

  @Flag(help: "Skip the sgemm peak measurement.")
  var noPeak = false

  @OptionGroup var files: ReportFiles

  func validate() throws {
    guard paths.count == 2 else { throw ValidationError("expected two checkpoints, A and B") }
    guard samples >= 1, samples <= 1 << 20 else { throw ValidationError("--samples must be between 1 and 1048576") }
    try files.check()
  }

  func run() throws {
    // Checked here rather than in validate(): `ckpt run` parses the options
    // of every step before an earlier step has written this file.
    if let f = activations, !FileSystem.kind(of: f).exists { throw ValidationError("--activations \(f) does not exist") }
    BLASSetup.preferAVX512Kernels()
    let start = now()
    let a = CompareSupport.catalog(paths[0], side: "A", command: "verify", json: files.quiet, jobs: files.jobs)
    let b = CompareSupport.catalog(paths[1], side: "B", command: "verify", json: files.quiet, jobs: files.jobs)
    let peak = noPeak ? nil : ForwardVerify.sgemmPeak()
    let progress = ProgressReporter(label: "verify", total: 0, enabled: !files.quiet)
    let result: VerifyResult
    do {
      result = try ForwardVerify.run(
        a: a, b: b,
        options: VerifyOptions(
          samples: samples, seed: seed, activations: activations, jobs: files.jobs, started: { progress.reset(total: $0) },
          progress: { progress.add($0) }))
    } catch {
      progress.finish()
      failCommand("verify", json: files.quiet, "\(error)", status: 1)
    }
    progress.finish()
    let seconds = now() - start
    var performance: [(String, Double)] = [
      ("seconds", seconds), ("gflop", result.flops / 1e9), ("gflop_per_s", result.flops / result.seconds / 1e9),
      ("gemm_gflop_per_s", result.gemmSeconds > 0 ? result.flops / result.gemmSeconds / 1e9 : 0),
    ]
    if let peak { performance.append(("sgemm_peak_gflop_per_s", peak)) }
    let settings: [(String, String)] = [
      ("samples", String(samples)), ("seed", String(seed)), ("activations", result.activationSource),
      ("blas", "\(BLAS.coreName), \(BLAS.threadCount) thread(s)\(getenv("OPENBLAS_CORETYPE").map { ", OPENBLAS_CORETYPE=" + String(cString: $0) } ?? "")"),
    ]
    let report = ComparisonReport(
      command: "verify", toolVersion: CheckpointKitVersion.string, pathA: paths[0], pathB: paths[1], formatA: a.format, formatB: b.format,
      rows: result.rows, mismatched: result.skipped, settings: settings, performance: performance)
    CompareSupport.finish(report, files: files, command: "verify", allowMissing: true)
  }
}

/// OpenBLAS kernel choice.
enum BLASSetup {
  /// OpenBLAS 0.3.21 (Debian 12) takes recent AMD CPUs such as Zen 5 for
  /// Haswell and runs AVX2 kernels on AVX-512 hardware; it reads
  /// `OPENBLAS_CORETYPE` only while loading. When the CPU has AVX-512, the
  /// user set no `OPENBLAS_CORETYPE` and OpenBLAS chose a pre-AVX-512 kernel
  /// set, re-run this process with `OPENBLAS_CORETYPE=SkylakeX`
  /// (Docs/PERFORMANCE.md: ~1.6× sgemm). `CKPT_BLAS_REEXEC=0` turns it off.
  static func preferAVX512Kernels() {
    if let v = getenv("CKPT_BLAS_REEXEC"), String(cString: v) == "0" { return }
    guard let better = ForwardVerify.preferredBLASCore(
      current: BLAS.coreName, cpuHasAVX512: KernelPath.avx512.isAvailable, userChoice: getenv("OPENBLAS_CORETYPE").map { String(cString: $0) })
    else { return }
    setenv("OPENBLAS_CORETYPE", better, 1)
    var args = CommandLine.arguments.map { strdup($0) }
    args.append(nil)
    execv("/proc/self/exe", &args)
    // execv returned: it failed; go on with the kernels OpenBLAS chose.
    unsetenv("OPENBLAS_CORETYPE")
  }
}
