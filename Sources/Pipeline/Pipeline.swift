import SafeTensors

#if canImport(Glibc)
  import Glibc
#endif

/// What a pipeline step kind reads and writes, so that a pipeline can be
/// checked before anything runs. The options themselves are the
/// subcommand's own (the runner parses them with the subcommand's definition).
public struct StepKind: Sendable {
  /// The step's name in a pipeline file, which is also the subcommand's.
  public var name: String
  /// Keys given as positional arguments, in order (e.g. `input`, `output`).
  public var positionals: [String]
  /// Keys whose values are paths the step reads.
  public var reads: Set<String>
  /// Keys whose values are paths the step writes (a value `-` means standard output).
  public var writes: Set<String>
  /// Arguments that make the step print JSON on standard output, added under
  /// `ckpt run --json` unless the step sets the key itself.
  public var jsonArguments: [String]
  /// The subcommand's option names (without dashes), when known: a key that
  /// is neither one of them nor a positional is reported at its line.
  public var options: Set<String>?

  public init(
    name: String, positionals: [String], reads: Set<String>, writes: Set<String>, jsonArguments: [String], options: Set<String>? = nil
  ) {
    self.options = options
    self.name = name
    self.positionals = positionals
    self.reads = reads
    self.writes = writes
    self.jsonArguments = jsonArguments
  }
}

/// A problem with a pipeline file, at a line when it has one.
public struct PipelineError: Error, Sendable, Equatable, CustomStringConvertible {
  public var file: String
  public var line: Int?
  public var message: String

  public init(file: String, line: Int?, _ message: String) {
    self.file = file
    self.line = line
    self.message = message
  }

  /// `FILE:LINE: message`, as compilers print it.
  public var description: String { file + (line.map { ":\($0)" } ?? "") + ": " + message }
}

/// A path a step reads or writes.
public struct PathUse: Sendable, Equatable {
  /// The option key that names it.
  public var key: String
  /// The path as written (variables substituted).
  public var path: String
  /// Absolute and normalized, symbolic links resolved (``resolvedPath(_:_:)``).
  public var absolute: String
  public var line: Int
}

/// One step, resolved: its subcommand arguments and the paths it reads and writes.
public struct PipelineStep: Sendable {
  /// 0-based position in the pipeline.
  public var index: Int
  /// `name:` if given, else the kind (numbered when the kind repeats).
  public var name: String
  public var kind: String
  public var line: Int
  /// Option values by key, after substitution (a sequence gives several values).
  public var options: [(key: String, values: [String], line: Int)]
  /// The subcommand's arguments, after its name.
  public var arguments: [String]
  public var reads: [PathUse]
  public var writes: [PathUse]

  /// The value of `key`, if set once.
  public func value(_ key: String) -> String? { options.first { $0.key == key }?.values.first }
}

/// A pipeline file, parsed, substituted and resolved (Docs/PIPELINES.md).
///
/// ```yaml
/// variables:
///   model: Fixtures/kimi-k2-tiny
///   work: .pipeline/fp8
/// steps:
///   - validate: {path: "${model}", data: true}   # in flow style, quote ${…}
///   - convert:
///       input: ${model}
///       output: ${work}/fp8
///       to: fp8-block
///   - verify:
///       a: ${model}
///       b: ${convert.output}                       # an earlier step's option
///       json: ${work}/verify.json
/// ```
public struct Pipeline: Sendable {
  /// The pipeline file's path.
  public var file: String
  public var steps: [PipelineStep]
  /// Every variable after substitution (`variables`, `inputs`, `outputs`, `--set`).
  public var variables: [String: String]
  /// Declared `inputs:` (must exist before the run).
  public var inputs: [PathUse]
  /// Declared `outputs:`.
  public var outputs: [PathUse]
  /// Where completed steps are recorded.
  public var statePath: String
  /// Problems found while loading (with their lines); ``check(exists:parse:)`` adds its own.
  public var problems: [PipelineError]
  /// The step kinds the pipeline was loaded with.
  public var kinds: [StepKind]

