import Checkpoint
import CompressedTensors
import QuantKernels
import SafeTensors
import StrictJSON

/// The dtype `ckpt convert` writes for quantized modules.
public enum ConvertTarget: String, Sendable, CaseIterable, CustomStringConvertible {
  case bf16
  case fp16
  case fp32
  /// DeepSeek-V3 block FP8: `X.weight` F8_E4M3 plus `X.weight_scale_inv` F32.
  case fp8Block = "fp8-block"
  /// compressed-tensors `pack-quantized` INT4: what `ckpt requantize` writes
  /// (`ckpt convert` refuses it).
  case int4

  public var description: String { rawValue }

  /// The safetensors dtype of converted weights.
  public var weightDType: DType {
    switch self {
    case .bf16: .bf16
    case .fp16: .f16
    case .fp32: .f32
    case .fp8Block: .f8E4M3
    case .int4: .i32
    }
  }

  /// The dtype `--cast-all` casts other floating-point tensors to (BF16 for FP8
  /// checkpoints, as DeepSeek-V3's own keep their non-FP8 tensors).
  public var castDType: DType {
    switch self {
    case .bf16, .fp8Block, .int4: .bf16
    case .fp16: .f16
    case .fp32: .f32
    }
  }

  /// `torch_dtype` in the rewritten config.
  public var torchDType: String {
    switch self {
    case .bf16, .fp8Block, .int4: "bfloat16"
    case .fp16: "float16"
    case .fp32: "float32"
    }
  }
}

/// A quantized Linear of the input: its `pack-quantized` tensors and validated layout.
public struct Int4Module: Sendable {
  /// The module name (`…mlp.experts.0.gate_proj`).
  public let name: String
  /// Its validated shapes.
  public let layout: Int4Layout
  /// `X.weight_zero_point` when asymmetric, `X.weight_g_idx` when present.
  public let zeroPoint: String?
  public let groupIndex: String?

  public var packed: String { name + ".weight_packed" }
  public var scale: String { name + ".weight_scale" }
  public var shape: String { name + ".weight_shape" }
  /// Every input tensor of the module.
  public var inputNames: [String] { [packed, scale] + [zeroPoint, groupIndex].compactMap { $0 } }
}

/// Where the bytes of one output tensor come from.
public enum TensorSource: Sendable {
  /// An input tensor copied byte for byte.
  case copy(String)
  /// An input floating-point tensor cast (round to nearest even) to the output dtype.
  case cast(String, from: DType)
  /// A quantized module dequantized to the output dtype.
  case dequantize(Int4Module)
  /// FP8 block codes (`X.weight`) of a module: INT4, or a float `X.weight`.
  case fp8Codes(FP8Source)
  /// FP8 block scales (`X.weight_scale_inv`) of a module.
  case fp8Scales(FP8Source)
  /// `X.weight_packed` of a requantized module (its scales are computed with it).
  case int4Packed(RequantModule)
  /// `X.weight_scale` of a requantized module.
  case int4Scale(RequantModule)
  /// `X.weight_shape` of a requantized module: `[rows, columns]`.
  case int4Shape(RequantModule)
  /// A DeepSeek FP8-block weight decoded (`fp8 · scale_inv` in FP32) and
  /// rounded to the planned dtype.
  case fp8Dequantize(name: String, scaleInv: String, rows: Int, columns: Int, blockRows: Int, blockColumns: Int)

  /// The input tensors it reads.
  public var inputNames: [String] {
    switch self {
    case .copy(let n), .cast(let n, _): [n]
    case .dequantize(let m): m.inputNames
    case .fp8Codes(let s), .fp8Scales(let s):
      switch s {
      case .int4(let m): m.inputNames
      case .float(let name, _, _, _): [name]
      }
    case .int4Packed(let m), .int4Scale(let m): m.inputNames
    case .int4Shape: []
    case .fp8Dequantize(let n, let s, _, _, _, _): [n, s]
    }
  }
}

