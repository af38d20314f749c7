import Checkpoint
import CompressedTensors
import QuantKernels
import SafeTensors
import StrictJSON
import Synchronization

/// What ``Validator`` checks beyond the headers.
public struct ValidationOptions: Sendable {
  /// Scan every tensor's data: NaN/Inf, bad scales, padding nibbles.
  public var scanData = false
  /// A `sha256sum`-format file whose digests the shards must match.
  public var checksumsFile: String? = nil
  /// Threads to use for per-shard work.
  public var jobs = Parallel.defaultJobs
  /// Called with byte counts as data is read (for progress display).
  public var progress: (@Sendable (Int) -> Void)? = nil
  /// Keep the validator's tables alive until the process exits instead of
  /// freeing them, for short-lived command-line processes that exit right
  /// after printing (freeing ~200k names of a Kimi-sized checkpoint costs
  /// ~0.2 s). Leave `false` in long-lived processes.
  public var skipTeardown = false

  /// Creates options; the defaults check headers only.
  public init(scanData: Bool = false, checksumsFile: String? = nil, jobs: Int = Parallel.defaultJobs) {
    self.scanData = scanData
    self.checksumsFile = checksumsFile
    self.jobs = jobs
  }
}

/// One shard as the validator saw it.
public struct ShardSummary: Sendable {
  /// File name relative to the checkpoint root.
  public let name: String
  /// File size in bytes, or `nil` when the file is missing.
  public let bytes: Int?
  /// Tensors in the header (0 when the header is invalid).
  public let tensors: Int
  /// Whether the header passed every reader rule.
  public let headerValid: Bool
  /// The SHA-256, when checksums were computed.
  public let sha256: String?
}

/// Everything ``Validator/validate(_:options:)`` found.
public struct ValidationReport: Sendable {
  /// The checkpoint's path.
  public let path: String
  /// Every shard looked at.
  public let shards: [ShardSummary]
  /// Every problem, in a stable order (by file, then tensor, then code).
  public let problems: [Problem]
  /// Tensors seen across all valid shard headers.
  public let tensorCount: Int
  /// Quantized (compressed-tensors) modules checked.
  public let quantizedModules: Int
  /// Bytes of tensor data scanned (with `scanData`).
  public let scannedBytes: Int
  /// Bytes hashed (with a checksums file).
  public let hashedBytes: Int
  /// Whether the config was recognized as DeepSeek-V3 family and its inventory checked.
  public let inventoryChecked: Bool

  /// Problems of severity error.
  public var errors: [Problem] { problems.filter { $0.severity == .error } }
  /// Problems of severity warning.
  public var warnings: [Problem] { problems.filter { $0.severity == .warning } }
  /// Whether no errors were found.
  public var isValid: Bool { errors.isEmpty }
}

/// Validates checkpoints: structure, index, quantization tensors, inventory,
/// and optionally data and checksums. Reports every problem, not only the first.
public enum Validator {
  /// The compressed-tensors tensor suffixes of a quantized Linear.
  public static let quantSuffixes = ["weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx"]

  /// Validates the checkpoint.
  public static func validate(_ checkpoint: Checkpoint, options: ValidationOptions = ValidationOptions()) -> ValidationReport {
    var run = ValidationRun(checkpoint: checkpoint, options: options)
    return run.execute()
  }
}

/// Holds values that a short-lived process never frees (see
/// ``ValidationOptions/skipTeardown``).
public enum Teardown {
  private final class Box: @unchecked Sendable {
    let value: Any
    init(_ value: Any) { self.value = value }
  }
  private static let kept = Mutex<[Box]>([])

  /// Keeps `value` alive until the process exits.
  public static func keep(_ value: Any) { kept.withLock { $0.append(Box(value)) } }
}

/// Collects problems from one validation phase (phases run concurrently).
final class ProblemSink: @unchecked Sendable {
  // @unchecked: each sink is used by exactly one thread at a time.
  var problems: [Problem] = []
  var quantizedModules = 0
  var inventoryChecked = false

