import CompressedTensors
import StrictJSON

/// The tensors a DeepSeek-V3-family config (DeepSeek-V3, Kimi K2, K2.5's text
/// model) implies, with their shapes.
///
/// Names follow the Hugging Face DeepSeek-V3 naming (FORMATS.md §3.3); shapes
/// come from the config's dimensions. Layer `i` is dense when
/// `i < first_k_dense_replace` or `i % moe_layer_freq != 0`, otherwise MoE.
public struct DeepSeekInventory: Sendable {
  /// A Linear module: `name` without the `.weight` suffix, `[out, in]`.
  public struct Linear: Sendable, Hashable {
    /// Module name, e.g. `model.layers.1.mlp.experts.0.gate_proj`.
    public let name: String
    /// Output features (rows).
    public let outFeatures: Int
    /// Input features (columns).
    public let inFeatures: Int
  }

  /// Expected Linear modules in layer order.
  public let linears: [Linear]
  /// Expected non-Linear tensors (norms, embeddings, router) with shapes; a
  /// shape of `nil` means any shape is accepted.
  public let tensors: [(name: String, shape: [Int]?)]
  /// `num_hidden_layers`.
  public let layerCount: Int
  /// Extra layers for multi-token prediction (`num_nextn_predict_layers`),
  /// numbered after the main layers; their tensors are accepted, not required.
  public let extraLayerCount: Int
  /// `n_routed_experts`.
  public let routedExperts: Int

  /// The model types this inventory understands.
  public static let modelTypes: Set<String> = ["deepseek_v3", "kimi_k2"]