/// The exact FP32 values an FP8 tensor is computed from.
public enum FP8Source: Sendable {
  case int4(Int4Module)
  /// A 2-D float `X.weight` (BF16, FP16 or FP32), decoded exactly to FP32.
  case float(name: String, dtype: DType, rows: Int, columns: Int)

  /// The module name.
  public var module: String {
    switch self {
    case .int4(let m): m.name
    case .float(let name, _, _, _): String(name.dropLast(".weight".count))
    }
  }

  public var rows: Int {
    switch self {
    case .int4(let m): m.layout.rows
    case .float(_, _, let r, _): r
    }
  }

  public var columns: Int {
    switch self {
    case .int4(let m): m.layout.columns
    case .float(_, _, _, let c): c
    }
  }
}

/// One tensor of an output shard.
public struct OutputTensor: Sendable {
  public let planned: PlannedTensor
  public let source: TensorSource
}

/// One input shard and the output shard it becomes.
public struct ShardPlan: Sendable {
  /// The input shard's file name (relative to the checkpoint root).
  public let input: String
  /// The output shard's file name (the same name: one output shard per input shard).
  public let output: String
  public let tensors: [OutputTensor]
  /// Bytes of the input file.
  public let inputBytes: Int
  /// Bytes of the output file (header included).
  public let outputBytes: Int
}

/// What `ckpt convert` will do: built and checked before anything is written.
public struct ConversionPlan: Sendable {
  public let target: ConvertTarget
  public let blockSize: Int
  public let castAll: Bool
  public let shards: [ShardPlan]
  /// The rewritten `config.json`, or `nil` when the input has none.
  public let config: JSONObject?
  /// The rewritten index, or `nil` for a single-file checkpoint.
  public let index: ShardIndex?
  /// Files copied as they are (tokenizer, chat template, code, licence…).
  public let otherFiles: [String]
  /// Set for `ckpt requantize` (target ``ConvertTarget/int4``).
  public var requantize: RequantizeSpec? = nil

  public var inputBytes: Int { shards.reduce(0) { $0 + $1.inputBytes } }
  public var outputBytes: Int { shards.reduce(0) { $0 + $1.outputBytes } }
}

/// A conversion that cannot start or could not finish, naming the file and tensor.
public struct ConversionError: Error, Sendable, CustomStringConvertible {
  public let code: String
  public let file: String?
  public let tensor: String?
  public let message: String

  public init(_ code: String, file: String? = nil, tensor: String? = nil, _ message: String) {
    self.code = code
    self.file = file
    self.tensor = tensor
    self.message = message
  }

  public var description: String {
    var s = "\(code): "
    if let file { s += file + ": " }
    if let tensor { s += "tensor \(tensor): " }
    return s + message
  }

  /// A tensor of `shard` whose bytes could not be read: a damaged chunk of an
  /// archived shard keeps the archive reader's code (`corrupt-archive`,
  /// `checksum-mismatch`) and names the tensor it belongs to.
  public init(unreadable e: SafeTensorsError, shard: String, tensor: String) {
    if case .storage(let code, let t, let m) = e.kind {
      self.init(code, file: shard, tensor: t ?? tensor, m)
    } else {
      self.init("unreadable-tensor", file: shard, tensor: tensor, e.message)
    }
  }
}

extension ConversionPlan {
  /// Suffixes of the compressed-tensors parts of a quantized module.
  static let int4Suffixes = [".weight_packed", ".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx"]