  func report(_ code: String, _ file: String?, _ tensor: String?, _ message: String, _ severity: Problem.Severity = .error) {
    problems.append(Problem(code, file: file, tensor: tensor, message, severity: severity))
  }
}

/// The weight-like tensors of one module (`X.weight`, `X.weight_packed`, …).
struct ModuleParts {
  var weight, packed, scale, shape, zeroPoint, gIdx, scaleInv: Located?

  /// The part for a suffix; other suffixes are ignored.
  subscript(suffix: String) -> Located? {
    get {
      switch suffix {
      case "weight": weight
      case "weight_packed": packed
      case "weight_scale": scale
      case "weight_shape": shape
      case "weight_zero_point": zeroPoint
      case "weight_g_idx": gIdx
      case "weight_scale_inv": scaleInv
      default: nil
      }
    }
    set {
      switch suffix {
      case "weight": weight = newValue
      case "weight_packed": packed = newValue
      case "weight_scale": scale = newValue
      case "weight_shape": shape = newValue
      case "weight_zero_point": zeroPoint = newValue
      case "weight_g_idx": gIdx = newValue
      case "weight_scale_inv": scaleInv = newValue
      default: break
      }
    }
  }

  /// Whether any compressed-tensors part is present.
  var isCompressed: Bool { packed != nil || scale != nil || shape != nil || zeroPoint != nil || gIdx != nil }

  /// Any one part, for naming a shard in a message.
  var any: Located? { packed ?? scale ?? shape ?? weight ?? zeroPoint ?? gIdx ?? scaleInv }
}

/// A tensor with the shard that holds it.
struct Located: Sendable {
  let shard: String
  let info: TensorInfo
}

struct ValidationRun {
  let checkpoint: Checkpoint
  let options: ValidationOptions
  var problems: [Problem] = []
  var headers: [String: SafeTensorsHeader] = [:]
  var sizes: [String: Int] = [:]
  /// Each tensor name's first location (in shard order).
  var tensors: [String: Located] = [:]
  /// Further locations of names that appear in more than one shard.
  var extraPlaces: [String: [Located]] = [:]
  var mappings: [String: MappedFile] = [:]
  var quantizedModules = 0
  var scannedBytes = 0
  var hashedBytes = 0
  var digests: [String: String] = [:]
  var inventoryChecked = false

  init(checkpoint: Checkpoint, options: ValidationOptions) {
    self.checkpoint = checkpoint
    self.options = options
  }

  mutating func report(_ code: String, _ file: String?, _ tensor: String?, _ message: String, _ severity: Problem.Severity = .error) {
    problems.append(Problem(code, file: file, tensor: tensor, message, severity: severity))
  }

  mutating func execute() -> ValidationReport {
    problems.append(contentsOf: checkpoint.loadProblems)
    readHeaders()
    for (name, header) in headers {
      // A file that changed size since its header was read is not mapped (reads would fault).
      if let m = try? MappedFile(path: checkpoint.pathOf(name)), m.count == header.fileSize { mappings[name] = m }
    }
    let quantization = loadQuantization()
    // The three structural phases only read the tables: run them concurrently.
    let run = self
    let sinks = Parallel.map(3, jobs: options.jobs) { phase -> ProblemSink in
      let sink = ProblemSink()
      switch phase {
      case 0: run.checkModules(quantization, into: sink)
      case 1: run.checkInventory(quantization, into: sink)
      default: run.checkIndex(into: sink)
      }
      return sink
    }
    for sink in sinks {
      problems.append(contentsOf: sink.problems)
      quantizedModules += sink.quantizedModules
      inventoryChecked = inventoryChecked || sink.inventoryChecked
    }
    if options.scanData { scanData() }
    if let file = options.checksumsFile { checkChecksums(file) }

    let order: (Problem, Problem) -> Bool = {
      ($0.severity == .error ? 0 : 1, $0.file ?? "", $0.tensor ?? "", $0.code, $0.message)
        < ($1.severity == .error ? 0 : 1, $1.file ?? "", $1.tensor ?? "", $1.code, $1.message)
    }
    if options.skipTeardown { Teardown.keep(self) }
    let all = checkpoint.shards + checkpoint.unindexedShards
    let summaries = all.map { name in
      ShardSummary(
        name: name, bytes: sizes[name], tensors: headers[name]?.tensors.count ?? 0,
        headerValid: headers[name] != nil, sha256: digests[name])
    }
    return ValidationReport(
      path: checkpoint.path, shards: summaries, problems: Array(Set(problems)).sorted(by: order),
      tensorCount: tensors.count + extraPlaces.values.reduce(0) { $0 + $1.count }, quantizedModules: quantizedModules,
      scannedBytes: scannedBytes, hashedBytes: hashedBytes, inventoryChecked: inventoryChecked)
  }

