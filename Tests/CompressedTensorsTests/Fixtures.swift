import CompressedTensors
import StrictJSON

/// The Kimi K2 Thinking `quantization_config` of FORMATS.md §3.4, verbatim.
let kimiK2ConfigText = #"""
  { "quant_method": "compressed-tensors", "format": "pack-quantized",
    "quantization_status": "compressed", "kv_cache_scheme": null,
    "config_groups": { "group_0": { "targets": ["Linear"],
        "input_activations": null, "output_activations": null,
        "weights": { "num_bits": 4, "type": "int", "symmetric": true, "strategy": "group",
                     "group_size": 32, "dynamic": false, "observer": "minmax",
                     "observer_kwargs": {}, "actorder": null, "block_structure": null } } },
    "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
               "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"] }
  """#

func parseJSON(_ text: String) throws -> JSONValue {
  try JSONParser.parse(text)
}

func kimiK2JSON() throws -> JSONValue { try parseJSON(kimiK2ConfigText) }

/// A minimal valid compressed-tensors config whose `weights` object is `weights`.
func configJSON(weights: String, extraTopLevel: String = "") throws -> JSONValue {
  try parseJSON(
    """
    {"quant_method": "compressed-tensors", \(extraTopLevel)
     "config_groups": {"group_0": {"targets": ["Linear"], "weights": \(weights)}}}
    """)
}

/// Every module name of a Kimi K2 (DeepSeek-V3) model, 61 layers, layer 0 dense,
/// 384 routed experts per MoE layer, including non-Linear modules (norms,
/// router, embedding).
func kimiK2ModuleNames() -> [String] {
  var names = ["model.embed_tokens"]
  for layer in 0..<61 {
    let p = "model.layers.\(layer)"
    names += [
      "\(p).input_layernorm", "\(p).post_attention_layernorm",
      "\(p).self_attn.q_a_proj", "\(p).self_attn.q_a_layernorm", "\(p).self_attn.q_b_proj",
      "\(p).self_attn.kv_a_proj_with_mqa", "\(p).self_attn.kv_a_layernorm",
      "\(p).self_attn.kv_b_proj", "\(p).self_attn.o_proj",
    ]
    if layer == 0 {
      names += ["\(p).mlp.gate_proj", "\(p).mlp.up_proj", "\(p).mlp.down_proj"]
    } else {
      names += [
        "\(p).mlp.gate", "\(p).mlp.shared_experts.gate_proj", "\(p).mlp.shared_experts.up_proj",
        "\(p).mlp.shared_experts.down_proj",
      ]
      for e in 0..<384 {
        names += [
          "\(p).mlp.experts.\(e).gate_proj", "\(p).mlp.experts.\(e).up_proj",
          "\(p).mlp.experts.\(e).down_proj",
        ]
      }
    }
  }
  names += ["model.norm", "lm_head"]
  return names
}