  /// Plans the conversion of a checkpoint that passed structural validation.
  ///
  /// - Throws: ``ConversionError`` for anything the converter does not support
  ///   or that does not add up (a scheme other than 4-bit integer weights, a
  ///   module split across shards, a bad `weight_shape`), naming file and tensor.
  public static func make(
    _ checkpoint: Checkpoint, target: ConvertTarget, blockSize: Int = 128, castAll: Bool = false
  ) throws(ConversionError) -> ConversionPlan {
    guard blockSize >= 1 else { throw ConversionError("invalid-option", "--block-size must be at least 1") }
    var quantization: QuantizationConfig? = nil
    var quantizationPath: [String]? = nil
    do {
      switch try checkpoint.quantization() {
      case .compressedTensors(let path, let config)?:
        quantization = config
        quantizationPath = path
      case .other(let path, let json)?:
        let method = json["quant_method"]?.stringValue ?? "?"
        throw ConversionError(
          "unsupported-quantization", file: Checkpoint.configFileName,
          "\(path.joined(separator: ".")) has quant_method \"\(method)\"; convert reads compressed-tensors checkpoints")
      case nil: break
      }
    } catch let e as ConversionError {
      throw e
    } catch {
      throw ConversionError("invalid-config", file: Checkpoint.configFileName, "\(error)")
    }

    var shards: [ShardPlan] = []
    var weightMap: [(tensor: String, shard: String)] = []
    for name in checkpoint.shards + checkpoint.unindexedShards {
      let path = checkpoint.pathOf(name)
      let file: SafeTensorsFile
      do { file = try SafeTensorsFile(path: path) } catch {
        throw ConversionError("unreadable-shard", file: name, "\(error)")
      }
      let tensors = try planShard(file, name: name, quantization: quantization, target: target, blockSize: blockSize, castAll: castAll)
      let planned = SafeTensorsWriter.referenceOrdered(tensors.map(\.planned))
      let sizes = planned.map { $0.byteCount ?? 0 }
      let header = SafeTensorsWriter.headerBytes(tensors: planned, sizes: sizes, metadata: file.header.metadata ?? SafeTensorsWriter.defaultMetadata)
      shards.append(ShardPlan(
        input: name, output: name, tensors: tensors, inputBytes: file.mapping.count,
        outputBytes: 8 + header.count + sizes.reduce(0, +)))
      for t in planned { weightMap.append((t.name, name)) }
    }

    var config = checkpoint.config
    if let c = config {
      var out = c
      if let path = quantizationPath {
        // `Optional.none`, not `nil`: JSONValue is nil-literal convertible, and a bare
        // `nil` here would become JSON null instead of removing the key.
        let value: JSONValue? =
          target == .fp8Block ? QuantizationConfig.fp8BlockConfig(blockSize: [blockSize, blockSize]) : Optional.none
        out = ModelConfigQuantization.replacing(in: out, at: path, with: value)
        // torch_dtype next to the quantization config, and at the root.
        let owner = Array(path.dropLast())
        if !owner.isEmpty, ModelConfigQuantization.value(in: out, at: owner + ["torch_dtype"]) != nil {
          out = ModelConfigQuantization.replacing(in: out, at: owner + ["torch_dtype"], with: .string(target.torchDType))
        }
      }
      if out["torch_dtype"] != nil || quantizationPath != nil {
        out["torch_dtype"] = .string(target.torchDType)
      }
      config = out
    }

    let index = outputIndex(checkpoint, shards: shards, weightMap: weightMap)
    let other = checkpoint.otherFiles.filter { $0 != Checkpoint.configFileName && $0 != ShardIndex.fileName }
    return ConversionPlan(
      target: target, blockSize: blockSize, castAll: castAll, shards: shards, config: config, index: index, otherFiles: other)
  }

  /// The output index: the input's metadata with `total_size` of the planned
  /// tensors, and the weight map sorted by name; `nil` for a single file.
  static func outputIndex(
    _ checkpoint: Checkpoint, shards: [ShardPlan], weightMap: [(tensor: String, shard: String)]
  ) -> ShardIndex? {
    guard let input = checkpoint.index else { return nil }
    var metadata = input.metadata
    let total = shards.reduce(0) { sum, s in sum + s.tensors.reduce(0) { $0 + ($1.planned.byteCount ?? 0) } }
    metadata["total_size"] = .number(JSONNumber(total))
    return ShardIndex(weightMap: weightMap.sorted { $0.tensor.utf8.lexicographicallyPrecedes($1.tensor.utf8) }, metadata: metadata)
  }