  // MARK: Headers

  mutating func readHeaders() {
    let names = checkpoint.shards + checkpoint.unindexedShards
    let root = checkpoint
    let results = Parallel.map(names.count, jobs: options.jobs) { i -> (Int?, SafeTensorsHeader?, [Problem]) in
      let name = names[i]
      let path = root.pathOf(name)
      guard let size = FileSystem.fileSize(path) else {
        let listed = root.index != nil
        return (nil, nil, [Problem(listed ? "missing-shard" : "io-error", file: name, listed ? "the index names this shard but the file is missing" : "cannot read the file")])
      }
      do throws(SafeTensorsError) {
        let (header, errors) = try SafeTensorsHeader.inspect(path)
        return (size, header, errors.map { Problem($0, file: name) })
      } catch {
        return (size, nil, [Problem(error, file: name)])
      }
    }
    tensors.reserveCapacity(results.reduce(0) { $0 + ($1.1?.tensors.count ?? 0) })
    for (name, (size, header, found)) in zip(names, results) {
      // An archived shard's size is that of the shard it restores.
      sizes[name] = checkpoint.archivedShards.contains(name) ? header?.fileSize ?? size : size
      problems.append(contentsOf: found)
      guard let header else { continue }
      headers[name] = header
      for t in header.tensors {
        let here = Located(shard: name, info: t)
        if tensors[t.name] == nil { tensors[t.name] = here } else { extraPlaces[t.name, default: []].append(here) }
      }
    }
    for name in checkpoint.unindexedShards {
      report("unindexed-shard", name, nil, "a .safetensors file in the folder that \(ShardIndex.fileName) does not name", .warning)
    }
    for (name, extras) in extraPlaces {
      let places = [tensors[name]!] + extras
      // Blame the copies the index does not point at (or all but the first).
      let home = checkpoint.index?.shard(for: name).flatMap { s in places.first { $0.shard == s } } ?? places[0]
      for extra in places where extra.shard != home.shard {
        report("tensor-in-two-shards", extra.shard, name, "tensor \"\(name)\" is also in \(home.shard)")
      }
    }
  }

  // MARK: Index

  func checkIndex(into sink: ProblemSink) {
    guard let index = checkpoint.index else { return }
    var matched = 0
    var lastShard = ""
    var lastShardValid = false
    for (tensor, shard) in index.weightMap {
      if shard != lastShard {
        lastShard = shard
        lastShardValid = headers[shard] != nil
      }
      guard lastShardValid else { continue }  // missing or broken shard, already reported
      guard let first = tensors[tensor] else {
        sink.report("index-tensor-missing", shard, tensor, "the index puts tensor \"\(tensor)\" in this shard, but no shard has it")
        continue
      }
      matched += 1
      if first.shard == shard { continue }
      let extras = extraPlaces[tensor] ?? []
      if extras.contains(where: { $0.shard == shard }) { continue }
      sink.report("index-wrong-shard", shard, tensor, "\(ShardIndex.fileName) puts tensor \"\(tensor)\" in this shard, but it is in \(first.shard)")
    }
    // weight_map has no duplicate keys (the parser rejects them), so when every
    // tensor found in the shards was matched, none can be missing from the index.
    let unindexed = Set(checkpoint.unindexedShards)
    let indexedShardsValid = checkpoint.shards.allSatisfy { headers[$0] != nil }
    for (name, first) in tensors where !(indexedShardsValid && matched == tensors.count) && index.shard(for: name) == nil {
      for p in [first] + (extraPlaces[name] ?? []) where !unindexed.contains(p.shard) {
        sink.report("tensor-not-in-index", p.shard, name, "tensor \"\(name)\" is not in \(ShardIndex.fileName)")
      }
    }
    if let total = index.totalSize, headers.count == checkpoint.shards.count {
      // Hugging Face counts each tensor's data once; some writers count the
      // files instead. Accept either, and the sum over the tensors the index lists.
      let distinct = tensors.values.reduce(0) { $0 + $1.info.byteCount }
      let listed = index.weightMap.reduce(0) { $0 + (tensors[$1.tensor]?.info.byteCount ?? 0) }
      let fileBytes = checkpoint.shards.compactMap { sizes[$0] }.reduce(0, +)
      if ![distinct, listed, fileBytes].contains(total) {
        sink.report("total-size-mismatch", ShardIndex.fileName, nil, "metadata.total_size is \(total), but the shards hold \(distinct) bytes of tensor data (\(fileBytes) bytes of files)")
      }
    }
  }

