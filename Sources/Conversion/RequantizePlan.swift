import Checkpoint
import CompressedTensors
import QuantKernels
import SafeTensors
import StrictJSON

/// What `ckpt requantize` reads for one module's weight.
public enum WeightInput: Sendable {
  /// A float `X.weight` (BF16, FP16 or FP32): recovery reproduces these bits.
  case float(name: String, dtype: DType)
  /// DeepSeek block FP8: `X.weight` F8_E4M3 and `X.weight_scale_inv` F32,
  /// decoded to the exact FP32 products `fp8 · scale_inv`.
  case fp8(name: String, scaleInv: String, blockRows: Int, blockColumns: Int)

  var names: [String] {
    switch self {
    case .float(let n, _): [n]
    case .fp8(let n, let s, _, _): [n, s]
    }
  }
}

/// One module `ckpt requantize` turns into a `pack-quantized` triplet.
public struct RequantModule: Sendable {
  public let module: String
  public let weight: WeightInput
  public let rows: Int
  public let columns: Int
  public let groupSize: Int
  public let scaleType: Int4ScaleType
  /// `X.weight_shape`'s dtype: I64 (what compressed-tensors writes) or I32.
  public let shapeDType: DType

  public var inputNames: [String] { weight.names }
}

/// The settings of a requantization that the plan carries to the kernels.
public struct RequantizeSpec: Sendable, Equatable {
  public var options: Int4RequantizeOptions
  public var groupSize: Int
  public var scaleType: Int4ScaleType
  public init(options: Int4RequantizeOptions, groupSize: Int = 32, scaleType: Int4ScaleType = .bf16) {
    self.options = options
    self.groupSize = groupSize
    self.scaleType = scaleType
  }
}

/// A reference INT4 checkpoint (`--like REF`): its quantization config and
/// where it sits, its tensors' dtypes, and which modules it quantizes.
public struct RequantReference: Sendable {
  public let path: String
  public let configPath: [String]
  public let configJSON: JSONValue
  public let config: QuantizationConfig
  public let dtypes: [String: DType]
  public let quantized: Set<String>
  public let scaleType: Int4ScaleType
  public let shapeDType: DType

  /// Reads REF's headers and config.
  public static func load(_ path: String) throws(ConversionError) -> RequantReference {
    let c: Checkpoint
    do { c = try Checkpoint.load(path) } catch { throw ConversionError("bad-reference", file: path, "\(error)") }
    let source: QuantizationSource?
    do { source = try c.quantization() } catch { throw ConversionError("bad-reference", file: path, "\(error)") }
    guard case .compressedTensors(let configPath, let config)? = source else {
      throw ConversionError("bad-reference", file: path, "--like needs a compressed-tensors checkpoint (its config has no such quantization_config)")
    }
    var dtypes: [String: DType] = [:]
    for name in c.shards + c.unindexedShards {
      do {
        let f = try SafeTensorsFile(path: c.pathOf(name))
        for t in f.tensors { dtypes[t.name] = t.dtype }
      } catch {
        throw ConversionError("bad-reference", file: path + "/" + name, "\(error)")
      }
    }
    let quantized = Set(dtypes.keys.filter { $0.hasSuffix(".weight_packed") }.map { String($0.dropLast(".weight_packed".count)) })
    guard let any = quantized.sorted().first else {
      throw ConversionError("bad-reference", file: path, "no quantized module (no *.weight_packed tensor)")
    }
    let scaleType: Int4ScaleType
    switch dtypes[any + ".weight_scale"] {
    case .bf16?: scaleType = .bf16
    case .f16?: scaleType = .f16
    case .f32?: scaleType = .f32
    default: throw ConversionError("bad-reference", file: path, tensor: any + ".weight_scale", "missing or not BF16/F16/F32")
    }
    guard let shapeDType = dtypes[any + ".weight_shape"], shapeDType == .i64 || shapeDType == .i32 else {
      throw ConversionError("bad-reference", file: path, tensor: any + ".weight_shape", "missing or not I64/I32")
    }
    return RequantReference(
      path: path, configPath: configPath, configJSON: config.toJSON(), config: config, dtypes: dtypes, quantized: quantized,
      scaleType: scaleType, shapeDType: shapeDType)
  }
}