  /// The output tensors of one shard.
  static func planShard(
    _ file: SafeTensorsFile, name shard: String, quantization: QuantizationConfig?, target: ConvertTarget, blockSize: Int,
    castAll: Bool
  ) throws(ConversionError) -> [OutputTensor] {
    let infos = file.tensors
    var byName: [String: TensorInfo] = [:]
    for t in infos { byName[t.name] = t }
    // Modules with a weight_packed here are quantized.
    var modules: [String: Int4Module] = [:]
    for t in infos where t.name.hasSuffix(".weight_packed") {
      let module = String(t.name.dropLast(".weight_packed".count))
      modules[module] = try int4Module(module, file: file, shard: shard, byName: byName, quantization: quantization)
    }
    var out: [OutputTensor] = []
    for t in infos {
      if let part = int4Suffixes.first(where: { t.name.hasSuffix($0) }) {
        let module = String(t.name.dropLast(part.count))
        if let m = modules[module] {
          // Each module's output is planned once, at its packed weight.
          if part == ".weight_packed" {
            let shape = [m.layout.rows, m.layout.columns]
            if target == .fp8Block {
              let pair = fp8Pair(.int4(m), blockSize: blockSize)
              out += [pair.0, pair.1]
            } else {
              out.append(OutputTensor(planned: PlannedTensor(name: m.name + ".weight", dtype: target.weightDType, shape: shape), source: .dequantize(m)))
            }
          }
          continue
        }
        if part != ".weight_scale" || byName[module + ".weight"] == nil {
          // A compressed-tensors part without its packed weight: validation reports this; refuse.
          throw ConversionError("incomplete-module", file: shard, tensor: t.name, "no \(module).weight_packed in this shard")
        }
      }
      if target == .fp8Block, t.name.hasSuffix(".weight"), t.shape.count == 2,
        [DType.bf16, .f16, .f32].contains(t.dtype)
      {
        let module = String(t.name.dropLast(".weight".count))
        let kind = DeepSeekV3Modules.kind(of: module)
        if DeepSeekV3Modules.isLinear(module), kind != .head, kind != .router, kind != .embedding, kind != .norm {
          if byName[module + ".weight_scale_inv"] != nil {
            throw ConversionError("already-fp8", file: shard, tensor: t.name, "\(module) already has a weight_scale_inv")
          }
          let pair = fp8Pair(.float(name: t.name, dtype: t.dtype, rows: t.shape[0], columns: t.shape[1]), blockSize: blockSize)
          out.append(pair.0)
          out.append(pair.1)
          continue
        }
      }
      if castAll, [DType.bf16, .f16, .f32].contains(t.dtype), t.dtype != target.castDType {
        out.append(OutputTensor(planned: PlannedTensor(name: t.name, dtype: target.castDType, shape: t.shape), source: .cast(t.name, from: t.dtype)))
      } else {
        out.append(OutputTensor(planned: PlannedTensor(name: t.name, dtype: t.dtype, shape: t.shape), source: .copy(t.name)))
      }
    }
    return out
  }

  static func fp8Pair(_ source: FP8Source, blockSize: Int) -> (OutputTensor, OutputTensor) {
    let s = FP8Block.scaleShape(rows: source.rows, columns: source.columns, blockRows: blockSize, blockColumns: blockSize)
    return (
      OutputTensor(planned: PlannedTensor(name: source.module + ".weight", dtype: .f8E4M3, shape: [source.rows, source.columns]), source: .fp8Codes(source)),
      OutputTensor(planned: PlannedTensor(name: source.module + ".weight_scale_inv", dtype: .f32, shape: [s.rows, s.columns]), source: .fp8Scales(source))
    )
  }