  /// Builds the inventory from a text config, or returns `nil` when the config
  /// is not of the DeepSeek-V3 family.
  ///
  /// - Throws: ``CheckpointError`` (`invalid-config`) when a required number is missing or invalid.
  public init?(config: JSONObject, prefix: String = "") throws(CheckpointError) {
    let modelType = config["model_type"]?.stringValue ?? ""
    let archs = config["architectures"]?.arrayValue?.compactMap(\.stringValue) ?? []
    guard Self.modelTypes.contains(modelType) || archs.contains("DeepseekV3ForCausalLM") else { return nil }

    func int(_ key: String, default value: Int? = nil, min lo: Int = 1) throws(CheckpointError) -> Int {
      guard let v = config[key], !v.isNull else {
        if let value { return value }
        throw CheckpointError("invalid-config", file: Checkpoint.configFileName, "\"\(key)\" is missing")
      }
      guard let i = v.intValue, i >= lo, i <= 1 << 24 else {
        throw CheckpointError("invalid-config", file: Checkpoint.configFileName, "\"\(key)\" is \(JSONWriter.string(v)), expected an integer in \(lo)...\(1 << 24)")
      }
      return i
    }
    let hidden = try int("hidden_size")
    let layers = try int("num_hidden_layers")
    let vocab = try int("vocab_size")
    let heads = try int("num_attention_heads")
    let denseInter = try int("intermediate_size")
    let moeInter = try int("moe_intermediate_size")
    let experts = try int("n_routed_experts", default: 0, min: 0)
    let shared = try int("n_shared_experts", default: 0, min: 0)
    let firstDense = try int("first_k_dense_replace", default: 0, min: 0)
    let freq = try int("moe_layer_freq", default: 1)
    let kvRank = try int("kv_lora_rank")
    let nope = try int("qk_nope_head_dim")
    let rope = try int("qk_rope_head_dim")
    let vDim = try int("v_head_dim")
    let qRank: Int? = config["q_lora_rank"].flatMap { $0.isNull ? nil : $0 } == nil ? nil : try int("q_lora_rank")
    let nextn = try int("num_nextn_predict_layers", default: 0, min: 0)
    // A hostile config must not make the inventory enumerate billions of names
    // (Kimi K2: 61 layers × 384 experts).
    guard layers <= 4096, experts <= 65_536, layers * (3 * experts + 16) <= 20_000_000 else {
      throw CheckpointError("invalid-config", file: Checkpoint.configFileName, "num_hidden_layers = \(layers) and n_routed_experts = \(experts) imply more tensors than any real model has (limit: 4096 layers, 65536 experts, 20 million Linears)")
    }
    let tied = config["tie_word_embeddings"]?.boolValue ?? false
    let noaux = (config["topk_method"]?.stringValue ?? "noaux_tc") == "noaux_tc"

    var linears: [Linear] = []
    var tensors: [(String, [Int]?)] = [("\(prefix)model.embed_tokens.weight", [vocab, hidden])]
    for i in 0..<layers {
      let l = "\(prefix)model.layers.\(i)"
      tensors.append(("\(l).input_layernorm.weight", [hidden]))
      tensors.append(("\(l).post_attention_layernorm.weight", [hidden]))
      let qHead = nope + rope
      if let qRank {
        linears.append(Linear(name: "\(l).self_attn.q_a_proj", outFeatures: qRank, inFeatures: hidden))
        tensors.append(("\(l).self_attn.q_a_layernorm.weight", [qRank]))
        linears.append(Linear(name: "\(l).self_attn.q_b_proj", outFeatures: heads * qHead, inFeatures: qRank))
      } else {
        linears.append(Linear(name: "\(l).self_attn.q_proj", outFeatures: heads * qHead, inFeatures: hidden))
      }
      linears.append(Linear(name: "\(l).self_attn.kv_a_proj_with_mqa", outFeatures: kvRank + rope, inFeatures: hidden))
      tensors.append(("\(l).self_attn.kv_a_layernorm.weight", [kvRank]))
      linears.append(Linear(name: "\(l).self_attn.kv_b_proj", outFeatures: heads * (nope + vDim), inFeatures: kvRank))
      linears.append(Linear(name: "\(l).self_attn.o_proj", outFeatures: hidden, inFeatures: heads * vDim))
      let isMoE = experts > 0 && i >= firstDense && i % freq == 0
      if isMoE {
        tensors.append(("\(l).mlp.gate.weight", [experts, hidden]))
        if noaux { tensors.append(("\(l).mlp.gate.e_score_correction_bias", [experts])) }
        if shared > 0 {
          let s = moeInter * shared
          linears.append(Linear(name: "\(l).mlp.shared_experts.gate_proj", outFeatures: s, inFeatures: hidden))
          linears.append(Linear(name: "\(l).mlp.shared_experts.up_proj", outFeatures: s, inFeatures: hidden))
          linears.append(Linear(name: "\(l).mlp.shared_experts.down_proj", outFeatures: hidden, inFeatures: s))
        }
        for e in 0..<experts {
          let x = "\(l).mlp.experts.\(e)"
          linears.append(Linear(name: "\(x).gate_proj", outFeatures: moeInter, inFeatures: hidden))
          linears.append(Linear(name: "\(x).up_proj", outFeatures: moeInter, inFeatures: hidden))
          linears.append(Linear(name: "\(x).down_proj", outFeatures: hidden, inFeatures: moeInter))
        }
      } else {
        linears.append(Linear(name: "\(l).mlp.gate_proj", outFeatures: denseInter, inFeatures: hidden))
        linears.append(Linear(name: "\(l).mlp.up_proj", outFeatures: denseInter, inFeatures: hidden))
        linears.append(Linear(name: "\(l).mlp.down_proj", outFeatures: hidden, inFeatures: denseInter))
      }
    }
    tensors.append(("\(prefix)model.norm.weight", [hidden]))
    if !tied { linears.append(Linear(name: "\(prefix)lm_head", outFeatures: vocab, inFeatures: hidden)) }
    self.linears = linears
    self.tensors = tensors
    self.layerCount = layers
    self.extraLayerCount = nextn
    self.routedExperts = experts
  }

  /// The layer index in a tensor name (`…model.layers.12.…` → 12).
  public static func layerIndex(of name: String) -> Int? { number(after: "model.layers.", in: name) }

  /// The routed-expert index in a tensor name (`…mlp.experts.7.…` → 7).
  public static func expertIndex(of name: String) -> Int? { number(after: ".mlp.experts.", in: name) }

  static func number(after marker: String, in name: String) -> Int? {
    let hay = Array(name.utf8)
    let needle = Array(marker.utf8)
    guard hay.count >= needle.count else { return nil }
    var start: Int? = nil
    for i in 0...(hay.count - needle.count) where hay[i..<(i + needle.count)].elementsEqual(needle) {
      start = i + needle.count
      break
    }
    guard var i = start else { return nil }
    var value = 0
    var digits = 0
    while i < hay.count, hay[i] >= 0x30, hay[i] <= 0x39, digits < 9 {
      value = value * 10 + Int(hay[i] - 0x30)
      digits += 1
      i += 1
    }
    return digits == 0 ? nil : value
  }
}