  // MARK: Quantized modules

  mutating func loadQuantization() -> QuantizationSource? {
    do { return try checkpoint.quantization() } catch {
      problems.append(contentsOf: error.problems)
      return nil
    }
  }

  /// Splits `X.suffix` into module `X` and `suffix` for weight-like suffixes
  /// (`weight`, `weight_packed`, …); `nil` for other names.
  static func splitModule(_ name: String) -> (module: String, suffix: Substring)? {
    guard let dot = name.utf8.lastIndex(of: UInt8(ascii: ".")) else { return nil }
    let suffix = name[name.utf8.index(after: dot)...]
    guard suffix.utf8.starts(with: "weight".utf8) else { return nil }
    return (String(name[..<dot]), suffix)
  }

  func checkModules(_ quantization: QuantizationSource?, into sink: ProblemSink) {
    var modules: [String: ModuleParts] = [:]
    modules.reserveCapacity(tensors.count / 2)
    for (name, place) in tensors {
      guard let (module, suffix) = Self.splitModule(name) else { continue }
      modules[module, default: ModuleParts()][String(suffix)] = place
    }
    var ctConfig: QuantizationConfig? = nil
    var fp8Block: [Int]? = nil
    switch quantization {
    case .compressedTensors(_, let c): ctConfig = c
    case .other(_, let json):
      if json["quant_method"]?.stringValue == "fp8" {
        fp8Block = json["weight_block_size"]?.arrayValue?.compactMap(\.intValue) ?? [128, 128]
      }
    case nil: break
    }
    var reportedMissingConfig = false
    // Order does not matter: problems are sorted once at the end.
    for (module, parts) in modules {
      let isCT = parts.isCompressed
      if isCT {
        sink.quantizedModules += 1
        let args: QuantizationArgs?
        if let ctConfig {
          let scheme = ctConfig.scheme(forModule: module, isLinear: DeepSeekV3Modules.isLinear(module))
          if scheme == nil {
            sink.report("unexpected-quantized-module", parts.any!.shard, module + ".weight_packed", "module \"\(module)\" is stored quantized, but quantization_config does not target it (or ignores it)")
          }
          args = scheme?.weights ?? ctConfig.configGroups.first?.weights
        } else {
          if !reportedMissingConfig && !checkpoint.loadProblems.contains(where: { $0.code == "invalid-config" }) {
            sink.report(
              "missing-quantization-config", Checkpoint.configFileName, module + ".weight_packed",
              "compressed-tensors tensors are present but there is no compressed-tensors quantization_config; assuming 4-bit, group 32, symmetric",
              checkpoint.isSingleFile ? .warning : .error)
            reportedMissingConfig = true
          }
          args = nil
        }
        checkCompressedModule(module, parts, args, into: sink)
      } else if let w = parts["weight"], w.info.dtype == .f8E4M3 || parts["weight_scale_inv"] != nil {
        checkFP8Module(module, parts, block: fp8Block ?? [128, 128], into: sink)
      } else if parts["weight_scale_inv"] != nil && parts["weight"] == nil {
        sink.report("missing-tensor", parts["weight_scale_inv"]!.shard, module + ".weight", "\"\(module).weight_scale_inv\" has no \"\(module).weight\" beside it")
      }
    }
  }

