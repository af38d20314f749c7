import SafeTensors
import StrictJSON

#if canImport(Glibc)
  import Glibc
#endif

/// The size, modification time and inode of one file: what a finished step's
/// inputs and outputs must still match for `ckpt run --resume` to skip it.
public struct FileSignature: Sendable, Equatable {
  public var path: String
  public var size: Int
  public var mtimeNanoseconds: Int
  public var inode: Int

  /// Signatures of the regular file at `path`, or of every regular file below
  /// the folder at `path` (names starting with `.`, such as journals and
  /// temporary files, excluded), sorted by path. Empty when nothing is there.
  public static func of(_ path: String) -> [FileSignature] {
    var out: [FileSignature] = []
    collect(path, depth: 0, into: &out)
    return out.sorted { $0.path < $1.path }
  }

  private static func collect(_ path: String, depth: Int, into out: inout [FileSignature]) {
    var st = stat()
    guard stat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFREG {
      out.append(FileSignature(
        path: path, size: Int(st.st_size), mtimeNanoseconds: Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec),
        inode: Int(st.st_ino)))
      return
    }
    guard (st.st_mode & S_IFMT) == S_IFDIR, depth < 8, let names = try? FileSystem.listDirectory(path) else { return }
    for n in names where !n.hasPrefix(".") { collect(path + "/" + n, depth: depth + 1, into: &out) }
  }

  var json: JSONValue {
    .object(JSONObject([
      ("path", .string(path)), ("size", .number(JSONNumber(size))), ("mtime_ns", .number(JSONNumber(mtimeNanoseconds))),
      ("inode", .number(JSONNumber(inode))),
    ]))
  }

  init(path: String, size: Int, mtimeNanoseconds: Int, inode: Int) {
    self.path = path
    self.size = size
    self.mtimeNanoseconds = mtimeNanoseconds
    self.inode = inode
  }

  init?(_ v: JSONValue) {
    guard let o = v.objectValue, let p = o["path"]?.stringValue, let s = o["size"]?.intValue, let m = o["mtime_ns"]?.intValue,
      let i = o["inode"]?.intValue
    else { return nil }
    self.init(path: p, size: s, mtimeNanoseconds: m, inode: i)
  }
}

/// A finished step as the state file records it.
public struct StepRecord: Sendable, Equatable {
  public var index: Int
  public var name: String
  public var kind: String
  /// The subcommand's arguments: a step whose arguments changed is not finished.
  public var arguments: [String]
  public var seconds: Double
  /// Signatures of what it read and wrote, taken before and after it ran.
  public var inputs: [FileSignature]
  public var outputs: [FileSignature]

  public init(index: Int, name: String, kind: String, arguments: [String], seconds: Double, inputs: [FileSignature], outputs: [FileSignature]) {
    self.index = index
    self.name = name
    self.kind = kind
    self.arguments = arguments
    self.seconds = seconds
    self.inputs = inputs
    self.outputs = outputs
  }
}

/// The state file of a pipeline (`ckpt-run-state/1`): the steps that finished.
/// Written to a temporary name and renamed after every step.
public struct PipelineState: Sendable {
  public static let schema = "ckpt-run-state/1"
  public var pipeline: String
  public var toolVersion: String
  public var records: [StepRecord]

  public init(pipeline: String, toolVersion: String, records: [StepRecord] = []) {
    self.pipeline = pipeline
    self.toolVersion = toolVersion
    self.records = records
  }

  /// The record of step `index`, if it finished.
  public func record(_ index: Int) -> StepRecord? { records.first { $0.index == index } }

  /// Adds (or replaces) a step's record.
  public mutating func finish(_ r: StepRecord) {
    records.removeAll { $0.index == r.index }
    records.append(r)
    records.sort { $0.index < $1.index }
  }

  /// The state as JSON text.
  public func encoded() -> [UInt8] {
    let steps: [JSONValue] = records.map { r in
      .object(JSONObject([
        ("index", .number(JSONNumber(r.index))), ("name", .string(r.name)), ("kind", .string(r.kind)),
        ("arguments", .array(r.arguments.map { .string($0) })), ("seconds", .number(JSONNumber(r.seconds))),
        ("inputs", .array(r.inputs.map(\.json))), ("outputs", .array(r.outputs.map(\.json))),
      ]))
    }
    let o = JSONObject([
      ("schema", .string(Self.schema)), ("pipeline", .string(pipeline)), ("tool_version", .string(toolVersion)),
      ("steps", .array(steps)),
    ])
    return Array(JSONWriter.string(.object(o), style: .pretty()).utf8) + [0x0A]
  }

  /// Parses a state file; `nil` when it is not one (it is then ignored and rewritten).
  public static func decode(_ bytes: [UInt8]) -> PipelineState? {
    guard let o = try? JSONParser.parse(bytes).objectValue, o["schema"]?.stringValue == schema,
      let p = o["pipeline"]?.stringValue, let v = o["tool_version"]?.stringValue, let steps = o["steps"]?.arrayValue
    else { return nil }
    var records: [StepRecord] = []
    for s in steps {
      guard let r = s.objectValue, let i = r["index"]?.intValue, let n = r["name"]?.stringValue, let k = r["kind"]?.stringValue,
        let args = r["arguments"]?.arrayValue?.compactMap(\.stringValue), let sec = r["seconds"]?.doubleValue,
        let ins = r["inputs"]?.arrayValue, let outs = r["outputs"]?.arrayValue
      else { return nil }
      let inputs = ins.compactMap(FileSignature.init)
      let outputs = outs.compactMap(FileSignature.init)
      guard inputs.count == ins.count, outputs.count == outs.count else { return nil }
      records.append(StepRecord(index: i, name: n, kind: k, arguments: args, seconds: sec, inputs: inputs, outputs: outputs))
    }
    return PipelineState(pipeline: p, toolVersion: v, records: records)
  }
}

extension Pipeline {
  /// Signatures of every path `step` reads.
  public func inputSignatures(_ step: PipelineStep) -> [FileSignature] {
    step.reads.flatMap { FileSignature.of($0.absolute) }
  }

  /// Signatures of every path `step` writes.
  public func outputSignatures(_ step: PipelineStep) -> [FileSignature] {
    step.writes.flatMap { FileSignature.of($0.absolute) }
  }

  /// Why a finished step must run again under `--resume`, or `nil` when it can be skipped:
  /// its record must exist with the same arguments, and what it read and wrote
  /// must still be there unchanged.
  public func resumeBlocker(_ step: PipelineStep, state: PipelineState) -> String? {
    guard let r = state.record(step.index) else { return "not finished" }
    guard r.kind == step.kind, r.arguments == step.arguments else { return "its options changed" }
    if step.writes.contains(where: { FileSignature.of($0.absolute).isEmpty }) { return "an output is missing" }
    if outputSignatures(step) != r.outputs { return "an output changed since it finished" }
    if inputSignatures(step) != r.inputs { return "an input changed since it ran" }
    return nil
  }
}
