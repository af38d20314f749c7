import Checkpoint
import CompressedTensors
import Conversion
import QuantKernels
import SafeTensors
import StrictJSON

/// How a logical tensor is stored, and so how it is decoded to FP32.
public enum WeightEncoding: Sendable {
  /// A plain floating-point tensor: BF16, F16, F32, or FP8 without block scales.
  case float(DType)
  /// A compressed-tensors `pack-quantized` module (`weight_packed`, `weight_scale`, …).
  case int4(Int4Module)
  /// DeepSeek-V3 block FP8: `X.weight` F8_E4M3 and `X.weight_scale_inv` F32.
  case fp8Block(scaleInv: String, blockRows: Int, blockColumns: Int)
  /// An integer or boolean tensor, compared as values converted to FP32.
  case integer(DType)

  /// A short label for reports: `bf16`, `fp16`, `fp32`, `int4-g32`,
  /// `fp8-block-128x128`, `f8_e4m3`, `i64`.
  public var label: String {
    switch self {
    case .float(let d):
      switch d {
      case .bf16: "bf16"
      case .f16: "fp16"
      case .f32: "fp32"
      default: d.rawValue.lowercased()
      }
    case .int4(let m):
      switch m.layout.strategy {
      case .group(let g): "int4-g\(g)"
      case .channel: "int4-channel"
      case .tensor: "int4-tensor"
      }
    case .fp8Block(_, let r, let c): "fp8-block-\(r)x\(c)"
    case .integer(let d): d.rawValue.lowercased()
    }
  }
}

/// One weight or other tensor as the model sees it, whatever its storage:
/// an INT4 triplet and an FP8 weight with its `weight_scale_inv` are each one
/// logical `X.weight`.
public struct LogicalTensor: Sendable {
  /// The dense name (`….experts.0.up_proj.weight` for an INT4 module).
  public let name: String
  /// The name used to match two checkpoints: ``name`` without a leading `language_model.`.
  public let key: String
  /// The shape of the dense tensor.
  public let shape: [Int]
  /// The shard holding it (every stored part is in one shard).
  public let shard: String
  /// The stored tensors read to decode it.
  public let storedNames: [String]
  public let encoding: WeightEncoding

  /// Rows of the row-major view: the first dimension (1 for a scalar or vector).
  public var rows: Int { shape.count >= 2 ? shape[0] : 1 }
  /// Elements per row of that view.
  public var columns: Int { shape.count >= 2 ? shape.dropFirst().reduce(1, *) : shape.reduce(1, *) }
  public var elementCount: Int { shape.reduce(1, *) }
  /// The module (``name`` without `.weight`) when it is a weight.
  public var module: String? { key.hasSuffix(".weight") ? String(key.dropLast(".weight".count)) : nil }
  /// The layer of `model.layers.N.…`, if any.
  public var layer: Int? { DeepSeekV3Modules.layerIndex(of: key) }
  /// The role of the module the tensor belongs to (its name without the last
  /// component: `….mlp.gate` for the router's `e_score_correction_bias`).
  public var kind: ModuleKind {
    guard let dot = key.lastIndex(of: ".") else { return DeepSeekV3Modules.kind(of: key) }
    return DeepSeekV3Modules.kind(of: String(key[..<dot]))
  }
}

/// Why a checkpoint cannot be compared, naming the file and tensor: the
/// same error type as conversion's (code, file, tensor, message).
public typealias DiffError = ConversionError

/// Every logical tensor of a checkpoint, in shard order and, within a shard,
/// in file order of their first stored part.
public struct WeightCatalog: Sendable {
  public let checkpoint: Checkpoint
  public let tensors: [LogicalTensor]
  /// Opened shards, by file name.
  public let files: [String: SafeTensorsFile]
  /// Stored tensors that are not part of any logical tensor (an unsupported dtype), with why.
  public let skipped: [(name: String, shard: String, reason: String)]
  /// A short description of the checkpoint's format: `int4 (compressed-tensors)`, `fp8-block`, `bf16`….
  public let format: String