  /// The values of a `weight_shape` tensor; `nil` when it is not I32/I64 of shape [2].
  ///
  /// - Throws: When its bytes cannot be read (a damaged archive chunk).
  func weightShapeValues(_ t: Located) throws(SafeTensorsError) -> [Int]? {
    guard t.info.shape == [2], t.info.dtype == .i32 || t.info.dtype == .i64 else { return nil }
    guard let map = mapping(t.shard) else { return nil }
    let header = headers[t.shard]!
    let range = (header.dataStart + t.info.begin)..<(header.dataStart + t.info.end)
    return try map.withPreparedBytes(range) { DataScanner.decodeWeightShape($0, t.info.dtype) }
  }

  func mapping(_ shard: String) -> MappedFile? { mappings[shard] }

  func checkCompressedModule(_ module: String, _ parts: ModuleParts, _ args: QuantizationArgs?, into sink: ProblemSink) {
    let numBits = args?.numBits ?? 4
    let packFactor = 32 / max(1, numBits)
    let strategy = args?.strategy ?? .group
    let group = args?.groupSize ?? 32
    let symmetric = args?.symmetric ?? true
    let anyShard = parts.any!.shard
    func name(_ s: String) -> String { "\(module).\(s)" }
    func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / max(b, 1) }

    if let w = parts["weight"] {
      sink.report("stray-weight", w.shard, name("weight"), "plain \"\(name("weight"))\" sits beside the quantized tensors of the same module")
    }
    let packed = parts["weight_packed"]
    let scale = parts["weight_scale"]
    let shapeT = parts["weight_shape"]
    if packed == nil { sink.report("missing-weight-packed", anyShard, name("weight_packed"), "quantized module \"\(module)\" has no weight_packed") }
    if scale == nil { sink.report("missing-weight-scale", anyShard, name("weight_scale"), "quantized module \"\(module)\" has no weight_scale") }
    if shapeT == nil { sink.report("missing-weight-shape", anyShard, name("weight_shape"), "quantized module \"\(module)\" has no weight_shape") }

