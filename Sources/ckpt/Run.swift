import ArgumentParser
import Pipeline
import SafeTensors
import StrictJSON

#if canImport(Glibc)
  import Glibc
#endif

/// `ckpt run PIPELINE.yaml [--dry-run] [--resume] [--json]`.
struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a pipeline of ckpt steps from a YAML (or JSON) file.",
    discussion: """
      A pipeline names variables, inputs and outputs, and ordered steps: validate, hash, convert, \
      requantize, diff, verify, compress, decompress. A step's options are its subcommand's own \
      (`to: fp8-block` is `--to fp8-block`, `data: true` is `--data`; IN/OUT-style arguments are \
      named: path, input, output, a, b). ${name} substitutes a variable, ${step.option} a value of \
      an earlier step. Relative paths are relative to the current folder.
      The whole file is checked before anything runs: unknown steps or options, missing inputs, \
      outputs inside inputs, and steps reading what no earlier step writes are reported with their \
      line (exit 64). Each finished step is recorded in a state file beside the outputs; with \
      --resume, steps that finished and whose inputs and outputs are unchanged are skipped. A \
      failing step stops the pipeline (exit 1), naming the step; earlier outputs stay. \
      See Docs/PIPELINES.md.
      Exit status: 0 every step succeeded, 1 a step failed, 64 the pipeline file or a flag is wrong.
      """)

  @Argument(help: "The pipeline file (YAML, or JSON).")
  var pipeline: String

  @Flag(help: "Check the pipeline and print the steps it would run (or skip, with --resume); run nothing.")
  var dryRun = false

  @Flag(help: "Skip steps that finished (per the state file) whose inputs and outputs are unchanged.")
  var resume = false

  @Option(name: .customLong("set"), help: "Set a variable, overriding the file's: NAME=VALUE (repeatable).")
  var assignments: [String] = []

  @OptionGroup var output: OutputOptions

  func validate() throws {
    for a in assignments where !a.contains("=") { throw ValidationError("--set takes NAME=VALUE (got \(a))") }
  }

  /// The steps a pipeline can run: what each reads and writes. The options
  /// are the subcommands' own: `parse` runs the subcommand's parser.
  static let steps: [(kind: StepKind, parse: @Sendable ([String]) -> String?)] = [
    (StepKind(name: "validate", positionals: ["path"], reads: ["path", "checksums"], writes: [], jsonArguments: ["--json"], options: optionNames(Validate.self)), check(Validate.self)),
    (StepKind(name: "hash", positionals: ["path"], reads: ["path"], writes: ["output", "o"], jsonArguments: [], options: optionNames(Hash.self)), check(Hash.self)),
    (StepKind(name: "convert", positionals: ["input", "output"], reads: ["input"], writes: ["output"], jsonArguments: ["--json"], options: optionNames(Convert.self)), check(Convert.self)),
    (
      StepKind(name: "requantize", positionals: ["input", "output"], reads: ["input", "like"], writes: ["output"], jsonArguments: ["--json"], options: optionNames(Requantize.self)),
      check(Requantize.self)
    ),
    (StepKind(name: "diff", positionals: ["a", "b"], reads: ["a", "b"], writes: ["json", "hdf5", "html"], jsonArguments: ["--json", "-"], options: optionNames(DiffCommand.self)), check(DiffCommand.self)),
    (
      StepKind(name: "verify", positionals: ["a", "b"], reads: ["a", "b", "activations"], writes: ["json", "hdf5", "html"], jsonArguments: ["--json", "-"], options: optionNames(VerifyCommand.self)),
      check(VerifyCommand.self)
    ),
    (StepKind(name: "compress", positionals: ["input", "output"], reads: ["input"], writes: ["output"], jsonArguments: ["--json"], options: optionNames(Compress.self)), check(Compress.self)),
    (StepKind(name: "decompress", positionals: ["input", "output"], reads: ["input"], writes: ["output"], jsonArguments: ["--json"], options: optionNames(Decompress.self)), check(Decompress.self)),
  ]

  /// The option names (without dashes) in a subcommand's help: the parser's own list.
  static func optionNames<C: ParsableCommand>(_: C.Type) -> Set<String> {
    var names = Set<String>()
    for word in C.helpMessage(columns: 10_000).split(whereSeparator: { " ,\n[]<>=".contains($0) }) where word.hasPrefix("-") {
      let name = word.drop { $0 == "-" }
      if !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) { names.insert(String(name)) }
    }
    names.remove("help")
    names.remove("h")
    names.remove("version")
    return names
  }

  static func check<C: ParsableCommand>(_: C.Type) -> @Sendable ([String]) -> String? {
    { args in
      do {
        _ = try C.parse(args)
        return nil
      } catch {
        return C.message(for: error)
      }
    }
  }

  func fail(_ message: String, status: Int32) -> Never {
    failCommand("run", json: output.json, message, status: status)
  }

  func run() throws {
    let text: String
    do { text = String(decoding: try FileSystem.readAll(pipeline), as: UTF8.self) } catch {
      fail("\(pipeline): \(error.message)", status: 64)
    }
    let directory = WorkingDirectory.path()
    let overrides = assignments.map { a -> (String, String) in
      let eq = a.firstIndex(of: "=")!
      return (String(a[..<eq]), String(a[a.index(after: eq)...]))
    }
    let plan: Pipeline
    do { plan = try Pipeline.load(file: pipeline, text: text, kinds: Self.steps.map(\.kind), overrides: overrides, directory: directory) } catch {
      refuse(error.errors)
    }
    let parsers = Dictionary(Self.steps.map { ($0.kind.name, $0.parse) }, uniquingKeysWith: { a, _ in a })
    let problems = plan.check(exists: { FileSystem.kind(of: $0).exists }) { step in
      parsers[step.kind]!(step.arguments)
    }
    if !problems.isEmpty { refuse(problems) }

    // State: with --resume, what finished before; otherwise a fresh record.
    var state = PipelineState(pipeline: absolutePath(pipeline, directory), toolVersion: CheckpointKitVersion.string)
    if resume, let bytes = try? FileSystem.readAll(plan.statePath), let old = PipelineState.decode(bytes) {
      state.records = old.records
    }
    let kinds = Dictionary(Self.steps.map { ($0.kind.name, $0.kind) }, uniquingKeysWith: { a, _ in a })
    var reports: [JSONValue] = []
    var ran = false
    let total = plan.steps.count
    func say(_ s: String) { if !output.json { writeStderr(s + "\n") } }

    if dryRun {
      for s in plan.steps {
        let blocker = resume && !ran ? plan.resumeBlocker(s, state: state) : "not resuming"
        if blocker != nil { ran = true }
        let line = "[\(s.index + 1)/\(total)] \(s.name): \(blocker == nil ? "skip (finished, unchanged)" : "run") — ckpt \(s.kind) \(shellQuoted(s.arguments))"
        if output.json {
          reports.append(stepJSON(s, status: blocker == nil ? "would-skip" : "would-run", exit: nil, seconds: nil, result: nil))
        } else {
          print(line)
        }
      }
      if output.json {
        printJSON(summary(plan, passed: true, failed: nil, steps: reports, dryRun: true))
      } else {
        print("state: \(plan.statePath)")
      }
      return
    }

    if !resume { saveState(state, to: plan.statePath) }
    for s in plan.steps {
      // Once a step runs, every later step runs too: its inputs may have changed.
      if resume && !ran, plan.resumeBlocker(s, state: state) == nil {
        say("[\(s.index + 1)/\(total)] \(s.name): finished earlier, inputs and outputs unchanged; skipped")
        reports.append(stepJSON(s, status: "skipped", exit: 0, seconds: state.record(s.index)?.seconds, result: nil))
        continue
      }
      ran = true
      state.records.removeAll { $0.index >= s.index }
      saveState(state, to: plan.statePath)
      var arguments = s.arguments
      if output.json, let kind = kinds[s.kind], let key = kind.jsonKeyName, s.value(key) == nil {
        arguments = kind.jsonArguments + arguments
      }
      say("[\(s.index + 1)/\(total)] \(s.name): ckpt \(s.kind) \(shellQuoted(arguments))")
      // The folders outputs go into (not the outputs: each step creates those).
      for w in s.writes { makeDirectory(FileSystem.split(w.absolute).directory) }
      let inputs = plan.inputSignatures(s)
      let t0 = now()
      let result = ChildProcess.run([s.kind] + arguments, captureOutput: output.json)
      let seconds = now() - t0
      var parsed: JSONValue? = nil
      if output.json, !result.output.isEmpty {
        parsed = (try? JSONParser.parse(result.output)) ?? .string(String(decoding: result.output.suffix(4096), as: UTF8.self))
      }
      guard result.status == 0 else {
        reports.append(stepJSON(s, status: "failed", exit: Int(result.status), seconds: seconds, result: parsed))
        let done = state.records.count
        let message = "step \(s.index + 1) (\(s.name)) failed: `ckpt \(s.kind)` \(result.describe)"
          + (done > 0 ? "; the \(done) step(s) before it finished and are recorded in \(plan.statePath) (rerun with --resume)" : "")
        if output.json {
          for rest in plan.steps[(s.index + 1)...] { reports.append(stepJSON(rest, status: "not-run", exit: nil, seconds: nil, result: nil)) }
          var o = summary(plan, passed: false, failed: s, steps: reports, dryRun: false).objectValue!
          o["error"] = .string(message)
          printJSON(.object(o))
          exitFlushing(1)
        }
        printError("ckpt run: " + message)
        exitFlushing(1)
      }
      state.finish(StepRecord(
        index: s.index, name: s.name, kind: s.kind, arguments: s.arguments, seconds: seconds, inputs: inputs, outputs: plan.outputSignatures(s)))
      saveState(state, to: plan.statePath)
      reports.append(stepJSON(s, status: "done", exit: 0, seconds: seconds, result: parsed))
    }
    if output.json {
      printJSON(summary(plan, passed: true, failed: nil, steps: reports, dryRun: false))
    } else {
      say("ckpt run: \(total) step(s) done; state in \(plan.statePath)")
    }
  }

  /// Reports the problems found before running, each `FILE:LINE: message`, and exits 64.
  func refuse(_ problems: [PipelineError]) -> Never {
    if output.json {
      let list: [JSONValue] = problems.map { p in
        .object(JSONObject([("line", p.line.map { .number(JSONNumber($0)) } ?? .null), ("message", .string(p.message))]))
      }
      printJSON(.object(JSONObject([("ok", .bool(false)), ("pipeline", .string(pipeline)), ("errors", .array(list))])))
    } else {
      for p in problems { printError(p.description) }
      printError("ckpt run: \(problems.count) problem(s) in \(pipeline); nothing was run")
    }
    exitFlushing(64)
  }

  /// `mkdir -p`, failing the run when it cannot.
  func makeDirectory(_ dir: String) {
    do { try FileSystem.createDirectory(dir) } catch { fail("cannot create the folder \(dir): \(error.message)", status: 1) }
  }

  func saveState(_ state: PipelineState, to path: String) {
    makeDirectory(FileSystem.split(path).directory)
    do { try FileSystem.writeAtomically(state.encoded(), to: path) } catch {
      fail("cannot write the state file \(path): \(error.message)", status: 1)
    }
  }

  func stepJSON(_ s: PipelineStep, status: String, exit: Int?, seconds: Double?, result: JSONValue?) -> JSONValue {
    var o = JSONObject([
      ("index", .number(JSONNumber(s.index + 1))), ("name", .string(s.name)), ("kind", .string(s.kind)), ("line", .number(JSONNumber(s.line))),
      ("arguments", .array(s.arguments.map { .string($0) })), ("status", .string(status)),
    ])
    if let exit { o["exit"] = .number(JSONNumber(exit)) }
    if let seconds { o["seconds"] = .number(JSONNumber(seconds)) }
    if let result { o["result"] = result }
    return .object(o)
  }

  func summary(_ plan: Pipeline, passed: Bool, failed: PipelineStep?, steps: [JSONValue], dryRun: Bool) -> JSONValue {
    var o = JSONObject([
      ("schema", .string("ckpt-run/1")), ("ok", .bool(passed)), ("pipeline", .string(pipeline)), ("state", .string(plan.statePath)),
      ("dry_run", .bool(dryRun)), ("steps", .array(steps)),
    ])
    if let failed { o["failed_step"] = .string(failed.name) }
    return .object(o)
  }
}

