import CompressedTensors
import Testing

@Suite("DeepSeek-V3 module names")
struct DeepSeekV3ModulesTests {
  @Test(
    "Module kinds",
    arguments: [
      ("model.layers.3.mlp.experts.17.down_proj", ModuleKind.routedExpertDown),
      ("model.layers.3.mlp.experts.17.up_proj", .routedExpertUp),
      ("model.layers.3.mlp.experts.0.gate_proj", .routedExpertGate),
      ("language_model.model.layers.3.mlp.experts.17.down_proj", .routedExpertDown),
      ("model.layers.0.mlp.gate_proj", .denseMLP),
      ("model.layers.0.mlp.down_proj", .denseMLP),
      ("model.layers.1.mlp.shared_experts.up_proj", .sharedExpert),
      ("model.layers.1.mlp.gate", .router),
      ("model.layers.1.self_attn.kv_a_proj_with_mqa", .attention),
      ("model.layers.1.self_attn.o_proj", .attention),
      ("model.layers.1.self_attn.q_a_layernorm", .norm),
      ("model.layers.1.input_layernorm", .norm),
      ("model.layers.1.post_attention_layernorm", .norm),
      ("model.norm", .norm),
      ("model.embed_tokens", .embedding),
      ("lm_head", .head),
      ("language_model.lm_head", .head),
      ("model.layers.61.eh_proj", .other),
      ("model.layers.x.mlp.gate", .other),
      ("model.layers.1.mlp.experts.07.up_proj", .other),
      ("vision_tower.blocks.0.attn", .other),
    ])
  func kinds(name: String, kind: ModuleKind) {
    #expect(DeepSeekV3Modules.kind(of: name) == kind)
  }

  @Test("Linear modules end in _proj, or are kv_a_proj_with_mqa or lm_head")
  func linear() {
    for name in [
      "model.layers.1.self_attn.kv_a_proj_with_mqa", "model.layers.1.self_attn.q_b_proj",
      "lm_head", "model.layers.1.mlp.experts.5.gate_proj", "model.layers.0.mlp.up_proj",
    ] {
      #expect(DeepSeekV3Modules.isLinear(name), "\(name)")
    }
    for name in [
      "model.layers.1.mlp.gate", "model.embed_tokens", "model.norm",
      "model.layers.1.input_layernorm", "model.layers.1.self_attn.kv_a_layernorm",
    ] {
      #expect(!DeepSeekV3Modules.isLinear(name), "\(name)")
    }
  }

  @Test("Layer and expert indices")
  func indices() {
    #expect(DeepSeekV3Modules.layerIndex(of: "model.layers.3.mlp.experts.17.down_proj") == 3)
    #expect(DeepSeekV3Modules.expertIndex(of: "model.layers.3.mlp.experts.17.down_proj") == 17)
    #expect(DeepSeekV3Modules.layerIndex(of: "language_model.model.layers.60.mlp.gate") == 60)
    #expect(DeepSeekV3Modules.expertIndex(of: "model.layers.60.mlp.gate") == nil)
    #expect(DeepSeekV3Modules.layerIndex(of: "lm_head") == nil)
    #expect(DeepSeekV3Modules.layerIndex(of: "model.layers.+3.mlp") == nil)
  }

  @Test("ModuleKind raw values are kebab-case")
  func rawValues() {
    #expect(ModuleKind.allCases.count == 11)
    #expect(ModuleKind.denseMLP.rawValue == "dense-mlp")
    #expect(ModuleKind.routedExpertDown.rawValue == "routed-expert-down")
    for kind in ModuleKind.allCases {
      #expect(kind.rawValue == kind.rawValue.lowercased() && !kind.rawValue.contains("_"))
    }
  }
}