    var packedOK = true
    if let p = packed {
      if p.info.dtype != .i32 {
        sink.report("bad-packed-dtype", p.shard, name("weight_packed"), "weight_packed is \(p.info.dtype), expected I32")
        packedOK = false
      } else if p.info.shape.count != 2 {
        sink.report("bad-packed-shape", p.shard, name("weight_packed"), "weight_packed has shape \(p.info.shape), expected rank 2 [out, ceil(in/\(packFactor))]")
        packedOK = false
      }
    }
    var scaleOK = true
    if let s = scale {
      if ![.bf16, .f16, .f32].contains(s.info.dtype) {
        sink.report("bad-scale-dtype", s.shard, name("weight_scale"), "weight_scale is \(s.info.dtype), expected BF16, F16 or F32")
        scaleOK = false
      } else if s.info.shape.count != 2 && strategy != .tensor {
        sink.report("bad-scale-shape", s.shard, name("weight_scale"), "weight_scale has shape \(s.info.shape), expected rank 2")
        scaleOK = false
      }
    }
    var dims: [Int]? = nil
    if let st = shapeT {
      do throws(SafeTensorsError) {
        if let v = try weightShapeValues(st), v.allSatisfy({ $0 > 0 && $0 <= 1 << 40 }) {
          dims = v
        } else {
          sink.report("bad-weight-shape", st.shard, name("weight_shape"), "weight_shape must be I32 or I64 of shape [2] holding [out, in] > 0; found \(st.info.dtype) \(st.info.shape)")
        }
      } catch {
        sink.report(error.code, st.shard, error.tensor ?? st.info.name, error.message)
      }
    }
    func expectedScale(_ out: Int, _ inF: Int) -> [Int] {
      switch strategy {
      case .channel: [out, 1]
      case .tensor: [1]
      default: [out, ceilDiv(inF, group)]
      }
    }
    if let d = dims, let st = shapeT {
      let (out, inF) = (d[0], d[1])
      let packedMatches = packed.map { !packedOK || $0.info.shape == [out, ceilDiv(inF, packFactor)] } ?? true
      let scaleMatches = scale.map { s in
        !scaleOK || s.info.shape == expectedScale(out, inF) || (strategy == .tensor && s.info.shape.reduce(1, *) == 1)
      } ?? true
      if !packedMatches && !scaleMatches {
        sink.report("bad-weight-shape", st.shard, name("weight_shape"), "weight_shape says [\(out), \(inF)], which matches neither weight_packed \(packed!.info.shape) nor weight_scale \(scale!.info.shape)")
      } else if !packedMatches {
        sink.report("bad-packed-shape", packed!.shard, name("weight_packed"), "weight_packed has shape \(packed!.info.shape), expected [\(out), \(ceilDiv(inF, packFactor))] for weight_shape [\(out), \(inF)]")
      } else if !scaleMatches {
        sink.report("bad-scale-shape", scale!.shard, name("weight_scale"), "weight_scale has shape \(scale!.info.shape), expected \(expectedScale(out, inF)) for weight_shape [\(out), \(inF)] and \(strategy.rawValue) strategy (group \(group))")
      }
      if strategy == .group && inF % group != 0 {
        sink.report("bad-weight-shape", st.shard, name("weight_shape"), "input size \(inF) is not a multiple of the group size \(group)", .warning)
      }
      // Zero points and activation-order indices.
      let zp = parts["weight_zero_point"]
      if !symmetric {
        if let zp {
          let want = [ceilDiv(out, packFactor), expectedScale(out, inF).last ?? 1]
          if zp.info.dtype != .i32 || zp.info.shape != want {
            sink.report("bad-zero-point", zp.shard, name("weight_zero_point"), "weight_zero_point is \(zp.info.dtype) \(zp.info.shape), expected I32 \(want)")
          }
        } else {
          sink.report("missing-zero-point", anyShard, name("weight_zero_point"), "the scheme is asymmetric but \"\(module)\" has no weight_zero_point")
        }
      } else if let zp {
        sink.report("unexpected-zero-point", zp.shard, name("weight_zero_point"), "the scheme is symmetric but \"\(module)\" has a weight_zero_point")
      }
      let gidx = parts["weight_g_idx"]
      if args?.actorder != nil {
        if let g = gidx {
          if g.info.dtype != .i32 || g.info.shape != [inF] {
            sink.report("bad-g-idx", g.shard, name("weight_g_idx"), "weight_g_idx is \(g.info.dtype) \(g.info.shape), expected I32 [\(inF)]")
          }
        } else {
          sink.report("missing-g-idx", anyShard, name("weight_g_idx"), "the scheme uses activation ordering but \"\(module)\" has no weight_g_idx")
        }
      } else if let g = gidx {
        sink.report("unexpected-g-idx", g.shard, name("weight_g_idx"), "weight_g_idx is present but the scheme has no activation ordering")
      }
    } else if dims == nil, shapeT == nil, let p = packed, let s = scale, packedOK, scaleOK, p.info.shape.first != s.info.shape.first {
      sink.report("bad-scale-shape", s.shard, name("weight_scale"), "weight_scale has \(s.info.shape.first ?? 0) rows but weight_packed has \(p.info.shape.first ?? 0)")
    }
  }

  func checkFP8Module(_ module: String, _ parts: ModuleParts, block: [Int], into sink: ProblemSink) {
    let w = parts["weight"]
    let s = parts["weight_scale_inv"]
    guard let w else { return }
    guard w.info.dtype == .f8E4M3 else {
      sink.report("bad-fp8-dtype", w.shard, module + ".weight", "\"\(module).weight\" is \(w.info.dtype) but has a weight_scale_inv; expected F8_E4M3")
      return
    }
    guard let s else {
      sink.report("missing-weight-scale-inv", w.shard, module + ".weight_scale_inv", "FP8 weight \"\(module).weight\" has no weight_scale_inv")
      return
    }
    let bn = block.first ?? 128
    let bk = block.count > 1 ? block[1] : bn
    guard w.info.shape.count == 2 else {
      sink.report("bad-shape", w.shard, module + ".weight", "FP8 block weight has shape \(w.info.shape), expected rank 2")
      return
    }
    let want = [(w.info.shape[0] + bn - 1) / bn, (w.info.shape[1] + bk - 1) / bk]
    if s.info.dtype != .f32 || s.info.shape != want {
      sink.report("bad-scale-shape", s.shard, module + ".weight_scale_inv", "weight_scale_inv is \(s.info.dtype) \(s.info.shape), expected F32 \(want) for \(w.info.shape) in \(bn)×\(bk) blocks")
    }
  }

  // MARK: Inventory

  func checkInventory(_ quantization: QuantizationSource?, into sink: ProblemSink) {
    guard let config = checkpoint.textConfig else { return }
    let prefix = tensors.keys.contains(where: { $0.hasPrefix("language_model.") }) ? "language_model." : ""
    let inventory: DeepSeekInventory
    do {
      guard let inv = try DeepSeekInventory(config: config, prefix: prefix) else { return }
      inventory = inv
    } catch {
      sink.problems.append(contentsOf: error.problems)
      return
    }
    sink.inventoryChecked = true
    var ct: QuantizationConfig? = nil
    if case .compressedTensors(_, let c) = quantization { ct = c }
    for linear in inventory.linears {
      let n = linear.name
      let quantizedExpected = ct?.scheme(forModule: n, isLinear: true) != nil
      let packedPresent = tensors[n + ".weight_packed"] != nil
      if let w = tensors[n + ".weight"], !packedPresent {
        if quantizedExpected {
          sink.report("not-quantized", w.shard, n + ".weight", "quantization_config targets \"\(n)\" but it is stored as a plain \(w.info.dtype) weight")
        }
        if w.info.shape != [linear.outFeatures, linear.inFeatures] {
          sink.report("bad-shape", w.shard, n + ".weight", "shape \(w.info.shape), but config.json implies [\(linear.outFeatures), \(linear.inFeatures)]")
        }
      } else if let st = tensors[n + ".weight_shape"] {
        do throws(SafeTensorsError) {
          if let v = try weightShapeValues(st), v != [linear.outFeatures, linear.inFeatures] {
            sink.report("bad-shape", st.shard, n + ".weight_shape", "weight_shape holds \(v), but config.json implies [\(linear.outFeatures), \(linear.inFeatures)]")
          }
        } catch {
          sink.report(error.code, st.shard, error.tensor ?? st.info.name, error.message)
        }
      } else if tensors[n + ".weight_packed"] == nil && tensors[n + ".weight_scale"] == nil {
        let expectedName = n + (quantizedExpected ? ".weight_packed" : ".weight")
        let shard = checkpoint.index?.shard(for: expectedName)
        if let shard, headers[shard] == nil { continue }  // its shard is missing or broken: reported already
        sink.report("missing-tensor", shard, expectedName, "config.json implies \"\(expectedName)\" but no shard has it")
      }
    }
    for (name, shape) in inventory.tensors {
      guard let t = tensors[name] else {
        if let shard = checkpoint.index?.shard(for: name), headers[shard] == nil { continue }
        sink.report("missing-tensor", checkpoint.index?.shard(for: name), name, "config.json implies \"\(name)\" but no shard has it")
        continue
      }
      if let shape, t.info.shape != shape {
        sink.report("bad-shape", t.shard, name, "shape \(t.info.shape), but config.json implies \(shape)")
      }
    }
    let layerLimit = inventory.layerCount + inventory.extraLayerCount
    for (name, place) in tensors where name.hasPrefix(prefix + "model.layers.") {
      let shard = place.shard
      guard let layer = DeepSeekInventory.layerIndex(of: name) else {
        sink.report("unexpected-tensor", shard, name, "cannot read a layer number in \"\(name)\"")
        continue
      }
      if layer >= layerLimit {
        sink.report("unexpected-tensor", shard, name, "layer \(layer) is beyond num_hidden_layers = \(inventory.layerCount)" + (inventory.extraLayerCount > 0 ? " + \(inventory.extraLayerCount) MTP layers" : ""))
      } else if let e = DeepSeekInventory.expertIndex(of: name), e >= inventory.routedExperts {
        sink.report("unexpected-tensor", shard, name, "expert \(e) is beyond n_routed_experts = \(inventory.routedExperts)")
      }
    }
  }

  // MARK: Data

  mutating func scanData() {
    let names = (checkpoint.shards + checkpoint.unindexedShards).filter { headers[$0] != nil }
    let shards = names.map { (name: $0, path: checkpoint.pathOf($0), header: headers[$0]!) }
    let (found, bytes) = DataScanner.scan(shards: shards, jobs: options.jobs, progress: options.progress)
    problems.append(contentsOf: found)
    scannedBytes += bytes
  }

  // MARK: Checksums

  mutating func checkChecksums(_ file: String) {
    let entries: [Hashing.ChecksumEntry]
    var tensorDigests: [String: String] = [:]
    do {
      let bytes = try FileSystem.readAll(file)
      if bytes.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x09 && $0 != 0x0D }) == UInt8(ascii: "{") {
        (entries, tensorDigests) = try Hashing.parseTensorManifest(bytes, file: file)
      } else {
        entries = try Hashing.parseChecksums(bytes, file: file)
      }
    } catch let e as CheckpointError {
      problems.append(contentsOf: e.problems)
      return
    } catch let e as SafeTensorsError {
      report("invalid-checksums", file, nil, e.message)
      return
    } catch {
      report("invalid-checksums", file, nil, "\(error)")
      return
    }
    var expected: [String: String] = [:]
    for e in entries { expected[FileSystem.split(e.name).name] = e.digest }
    let targets = (checkpoint.shards + checkpoint.unindexedShards).filter { sizes[$0] != nil }
    for t in targets where expected[t] == nil {
      report("checksum-missing", t, nil, "\(FileSystem.split(file).name) has no digest for this shard")
    }
    for name in expected.keys.sorted() where !targets.contains(name) {
      if FileSystem.fileSize(checkpoint.pathOf(name)) == nil {
        report("checksum-file-missing", name, nil, "\(FileSystem.split(file).name) lists this file but it is missing")
      }
    }
    let toHash = expected.keys.sorted().filter { FileSystem.fileSize(checkpoint.pathOf($0)) != nil }
    let root = checkpoint
    let progress = options.progress
    let results = Parallel.map(toHash.count, jobs: options.jobs) { i -> Result<String, SafeTensorsError> in
      do throws(SafeTensorsError) { return .success(try Hashing.sha256(file: root.pathOf(toHash[i]), progress: progress)) } catch {
        return .failure(error)
      }
    }
    for (name, r) in zip(toHash, results) {
      switch r {
      case .success(let digest):
        digests[name] = digest
        hashedBytes += sizes[name] ?? FileSystem.fileSize(checkpoint.pathOf(name)) ?? 0
        if digest != expected[name] {
          report("checksum-mismatch", name, nil, "SHA-256 is \(digest), expected \(expected[name]!)")
          if !tensorDigests.isEmpty, let header = headers[name], let map = mappings[name] {
            for t in header.tensors {
              guard let want = tensorDigests[t.name] else { continue }
              let range = (header.dataStart + t.begin)..<(header.dataStart + t.end)
              let got: String
              do { got = try map.withPreparedBytes(range) { Hashing.sha256($0) } } catch {
                report(error.code, name, t.name, error.message)
                continue
              }
              if got != want {
                report("tensor-checksum-mismatch", name, t.name, "tensor \"\(t.name)\" SHA-256 is \(got), expected \(want)")
              }
            }
          }
        }
      case .failure(let e):
        report("io-error", name, nil, e.message)
      }
    }
  }
}