  static let topLevelKeys = ["version", "variables", "inputs", "outputs", "state", "steps"]

  /// Parses and resolves the pipeline in `text`.
  ///
  /// - Parameters:
  ///   - overrides: `--set NAME=VALUE` values, which replace the file's.
  ///   - directory: The current directory, against which relative paths resolve.
  /// - Throws: When the text is not a readable document or has no steps;
  ///   other problems (unknown keys and steps, undefined variables) are in
  ///   ``problems``, and option and path checks are ``check(exists:parse:)``.
  public static func load(
    file: String, text: String, kinds: [StepKind], overrides: [(String, String)] = [], directory: String
  ) throws(PipelineErrors) -> Pipeline {
    var problems: [PipelineError] = []
    func fail(_ line: Int?, _ m: String) { problems.append(PipelineError(file: file, line: line, m)) }
    let root: PipelineNode
    do { root = try PipelineText.parse(text) } catch {
      throw PipelineErrors([PipelineError(file: file, line: error.line, error.message)])
    }
    guard let top = root.entries else { throw PipelineErrors([PipelineError(file: file, line: root.line, "the top level must be a mapping with steps")]) }
    for e in top where !topLevelKeys.contains(e.key) {
      fail(e.line, "unknown key \"\(e.key)\" (known: \(topLevelKeys.joined(separator: ", ")))")
    }
    if let v = root.entry("version"), v.value.string != "1" { fail(v.line, "version must be 1") }

    // Variables, in order: each may use the ones before it.
    var variables: [String: String] = [:]
    let overridden = Dictionary(overrides, uniquingKeysWith: { _, b in b })
    var inputs: [PathUse] = []
    var outputs: [PathUse] = []
    for section in ["variables", "inputs", "outputs"] {
      guard let e = root.entry(section) else { continue }
      guard let entries = e.value.entries else {
        if !e.value.isNull { fail(e.line, "\(section) must be a mapping of names to values") }
        continue
      }
      for v in entries {
        guard isName(v.key) else {
          fail(v.line, "\"\(v.key)\" is not a variable name (letters, digits, _ and -)")
          continue
        }
        if variables[v.key] != nil { fail(v.line, "variable \"\(v.key)\" is defined twice") }
        let value: String
        if let o = overridden[v.key] {
          value = o
        } else if let s = v.value.string {
          switch substitute(s, variables) {
          case .success(let r): value = r
          case .failure(let m):
            fail(v.line, m.description)
            continue
          }
        } else {
          fail(v.line, "variable \"\(v.key)\" must be a single value")
          continue
        }
        variables[v.key] = value
        if section != "variables" {
          let use = PathUse(key: v.key, path: value, absolute: resolvedPath(value, directory), line: v.line)
          if section == "inputs" { inputs.append(use) } else { outputs.append(use) }
        }
      }
    }
    for (k, v) in overrides where variables[k] == nil {
      guard isName(k) else {
        fail(nil, "--set \(k): not a variable name")
        continue
      }
      variables[k] = v
    }

    // Steps.
    var steps: [PipelineStep] = []
    let byName = Dictionary(kinds.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    guard let stepsEntry = root.entry("steps") else {
      fail(root.line, "no steps")
      throw PipelineErrors(problems)
    }
    guard let items = stepsEntry.value.items, !items.isEmpty else {
      fail(stepsEntry.line, "steps must be a non-empty sequence")
      throw PipelineErrors(problems)
    }
    var kindCounts: [String: Int] = [:]
    for item in items { if let k = stepKind(item) { kindCounts[k.key, default: 0] += 1 } }
    var seen: [String: Int] = [:]
    var stepVariables = variables
    for (index, item) in items.enumerated() {
      guard let sk = stepKind(item) else {
        fail(item.line, "a step is a mapping with one step kind, e.g. `- convert: {input: …, output: …, to: fp8-block}`")
        continue
      }
      let (kindName, body, explicitName) = (sk.key, sk.body, sk.name)
      guard let kind = byName[kindName] else {
        fail(item.line, "unknown step \"\(kindName)\" (known: \(kinds.map(\.name).joined(separator: ", ")))")
        continue
      }
      seen[kindName, default: 0] += 1
      let name = explicitName ?? (kindCounts[kindName]! > 1 ? "\(kindName)\(seen[kindName]!)" : kindName)
      if steps.contains(where: { $0.name == name }) {
        fail(item.line, "two steps are named \"\(name)\"; give them distinct `name:`s")
      }
      guard let entries = body.entries ?? (body.isNull ? [] : nil) else {
        fail(body.line, "the options of step \(name) must be a mapping")
        continue
      }
      var options: [(key: String, values: [String], line: Int)] = []
      for e in entries {
        if options.contains(where: { $0.key == e.key }) { fail(e.line, "option \"\(e.key)\" given twice") }
        let raw: [String]
        if let s = e.value.string {
          raw = [s]
        } else if let list = e.value.items, list.allSatisfy({ $0.string != nil }) {
          raw = list.compactMap(\.string)
        } else if e.value.isNull {
          fail(e.line, "option \"\(e.key)\" of step \(name) has no value")
          continue
        } else {
          fail(e.line, "option \"\(e.key)\" of step \(name) must be a value or a list of values")
          continue
        }
        var values: [String] = []
        for r in raw {
          switch substitute(r, stepVariables) {
          case .success(let v): values.append(v)
          case .failure(let m):
            fail(e.line, m.description)
            values.append(r)  // kept as written, so later checks do not pile up on it
          }
        }
        options.append((e.key, values, e.line))
      }
      // Positionals first, in the subcommand's order, then options in file order.
      var arguments: [String] = []
      var positional: [String] = []
      for p in kind.positionals {
        guard let o = options.first(where: { $0.key == p }) else {
          fail(item.line, "step \(name) needs \(kind.positionals.joined(separator: " and ")) (missing \(p))")
          continue
        }
        guard o.values.count == 1 else {
          fail(o.line, "\(p) of step \(name) takes one value")
          continue
        }
        positional.append(o.values[0])
      }
      for o in options where !kind.positionals.contains(o.key) {
        let flag = (o.key.count == 1 ? "-" : "--") + o.key
        for v in o.values {
          switch v {
          case "true": arguments.append(flag)
          case "false": break
          default: arguments += [flag, v]
          }
        }
      }
      arguments += positional.contains { $0.hasPrefix("-") } ? ["--"] + positional : positional
      func uses(_ keys: Set<String>) -> [PathUse] {
        options.filter { keys.contains($0.key) }.flatMap { o in
          o.values.filter { $0 != "-" && $0 != "true" && $0 != "false" }.map {
            PathUse(key: o.key, path: $0, absolute: resolvedPath($0, directory), line: o.line)
          }
        }
      }
      let step = PipelineStep(
        index: index, name: name, kind: kindName, line: item.line, options: options, arguments: arguments,
        reads: uses(kind.reads), writes: uses(kind.writes))
      steps.append(step)
      // Later steps can use this step's options: ${name.key}.
      for o in options where o.values.count == 1 { stepVariables[name + "." + o.key] = o.values[0] }
    }
    var statePath = ""
    if let s = root.entry("state") {
      if let v = s.value.string {
        switch substitute(v, stepVariables) {
        case .success(let r): statePath = resolvedPath(r, directory)
        case .failure(let m): fail(s.line, m.description)
        }
      } else {
        fail(s.line, "state must be a path")
      }
    } else if let first = outputs.first ?? steps.lazy.flatMap(\.writes).first {
      // Beside the first output: in its folder, named after the pipeline.
      var stem = FileSystem.split(file).name
      if let ext = [".yaml", ".yml", ".json"].first(where: { stem.hasSuffix($0) }) { stem = String(stem.dropLast(ext.count)) }
      let dir = FileSystem.split(first.absolute).directory
      statePath = (dir == "/" ? "" : dir) + "/.ckpt-run." + stem + ".json"
    } else {
      fail(stepsEntry.line, "the pipeline writes nothing, so there is nowhere to keep its state; add `state: PATH`")
    }
    return Pipeline(
      file: file, steps: steps, variables: stepVariables, inputs: inputs, outputs: outputs, statePath: statePath,
      problems: problems.sorted { ($0.line ?? 0) < ($1.line ?? 0) }, kinds: kinds)
  }

  /// The step kind, its options and an explicit `name:` of a step item:
  /// `- convert: {…}`, or `- convert: {…}` with `name: fp8` beside it.
  static func stepKind(_ item: PipelineNode) -> (key: String, body: PipelineNode, name: String?)? {
    guard let entries = item.entries else { return nil }
    let named = entries.first { $0.key == "name" }?.value.string
    let rest = entries.filter { $0.key != "name" }
    guard rest.count == 1 else { return nil }
    return (rest[0].key, rest[0].value, named)
  }

  static func isName(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.allSatisfy { c in
      (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D
    }
  }

  /// Replaces `${name}` (and `${step.key}`) from `variables`; `$$` is `$`.
  static func substitute(_ s: String, _ variables: [String: String]) -> Result<String, SubstitutionError> {
    guard s.contains("$") else { return .success(s) }
    var out = ""
    var i = s.startIndex
    while i < s.endIndex {
      let c = s[i]
      guard c == "$" else {
        out.append(c)
        i = s.index(after: i)
        continue
      }
      let next = s.index(after: i)
      if next < s.endIndex && s[next] == "$" {
        out.append("$")
        i = s.index(after: next)
        continue
      }
      guard next < s.endIndex, s[next] == "{", let close = s[next...].firstIndex(of: "}") else {
        return .failure(SubstitutionError("a lone $ in \"\(s)\" (write ${name} for a variable, $$ for a dollar)"))
      }
      let name = String(s[s.index(after: next)..<close])
      guard let v = variables[name] else {
        let known = variables.keys.filter { !$0.contains(".") }.sorted().joined(separator: ", ")
        return .failure(SubstitutionError("undefined variable ${\(name)}" + (known.isEmpty ? "" : " (variables: \(known); an earlier step's option is ${step.option})")))
      }
      out += v
      i = s.index(after: close)
    }
    return .success(out)
  }

  struct SubstitutionError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
  }
}

extension Result where Failure == Pipeline.SubstitutionError {
  fileprivate static func failure(_ m: String) -> Self { .failure(Pipeline.SubstitutionError(m)) }
}

/// Every problem found in a pipeline file.
public struct PipelineErrors: Error, Sendable, CustomStringConvertible {
  public var errors: [PipelineError]
  public init(_ errors: [PipelineError]) {
    self.errors = errors.sorted { ($0.line ?? 0) < ($1.line ?? 0) }
  }
  public var description: String { errors.map(\.description).joined(separator: "\n") }
}

// MARK: Paths

/// `path` made absolute against `directory` and normalized lexically
/// (`.` and `..` removed, repeated slashes collapsed).
public func absolutePath(_ path: String, _ directory: String) -> String {
  let joined = path.hasPrefix("/") ? path : directory + "/" + path
  var parts: [Substring] = []
  for p in joined.split(separator: "/", omittingEmptySubsequences: true) {
    if p == "." { continue }
    if p == ".." {
      if !parts.isEmpty { parts.removeLast() }
      continue
    }
    parts.append(p)
  }
  return "/" + parts.joined(separator: "/")
}

/// Whether `a` is `b` or inside it (both absolute and normalized).
public func isSameOrInside(_ a: String, _ b: String) -> Bool {
  a == b || a.hasPrefix(b == "/" ? "/" : b + "/")
}

/// `path` made absolute and normalized (``absolutePath(_:_:)``), with symbolic
/// links resolved in its longest existing part, so that a path reached
/// through a link compares equal to the real one.
public func resolvedPath(_ path: String, _ directory: String) -> String {
  let lexical = absolutePath(path, directory)
  var head = lexical
  var tail: [String] = []
  while head != "/" {
    if let p = realpath(head, nil) {
      defer { free(p) }
      let real = String(cString: p)
      return tail.isEmpty ? real : (real == "/" ? "" : real) + "/" + tail.reversed().joined(separator: "/")
    }
    let (dir, name) = FileSystem.split(head)
    tail.append(name)
    head = dir
  }
  return lexical
}

extension Pipeline {
  /// Checks what can be checked before anything runs, and returns every problem:
  /// - each step's arguments parse with its subcommand's own definition (`parse`
  ///   returns the parser's message, or `nil`);
  /// - every path a step reads exists, or an earlier step writes it (a path a
  ///   later step writes is refused even if it exists now);
  /// - no step writes into (or over) a path the pipeline reads but does not
  ///   produce, and no two steps write the same path;
  /// - declared `inputs:` exist.
  public func check(
    exists: (String) -> Bool, parse: (PipelineStep) -> String?
  ) -> [PipelineError] {
    var problems = self.problems
    func fail(_ line: Int?, _ m: String) { problems.append(PipelineError(file: file, line: line, m)) }
    for i in inputs where !exists(i.path) {
      fail(i.line, "input \(i.key) (\(i.path)) does not exist")
    }
    for s in steps {
      if let kind = kinds.first(where: { $0.name == s.kind }), let known = kind.options {
        let unknown = s.options.filter { !known.contains($0.key) && !kind.positionals.contains($0.key) }
        for o in unknown {
          let names = (kind.positionals + known.sorted()).joined(separator: ", ")
          fail(o.line, "step \(s.name): unknown option \"\(o.key)\" (\(s.kind) takes: \(names))")
        }
        if !unknown.isEmpty { continue }  // the parser would only repeat it
      }
      if let m = parse(s) {
        let line = Self.lineOfOption(in: m, step: s) ?? s.line
        fail(line, "step \(s.name): \(m)")
      }
    }
    // Paths produced by steps, with the step that writes each.
    var writer: [String: PipelineStep] = [:]
    for s in steps {
      for w in s.writes {
        if let other = writer[w.absolute] {
          fail(w.line, "step \(s.name) writes \(w.path), which step \(other.name) also writes")
        } else {
          writer[w.absolute] = s
        }
      }
    }
    func producer(of path: String) -> PipelineStep? {
      writer.first { isSameOrInside(path, $0.key) }?.value
    }
    var external: [PathUse] = inputs
    for s in steps {
      for r in s.reads where !r.path.contains("${") {  // an undefined variable is already reported
        if let p = producer(of: r.absolute) {
          if p.index >= s.index {
            fail(r.line, "step \(s.name) reads \(r.path), which step \(p.name) writes \(p.index == s.index ? "in the same step" : "later")")
          }
        } else if !exists(r.path) {
          fail(r.line, "step \(s.name) reads \(r.path), which does not exist and no earlier step writes")
        } else {
          external.append(r)
        }
      }
    }
    var seenExternal = Set<String>()
    external = external.filter { seenExternal.insert($0.absolute).inserted }
    for s in steps {
      for w in s.writes {
        for r in external where isSameOrInside(w.absolute, r.absolute) || isSameOrInside(r.absolute, w.absolute) {
          let how = w.absolute == r.absolute ? "is" : isSameOrInside(w.absolute, r.absolute) ? "is inside" : "contains"
          fail(w.line, "output-inside-input: step \(s.name) writes \(w.path), which \(how) the input \(r.path) (line \(r.line)); inputs are never modified")
        }
      }
    }
    return problems.sorted { ($0.line ?? 0) < ($1.line ?? 0) }
  }

  /// The line of the option a parser message names (`'--foo'`), if any.
  static func lineOfOption(in message: String, step: PipelineStep) -> Int? {
    for o in step.options {
      let flag = (o.key.count == 1 ? "-" : "--") + o.key
      if message.contains("'\(flag)'") || message.contains("\(flag) ") || message.hasSuffix(flag) { return o.line }
    }
    return nil
  }
}
