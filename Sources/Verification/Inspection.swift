import Checkpoint
import CompressedTensors
import SafeTensors
import StrictJSON

/// What `ckpt inspect` shows: architecture numbers, the quantization scheme,
/// shards, dtypes, and modules by kind, read from headers and config only.
public struct Inspection: Sendable {
  /// Per-shard facts.
  public struct Shard: Sendable {
    /// File name.
    public let name: String
    /// File size.
    public let bytes: Int
    /// Tensors in the header.
    public let tensors: Int
  }

  /// Tensors and bytes of one dtype.
  public struct DTypeTotal: Sendable {
    /// The dtype.
    public let dtype: DType
    /// Number of tensors.
    public var tensors: Int
    /// Bytes of data.
    public var bytes: Int
  }

  /// Modules of one kind (attention, routed expert gate, …).
  public struct KindTotal: Sendable {
    /// The module kind.
    public let kind: ModuleKind
    /// Modules stored quantized (compressed-tensors triplets).
    public var quantized: Int
    /// Modules or tensors stored plain.
    public var plain: Int
    /// The dtypes of the stored tensors.
    public var dtypes: Set<DType>
    /// Bytes of data.
    public var bytes: Int
    /// Layers that hold quantized modules of this kind.
    public var quantizedLayers: Set<Int>
  }

  /// The checkpoint.
  public let checkpoint: Checkpoint
  /// Selected config numbers, in a fixed order, when present.
  public let architecture: [(key: String, value: JSONValue)]
  /// The quantization config, if any.
  public let quantization: QuantizationSource?
  /// Shards with valid headers.
  public let shards: [Shard]
  /// Totals by dtype, largest first.
  public let dtypes: [DTypeTotal]
  /// Totals by module kind.
  public let kinds: [KindTotal]
  /// Problems that kept part of the checkpoint from being read.
  public let problems: [Problem]

  /// The config keys shown, in order.
  public static let architectureKeys = [
    "architectures", "model_type", "torch_dtype", "hidden_size", "num_hidden_layers", "first_k_dense_replace",
    "intermediate_size", "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
    "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "routed_scaling_factor", "topk_method",
    "scoring_func", "num_nextn_predict_layers", "tie_word_embeddings",
  ]

  /// Reads the checkpoint's headers (in parallel) and summarizes them.
  public init(_ checkpoint: Checkpoint, jobs: Int = Parallel.defaultJobs) {
    self.checkpoint = checkpoint
    var problems = checkpoint.loadProblems
    var arch: [(String, JSONValue)] = []
    if let root = checkpoint.config, let text = checkpoint.textConfig {
      for key in Self.architectureKeys {
        if let v = text[key] ?? root[key] { arch.append((key, v)) }
      }
    }
    self.architecture = arch
    var quantization: QuantizationSource? = nil
    do { quantization = try checkpoint.quantization() } catch { problems.append(contentsOf: error.problems) }
    self.quantization = quantization

    let names = checkpoint.shards + checkpoint.unindexedShards
    let results = Parallel.map(names.count, jobs: jobs) { i -> Result<SafeTensorsHeader, SafeTensorsError> in
      Result { () throws(SafeTensorsError) in try SafeTensorsHeader.read(from: checkpoint.pathOf(names[i])) }
    }
    var shards: [Shard] = []
    var dtypes: [DType: DTypeTotal] = [:]
    var kinds: [ModuleKind: KindTotal] = [:]
    var quantizedSeen = Set<String>()
    for (name, r) in zip(names, results) {
      switch r {
      case .failure(let e):
        problems.append(Problem(e, file: name))
      case .success(let h):
        shards.append(Shard(name: name, bytes: h.fileSize, tensors: h.tensors.count))
        for t in h.tensors {
          dtypes[t.dtype, default: DTypeTotal(dtype: t.dtype, tensors: 0, bytes: 0)].tensors += 1
          dtypes[t.dtype]!.bytes += t.byteCount
          let (module, suffix) = Self.module(of: t.name)
          let kind = DeepSeekV3Modules.kind(of: module)
          var k = kinds[kind] ?? KindTotal(kind: kind, quantized: 0, plain: 0, dtypes: [], bytes: 0, quantizedLayers: [])
          k.dtypes.insert(t.dtype)
          k.bytes += t.byteCount
          if suffix == "weight_packed" {
            if quantizedSeen.insert(module).inserted {
              k.quantized += 1
              if let l = DeepSeekInventory.layerIndex(of: module) { k.quantizedLayers.insert(l) }
            }
          } else if !Validator.quantSuffixes.contains(suffix) && suffix != "weight_scale_inv" {
            k.plain += 1
          }
          kinds[kind] = k
        }
      }
    }
    self.shards = shards
    self.dtypes = dtypes.values.sorted { ($0.bytes, $0.dtype.rawValue) > ($1.bytes, $1.dtype.rawValue) }
    self.kinds = kinds.values.sorted { a, b in
      (ModuleKind.allCases.firstIndex(of: a.kind) ?? 0) < (ModuleKind.allCases.firstIndex(of: b.kind) ?? 0)
    }
    self.problems = problems
  }

  /// Splits a tensor name into module and last component (`weight`, `bias`, …).
  static func module(of name: String) -> (String, String) {
    guard let dot = name.lastIndex(of: ".") else { return (name, "") }
    return (String(name[..<dot]), String(name[name.index(after: dot)...]))
  }

  /// Total bytes of all shards.
  public var totalBytes: Int { shards.reduce(0) { $0 + $1.bytes } }
  /// Total number of tensors.
  public var tensorCount: Int { shards.reduce(0) { $0 + $1.tensors } }
}