  /// Reads the headers of every shard and groups stored tensors into logical ones.
  ///
  /// - Throws: ``DiffError`` for an unreadable shard, an INT4 module whose parts
  ///   do not add up (``ConversionPlan/int4Module(_:file:shard:byName:quantization:)``),
  ///   an FP8 weight without a usable `weight_scale_inv`, or a stray scale.
  public static func load(_ checkpoint: Checkpoint) throws(DiffError) -> WeightCatalog {
    var quantization: QuantizationConfig? = nil
    var fp8Block: (Int, Int)? = nil
    if let c = checkpoint.config, let found = ModelConfigQuantization.locate(in: c) {
      let method = found.json["quant_method"]?.stringValue
      if method == "compressed-tensors" {
        do { quantization = try QuantizationConfig(json: found.json) } catch {
          throw DiffError("invalid-config", file: Checkpoint.configFileName, "quantization_config: \(error)")
        }
      } else if method == "fp8", let bs = found.json["weight_block_size"]?.arrayValue?.compactMap(\.intValue), bs.count == 2,
        bs[0] >= 1, bs[1] >= 1
      {
        fp8Block = (bs[0], bs[1])
      }
    }
    var tensors: [LogicalTensor] = []
    var files: [String: SafeTensorsFile] = [:]
    var skipped: [(String, String, String)] = []
    var formats: [String: Int] = [:]
    for shard in checkpoint.shards + checkpoint.unindexedShards {
      let file: SafeTensorsFile
      do { file = try SafeTensorsFile(path: checkpoint.pathOf(shard)) } catch {
        throw DiffError("unreadable-shard", file: shard, "\(error)")
      }
      files[shard] = file
      var byName: [String: TensorInfo] = [:]
      for t in file.tensors { byName[t.name] = t }
      let ordered = file.tensors.sorted { $0.begin < $1.begin }
      for t in ordered {
        if let part = int4Parts.first(where: { t.name.hasSuffix($0) }) {
          let module = String(t.name.dropLast(part.count))
          if byName[module + ".weight_packed"] != nil {
            guard part == ".weight_packed" else { continue }
            let m: Int4Module
            m = try ConversionPlan.int4Module(module, file: file, shard: shard, byName: byName, quantization: quantization)
            let name = module + ".weight"
            tensors.append(LogicalTensor(
              name: name, key: DeepSeekV3Modules.strippingLanguageModelPrefix(name), shape: [m.layout.rows, m.layout.columns],
              shard: shard, storedNames: m.inputNames + [m.shape], encoding: .int4(m)))
            formats["int4 (compressed-tensors)", default: 0] += m.layout.rows * m.layout.columns
            continue
          }
          if part != ".weight_scale" || byName[module + ".weight"] == nil {
            throw DiffError("incomplete-module", file: shard, tensor: t.name, "no \(module).weight_packed in this shard")
          }
        }
        if t.name.hasSuffix(".weight_scale_inv") {
          let w = String(t.name.dropLast("_scale_inv".count))
          guard byName[w]?.dtype == .f8E4M3 else {
            throw DiffError("incomplete-module", file: shard, tensor: t.name, "no F8_E4M3 \(w) in this shard")
          }
          continue
        }
        if t.dtype == .f8E4M3, let s = byName[t.name + "_scale_inv"] {
          let block = try blockSize(weight: t, scale: s, configured: fp8Block, shard: shard)
          tensors.append(LogicalTensor(
            name: t.name, key: DeepSeekV3Modules.strippingLanguageModelPrefix(t.name), shape: t.shape, shard: shard,
            storedNames: [t.name, s.name], encoding: .fp8Block(scaleInv: s.name, blockRows: block.0, blockColumns: block.1)))
          formats["fp8-block", default: 0] += t.shape.reduce(1, *)
          continue
        }
        let encoding: WeightEncoding
        switch t.dtype {
        case .bf16, .f16, .f32, .f8E4M3, .f8E5M2: encoding = .float(t.dtype)
        case .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64: encoding = .integer(t.dtype)
        default:
          skipped.append((t.name, shard, "dtype \(t.dtype.rawValue) is not compared"))
          continue
        }
        if case .float = encoding { formats[encoding.label, default: 0] += t.shape.reduce(1, *) }
        tensors.append(LogicalTensor(
          name: t.name, key: DeepSeekV3Modules.strippingLanguageModelPrefix(t.name), shape: t.shape, shard: shard,
          storedNames: [t.name], encoding: encoding))
      }
    }
    // The quantized format names the checkpoint; else the most common float dtype.
    let format = ["int4 (compressed-tensors)", "fp8-block"].first { formats[$0] != nil }
      ?? formats.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.first.map(\.key) ?? "empty"
    return WeightCatalog(checkpoint: checkpoint, tensors: tensors, files: files, skipped: skipped, format: format)
  }

  static let int4Parts = [".weight_packed", ".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx"]

  /// The FP8 block of a weight: the config's `weight_block_size` when its
  /// scale shape fits, else 128 × 128 when that fits; anything else is an error.
  static func blockSize(weight: TensorInfo, scale: TensorInfo, configured: (Int, Int)?, shard: String) throws(DiffError) -> (Int, Int) {
    guard weight.shape.count == 2, scale.dtype == .f32, scale.shape.count == 2 else {
      throw DiffError("bad-scale", file: shard, tensor: scale.name, "expected a 2-D F32 weight_scale_inv for a 2-D weight, found \(scale.dtype.rawValue) \(scale.shape)")
    }
    for (br, bc) in [configured, (128, 128)].compactMap({ $0 }) {
      let s = FP8Block.scaleShape(rows: weight.shape[0], columns: weight.shape[1], blockRows: br, blockColumns: bc)
      if [s.rows, s.columns] == scale.shape { return (br, bc) }
    }
    throw DiffError(
      "bad-scale", file: shard, tensor: scale.name,
      "shape \(scale.shape) fits neither the config's weight_block_size nor 128×128 blocks of \(weight.shape)")
  }
}