  /// Reads and checks one quantized module's scheme, `weight_shape` and part shapes.
  public static func int4Module(
    _ module: String, file: SafeTensorsFile, shard: String, byName: [String: TensorInfo], quantization: QuantizationConfig?
  ) throws(ConversionError) -> Int4Module {
    guard let quantization else {
      throw ConversionError("no-quantization-config", file: shard, tensor: module + ".weight_packed", "config.json has no compressed-tensors quantization_config")
    }
    guard let scheme = quantization.scheme(forModule: module, isLinear: DeepSeekV3Modules.isLinear(module)), let args = scheme.weights else {
      throw ConversionError("no-scheme", file: shard, tensor: module + ".weight_packed", "no quantization scheme with weights targets this module")
    }
    guard args.numBits == 4, args.type == .int else {
      throw ConversionError("unsupported-scheme", file: shard, tensor: module + ".weight_packed", "weights are \(args.numBits)-bit \(args.type.rawValue); convert handles 4-bit integers")
    }
    let strategy: Int4Strategy
    switch args.strategy {
    case .group:
      guard let g = args.groupSize else {
        throw ConversionError("unsupported-scheme", file: shard, tensor: module + ".weight_packed", "group strategy without group_size")
      }
      strategy = .group(size: g)
    case .channel: strategy = .channel
    case .tensor: strategy = .tensor
    default:
      throw ConversionError("unsupported-scheme", file: shard, tensor: module + ".weight_packed", "strategy \(args.strategy.rawValue) is not supported")
    }
    func part(_ suffix: String) throws(ConversionError) -> TensorInfo {
      guard let t = byName[module + suffix] else {
        throw ConversionError("incomplete-module", file: shard, tensor: module + suffix, "missing (all parts of a module must be in one shard)")
      }
      return t
    }
    let packed = try part(".weight_packed")
    let scale = try part(".weight_scale")
    let shapeInfo = try part(".weight_shape")
    let scaleType: Int4ScaleType
    switch scale.dtype {
    case .bf16: scaleType = .bf16
    case .f16: scaleType = .f16
    case .f32: scaleType = .f32
    default:
      throw ConversionError("bad-dtype", file: shard, tensor: scale.name, "scale dtype \(scale.dtype) (expected BF16, F16 or F32)")
    }
    guard packed.dtype == .i32 else {
      throw ConversionError("bad-dtype", file: shard, tensor: packed.name, "dtype \(packed.dtype) (expected I32)")
    }
    let weightShape = try readShape(shapeInfo, file: file, shard: shard)
    let zp = byName[module + ".weight_zero_point"]
    let gIdx = byName[module + ".weight_g_idx"]
    if let zp, zp.dtype != .i32 {
      throw ConversionError("bad-dtype", file: shard, tensor: zp.name, "dtype \(zp.dtype) (expected I32)")
    }
    if let gIdx, gIdx.dtype != .i32 {
      throw ConversionError("bad-dtype", file: shard, tensor: gIdx.name, "dtype \(gIdx.dtype) (expected I32)")
    }
    do {
      let layout = try Int4Layout(
        weightShape: weightShape, strategy: strategy, scaleType: scaleType, packedShape: packed.shape,
        scaleShape: scale.shape, zeroPointShape: zp?.shape, groupIndexShape: gIdx?.shape)
      return Int4Module(name: module, layout: layout, zeroPoint: zp?.name, groupIndex: gIdx?.name)
    } catch {
      throw ConversionError("bad-layout", file: shard, tensor: module, "\(error)")
    }
  }

  /// The two values of a `weight_shape` tensor (I64 or I32).
  static func readShape(_ t: TensorInfo, file: SafeTensorsFile, shard: String) throws(ConversionError) -> [Int] {
    guard t.shape == [2], t.dtype == .i64 || t.dtype == .i32 else {
      throw ConversionError("bad-weight-shape", file: shard, tensor: t.name, "expected 2 values of I64 or I32, found \(t.dtype) \(t.shape)")
    }
    let values: [Int]
    do {
      values = try file.mapping.withPreparedBytes(file.fileRange(of: t)) { raw in
        (0..<2).map { i in
          t.dtype == .i64
            ? Int(truncatingIfNeeded: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
            : Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
        }
      }
    } catch {
      throw ConversionError(unreadable: error, shard: shard, tensor: t.name)
    }
    guard values.allSatisfy({ $0 >= 0 && $0 < 1 << 40 }) else {
      throw ConversionError("bad-weight-shape", file: shard, tensor: t.name, "values \(values) are not a plausible [out, in]")
    }
    return values
  }
}