extension ConversionPlan {
  /// The `quantization_config` of Kimi K2 Thinking (FORMATS.md §3.4) with `groupSize`.
  public static func kimiK2QuantizationConfig(groupSize: Int) -> JSONValue {
    var weights = JSONObject()
    weights["num_bits"] = .number(JSONNumber(4))
    weights["type"] = .string("int")
    weights["symmetric"] = .bool(true)
    weights["group_size"] = .number(JSONNumber(groupSize))
    weights["strategy"] = .string("group")
    weights["block_structure"] = .null
    weights["dynamic"] = .bool(false)
    weights["actorder"] = .null
    weights["observer"] = .string("minmax")
    weights["observer_kwargs"] = .object(JSONObject())
    var group = JSONObject()
    group["targets"] = .array([.string("Linear")])
    group["weights"] = .object(weights)
    group["input_activations"] = .null
    group["output_activations"] = .null
    var groups = JSONObject()
    groups["group_0"] = .object(group)
    var q = JSONObject()
    q["config_groups"] = .object(groups)
    q["quant_method"] = .string("compressed-tensors")
    q["kv_cache_scheme"] = .null
    q["format"] = .string("pack-quantized")
    q["quantization_status"] = .string("compressed")
    q["ignore"] = .array(["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", #"re:.*mlp\.(gate|up|gate_up|down)_proj.*"#].map { .string($0) })
    return .object(q)
  }

  /// Plans `ckpt requantize`: every targeted Linear's float (or FP8-block)
  /// weight becomes `X.weight_packed` I32, `X.weight_scale`, `X.weight_shape`;
  /// FP8 Linears that are not targeted become BF16 (or REF's dtype); other
  /// tensors are copied (or, with REF, cast to REF's dtype).
  ///
  /// Targets: with `reference`, exactly the modules REF quantizes, and every
  /// output name and dtype must equal REF's; else the Kimi K2 scheme (Linear
  /// modules matched by `targets` and not by `ignore`: the routed experts).
  public static func makeRequantize(
    _ checkpoint: Checkpoint, spec specIn: RequantizeSpec, reference: RequantReference? = nil
  ) throws(ConversionError) -> ConversionPlan {
    var spec = specIn
    if let r = reference { spec.scaleType = r.scaleType }
    guard spec.groupSize >= 1 else { throw ConversionError("invalid-option", "--group-size must be at least 1") }
    let schemeJSON: JSONValue
    let configPath: [String]
    if let r = reference {
      schemeJSON = r.configJSON
      configPath = r.configPath
    } else {
      schemeJSON = kimiK2QuantizationConfig(groupSize: spec.groupSize)
      configPath = checkpoint.config?["text_config"]?.objectValue != nil
        ? ["text_config", ModelConfigQuantization.key] : [ModelConfigQuantization.key]
    }
    let scheme: QuantizationConfig
    do { scheme = try QuantizationConfig(json: schemeJSON) } catch {
      throw ConversionError("bad-reference", file: reference?.path, "quantization_config: \(error)")
    }
    // The input must not be INT4 or carry another quantization method than FP8 block.
    var fp8Block: (Int, Int)? = nil
    if let c = checkpoint.config, let found = ModelConfigQuantization.locate(in: c) {
      let method = found.json["quant_method"]?.stringValue ?? "?"
      if method == "fp8", let bs = found.json["weight_block_size"]?.arrayValue?.compactMap(\.intValue), bs.count == 2 {
        fp8Block = (bs[0], bs[1])
      } else {
        throw ConversionError(
          "unsupported-input", file: Checkpoint.configFileName,
          "\(found.path.joined(separator: ".")) has quant_method \"\(method)\"; requantize reads BF16, FP16, FP32 or DeepSeek FP8-block checkpoints (an INT4 one can be --like REF)")
      }
    }
    let shapeDType = reference?.shapeDType ?? .i64

    var shards: [ShardPlan] = []
    var weightMap: [(tensor: String, shard: String)] = []
    for name in checkpoint.shards + checkpoint.unindexedShards {
      let file: SafeTensorsFile
      do { file = try SafeTensorsFile(path: checkpoint.pathOf(name)) } catch {
        throw ConversionError("unreadable-shard", file: name, "\(error)")
      }
      var byName: [String: TensorInfo] = [:]
      for t in file.tensors { byName[t.name] = t }
      var out: [OutputTensor] = []
      for t in file.tensors {
        if t.name.hasSuffix(".weight_packed") {
          throw ConversionError("already-int4", file: name, tensor: t.name, "the input is already INT4 (convert it first, or use it as --like)")
        }
        if t.name.hasSuffix(".weight_scale_inv") {
          let w = String(t.name.dropLast("_scale_inv".count))
          guard let wi = byName[w], wi.dtype == .f8E4M3 else {
            throw ConversionError("incomplete-module", file: name, tensor: t.name, "no F8_E4M3 \(w) in this shard")
          }
          continue
        }
        func dtypeLike(_ n: String, _ d: DType) throws(ConversionError) -> DType {
          guard let r = reference else { return d }
          guard let rd = r.dtypes[n] else {
            throw ConversionError("not-in-reference", file: name, tensor: n, "REF \(r.path) has no tensor of this name")
          }
          return rd
        }
        let isFP8 = t.dtype == .f8E4M3
        if t.name.hasSuffix(".weight"), t.shape.count == 2, isFP8 || [DType.bf16, .f16, .f32].contains(t.dtype) {
          let module = String(t.name.dropLast(".weight".count))
          let targeted: Bool =
            reference.map { $0.quantized.contains(module) }
            ?? (scheme.scheme(forModule: module, isLinear: DeepSeekV3Modules.isLinear(module))?.weights != nil)
          var input = WeightInput.float(name: t.name, dtype: t.dtype)
          if isFP8 {
            guard byName[module + ".weight_scale_inv"] != nil, let bs = fp8Block else {
              throw ConversionError(
                "incomplete-module", file: name, tensor: t.name,
                "F8_E4M3 weight without \(module).weight_scale_inv and an fp8 quantization_config with weight_block_size")
            }
            input = .fp8(name: t.name, scaleInv: module + ".weight_scale_inv", blockRows: bs.0, blockColumns: bs.1)
          }
          if targeted {
            let (rows, columns) = (t.shape[0], t.shape[1])
            guard columns % spec.groupSize == 0 else {
              throw ConversionError(
                "bad-group-size", file: name, tensor: t.name, "\(columns) input features are not a multiple of the group size \(spec.groupSize)")
            }
            let m = RequantModule(
              module: module, weight: input, rows: rows, columns: columns, groupSize: spec.groupSize, scaleType: spec.scaleType,
              shapeDType: shapeDType)
            let scaleDType: DType = spec.scaleType == .bf16 ? .bf16 : spec.scaleType == .f16 ? .f16 : .f32
            out.append(OutputTensor(
              planned: PlannedTensor(name: module + ".weight_packed", dtype: .i32, shape: [rows, Int4Packing.wordsPerRow(columns: columns)]),
              source: .int4Packed(m)))
            out.append(OutputTensor(
              planned: PlannedTensor(name: module + ".weight_scale", dtype: scaleDType, shape: [rows, columns / spec.groupSize]),
              source: .int4Scale(m)))
            out.append(OutputTensor(planned: PlannedTensor(name: module + ".weight_shape", dtype: shapeDType, shape: [2]), source: .int4Shape(m)))
            if let r = reference {
              for (suffix, d) in [(".weight_packed", DType.i32), (".weight_scale", scaleDType), (".weight_shape", shapeDType)] {
                guard r.dtypes[module + suffix] == d else {
                  throw ConversionError(
                    "reference-mismatch", file: name, tensor: module + suffix,
                    "REF has \(r.dtypes[module + suffix].map { "\($0)" } ?? "no such tensor"), this plan writes \(d)")
                }
              }
            }
            continue
          }
          if case .fp8(_, let scaleInv, let br, let bc) = input {
            let d = try dtypeLike(t.name, .bf16)
            out.append(OutputTensor(
              planned: PlannedTensor(name: t.name, dtype: d, shape: t.shape),
              source: .fp8Dequantize(name: t.name, scaleInv: scaleInv, rows: t.shape[0], columns: t.shape[1], blockRows: br, blockColumns: bc)))
            continue
          }
        }
        let d = try dtypeLike(t.name, t.dtype)
        if d != t.dtype {
          guard [DType.bf16, .f16, .f32].contains(d), [DType.bf16, .f16, .f32].contains(t.dtype) else {
            throw ConversionError("reference-mismatch", file: name, tensor: t.name, "REF has \(d), the input \(t.dtype); only float casts are possible")
          }
          out.append(OutputTensor(planned: PlannedTensor(name: t.name, dtype: d, shape: t.shape), source: .cast(t.name, from: t.dtype)))
        } else {
          out.append(OutputTensor(planned: PlannedTensor(name: t.name, dtype: t.dtype, shape: t.shape), source: .copy(t.name)))
        }
      }
      let planned = SafeTensorsWriter.referenceOrdered(out.map(\.planned))
      let sizes = planned.map { $0.byteCount ?? 0 }
      let header = SafeTensorsWriter.headerBytes(tensors: planned, sizes: sizes, metadata: file.header.metadata ?? SafeTensorsWriter.defaultMetadata)
      shards.append(ShardPlan(input: name, output: name, tensors: out, inputBytes: file.mapping.count, outputBytes: 8 + header.count + sizes.reduce(0, +)))
      for t in planned { weightMap.append((t.name, name)) }
    }
    if let r = reference {
      let produced = Set(weightMap.map(\.tensor))
      let missing = Set(r.dtypes.keys).subtracting(produced).sorted()
      if !missing.isEmpty {
        throw ConversionError(
          "reference-mismatch", tensor: missing[0],
          "REF has \(missing.count) tensor(s) this checkpoint does not give (e.g. \(missing.prefix(3).joined(separator: ", ")))")
      }
    }
    if !shards.contains(where: { $0.tensors.contains { if case .int4Packed = $0.source { true } else { false } } }) {
      throw ConversionError("nothing-to-quantize", file: checkpoint.path, "no module matches the scheme's targets (try --like REF)")
    }

    var config = checkpoint.config
    if var c = config {
      // Drop an FP8 config wherever it is, then put the INT4 one in its place.
      for found in ModelConfigQuantization.locateAll(in: c) {
        c = ModelConfigQuantization.replacing(in: c, at: found.path, with: Optional.none)
      }
      c = ModelConfigQuantization.replacing(in: c, at: configPath, with: schemeJSON)
      let owner = Array(configPath.dropLast())
      if !owner.isEmpty, ModelConfigQuantization.value(in: c, at: owner + ["torch_dtype"]) != nil {
        c = ModelConfigQuantization.replacing(in: c, at: owner + ["torch_dtype"], with: .string("bfloat16"))
      }
      if c["torch_dtype"] != nil { c["torch_dtype"] = .string("bfloat16") }
      config = c
    }
    let index = outputIndex(checkpoint, shards: shards, weightMap: weightMap)
    let other = checkpoint.otherFiles.filter { $0 != Checkpoint.configFileName && $0 != ShardIndex.fileName }
    return ConversionPlan(
      target: .int4, blockSize: 0, castAll: false, shards: shards, config: config, index: index, otherFiles: other, requantize: spec)
  }
}

/// Which scale rule a checkpoint's weights follow (`--scale-rule auto`).
public struct RuleDetection: Sendable {
  /// The rule the evidence supports, or `nil` when too few groups lie on a grid.
  public let rule: Int4ScaleRule?
  /// The fraction of unambiguously recovered groups consistent with `rule` and
  /// not with the other (0 when `rule` is nil).
  public let confidence: Double
  /// The statistics it was read from.
  public let stats: Int4RequantizeStats
  /// One line of evidence for people.
  public let evidence: String

  /// Reads the signatures of FORMATS.md §3.6 from recovered groups: under /7
  /// every non-zero group's largest |q| is 7 and −8 never occurs; under /7.5 the
  /// largest |q| is 7 or 8 and about a quarter of the groups hold −8.
  public static func detect(_ s: Int4RequantizeStats, minimumGroups: Int = 64) -> RuleDetection {
    let n = s.recovered
    let seven = s.maxCodeHistogram[7]
    let eight = s.maxCodeHistogram[8]
    let share = { (k: Int) in n > 0 ? Double(k) / Double(n) : 0 }
    let pct = { (x: Double) in String(format1: x * 100) + " %" }
    guard n >= minimumGroups else {
      return RuleDetection(
        rule: nil, confidence: 0, stats: s,
        evidence: "\(n) of \(s.groups) groups lie on an INT4 grid (need \(minimumGroups)): the weights are off-grid (fine-tuned or FP8)")
    }
    let minus8 = share(s.minusEightGroups)
    // Under /7.5 a negative group maximum rounds to −8 about half the time; a
    // few stray −8 (under 1 %) in a /7 checkpoint are noise, not a rule.
    if minus8 < 0.01 {
      let never = s.minusEightGroups == 0 ? "−8 never occurs in \(n) recovered groups" : "−8 occurs in only \(pct(minus8)) of \(n) recovered groups"
      return RuleDetection(
        rule: .qat7, confidence: share(seven), stats: s,
        evidence: "\(never) and \(pct(share(seven))) have largest |q| = 7: absmax/7, codes in [−7, 7]")
    }
    return RuleDetection(
      rule: .minmax, confidence: share(seven + eight), stats: s,
      evidence: "\(pct(minus8)) of \(n) recovered groups hold −8 and \(pct(share(seven + eight))) have largest |q| 7 or 8: absmax/7.5, codes in [−8, 7]")
  }
}

extension String {
  /// `x` with one decimal.
  init(format1 x: Double) {
    let r = (x * 10).rounded() / 10
    self = r == r.rounded() ? String(Int(r)) + ".0" : String(r)
  }
}

/// Measurements behind `--scale-rule auto`.
public enum RuleSampler {
  /// Recovers the grid of the plan's first modules, up to `budget` input bytes
  /// (read once; the page cache keeps them for the conversion that follows).
  public static func sample(_ plan: ConversionPlan, checkpoint: Checkpoint, budget: Int, jobs: Int) throws(ConversionError) -> Int4RequantizeStats {
    var total = Int4RequantizeStats()
    var used = 0
    var scratch = Converter.Scratch()
    defer { scratch.free() }
    for shard in plan.shards where used < budget {
      let file: SafeTensorsFile
      do { file = try SafeTensorsFile(path: checkpoint.pathOf(shard.input)) } catch {
        throw ConversionError("unreadable-shard", file: shard.input, "\(error)")
      }
      for t in shard.tensors where used < budget {
        guard case .int4Packed(let m) = t.source else { continue }
        total += try Converter.requantize(m, file: file, shard: shard.input, options: .init(rule: .qat7), jobs: jobs, scratch: &scratch)
        used += m.inputNames.compactMap { try? file.info($0) }.reduce(0) { $0 + file.fileRange(of: $1).count }
      }
    }
    return total
  }

  /// Reads the codes of a reference INT4 checkpoint (up to `budget` packed
  /// bytes): per group the largest |q| and whether −8 occurs, as if recovered.
  public static func referenceCodes(_ ref: RequantReference, budget: Int) throws(ConversionError) -> Int4RequantizeStats {
    let c: Checkpoint
    do { c = try Checkpoint.load(ref.path) } catch { throw ConversionError("bad-reference", file: ref.path, "\(error)") }
    var s = Int4RequantizeStats()
    var used = 0
    for name in c.shards + c.unindexedShards where used < budget {
      let file: SafeTensorsFile
      do { file = try SafeTensorsFile(path: c.pathOf(name)) } catch { throw ConversionError("bad-reference", file: name, "\(error)") }
      for t in file.tensors where t.name.hasSuffix(".weight_packed") && used < budget {
        let module = String(t.name.dropLast(".weight_packed".count))
        guard t.shape.count == 2, let scale = try? file.info(module + ".weight_scale"), scale.shape.count == 2, scale.shape[1] > 0,
          (t.shape[1] * 8) % scale.shape[1] == 0
        else { continue }
        let (rows, columns) = (t.shape[0], t.shape[1] * 8)
        let g = columns / scale.shape[1]
        var codes = [Int8](repeating: 0, count: rows * columns)
        do {
          try file.mapping.withPreparedBytes(file.fileRange(of: t)) { raw in
            codes.withUnsafeMutableBufferPointer { Int4Packing.unpack(raw, rows: rows, columns: columns, into: $0) }
          }
        } catch {
          throw ConversionError(unreadable: error, shard: name, tensor: t.name)
        }
        for gi in 0..<(rows * columns / g) {
          var k = 0
          var minus8 = false
          for q in codes[(gi * g)..<((gi + 1) * g)] {
            k = max(k, abs(Int(q)))
            minus8 = minus8 || q == -8
            s.codeHistogram[Int(q) + 8] += 1
          }
          s.groups += 1
          if k == 0 { continue }
          s.recovered += 1
          s.maxCodeHistogram[k] += 1
          if minus8 { s.minusEightGroups += 1 }
        }
        used += t.byteCount
      }
    }
    return s
  }
}