extension StepKind {
  /// The option that turns JSON output on (`json`), if the step has one.
  var jsonKeyName: String? { jsonArguments.first.map { String($0.drop { $0 == "-" }) } }
}

/// Arguments as a shell would need them quoted, for display.
func shellQuoted(_ args: [String]) -> String {
  args.map { a in
    a.isEmpty || a.contains(where: { " \t\n'\"$`\\*?[]{}()<>|&;#~".contains($0) })
      ? "'" + a.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'" : a
  }.joined(separator: " ")
}

enum WorkingDirectory {
  /// The current folder, absolute.
  static func path() -> String {
    guard let p = getcwd(nil, 0) else { return "." }
    defer { free(p) }
    return String(cString: p)
  }
}

/// A ckpt subcommand run as a child process of this executable.
enum ChildProcess {
  struct Result {
    var status: Int32
    var signal: Int32?
    var output: [UInt8]

    var describe: String {
      if let signal { return "was killed by signal \(signal)" }
      return "exited with status \(status)"
    }
  }

  /// Runs `ckpt ARGS…` (this same executable) and waits; standard error is
  /// shared, standard output too unless `captureOutput`.
  static func run(_ arguments: [String], captureOutput: Bool) -> Result {
    #if os(Linux)
      let exe = "/proc/self/exe"
    #else
      let exe = CommandLine.arguments[0]
    #endif
    var fds: [Int32] = [-1, -1]
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if captureOutput {
      guard pipe(&fds) == 0 else { return Result(status: 1, signal: nil, output: Array("pipe failed".utf8)) }
      posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
      posix_spawn_file_actions_addclose(&actions, fds[0])
      posix_spawn_file_actions_addclose(&actions, fds[1])
    }
    let argv = (["ckpt"] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, exe, &actions, nil, argv, environ)
    if captureOutput { close(fds[1]) }
    guard rc == 0 else {
      if captureOutput { close(fds[0]) }
      return Result(status: 127, signal: nil, output: Array("cannot start \(exe): \(systemErrorDescription(rc))".utf8))
    }
    var out: [UInt8] = []
    if captureOutput {
      var buffer = [UInt8](repeating: 0, count: 1 << 16)
      while true {
        let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n > 0 {
          out += buffer[0..<n]
        } else if n < 0 && errno == EINTR {
          continue
        } else {
          break
        }
      }
      close(fds[0])
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
    if status & 0x7F == 0 { return Result(status: (status >> 8) & 0xFF, signal: nil, output: out) }
    return Result(status: 128 + (status & 0x7F), signal: status & 0x7F, output: out)
  }
}
