#!/usr/bin/env python3
"""A synthetic K2-shaped INT4 checkpoint for the `ckpt convert` benchmark (issue 4).

Shard 1 holds the routed experts of one Kimi K2 MoE layer, cut to EXPERTS
experts (default 64): gate_proj and up_proj [2048, 7168], down_proj [7168, 2048],
INT4 group 32 symmetric, packed by compressed-tensors' own pack-quantized
compressor (`BaseCompressor.load_from_registry("pack-quantized").compress`).
Weights are `bf16(q * s)` with `s = bf16(absmax/7)` as in a QAT checkpoint, so
about a third of `q * s` products need more than BF16's 8 significant bits, like
K2 Thinking's. 64 experts give a 1.59 GB shard and 5.64 GB of BF16 output.
Shard 2 holds the rest of a 2-layer K2 (attention, dense layer, router, shared
expert, embeddings) in BF16 with few heads and a small vocabulary, so the folder
is a whole checkpoint that `ckpt validate` accepts.

Usage: python3 scripts/make-k2-bench-shard.py OUT_DIR [--experts 64] [--seed 0]
Needs: torch (CPU wheel), compressed-tensors, safetensors.
"""
import argparse
import json
import os
import time

import torch
import safetensors.torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

HIDDEN = 7168
MOE = 2048
GROUP = 32
QARGS = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=GROUP,
                         dynamic=False, observer="minmax")
QSCHEME = QuantizationScheme(targets=["Linear"], weights=QARGS)
IGNORE = ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"]


def qconfig():
    return QuantizationConfig(config_groups={"group_0": QSCHEME}, quant_method="compressed-tensors",
                              format="pack-quantized", quantization_status="compressed", kv_cache_scheme=None,
                              ignore=IGNORE)


def module(compressor, gen, prefix, out_f, in_f):
    w = torch.randn(out_f, in_f, generator=gen, dtype=torch.float32) * 0.02
    wg = w.view(out_f, in_f // GROUP, GROUP)
    scale = (wg.abs().amax(dim=-1) / 7.0).to(torch.bfloat16)
    q = torch.clamp(torch.round(wg / scale.float().unsqueeze(-1)), -7, 7)
    w_grid = (q * scale.float().unsqueeze(-1)).view(out_f, in_f).to(torch.bfloat16)
    sd = {prefix + ".weight": w_grid, prefix + ".weight_scale": scale,
          prefix + ".weight_zero_point": torch.zeros_like(scale, dtype=torch.int8)}
    comp = compressor.compress(sd, names_to_scheme={prefix: QSCHEME})
    return {k: v.contiguous() for k, v in comp.items()}


VOCAB = 1024
HEADS = 8
DENSE = 2048


def rest_of_model(gen, experts):
    """The non-expert tensors of a 2-layer K2 (layer 0 dense, layer 1 MoE), BF16 like K2's."""
    def w(*shape, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=gen) * 0.02).to(dtype)
    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "lm_head.weight": w(VOCAB, HIDDEN),
         "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16)}
    for layer in range(2):
        p = f"model.layers.{layer}"
        t[p + ".input_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        t[p + ".post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        a = p + ".self_attn"
        t[a + ".q_a_proj.weight"] = w(1536, HIDDEN)
        t[a + ".q_a_layernorm.weight"] = torch.ones(1536, dtype=torch.bfloat16)
        t[a + ".q_b_proj.weight"] = w(HEADS * 192, 1536)
        t[a + ".kv_a_proj_with_mqa.weight"] = w(512 + 64, HIDDEN)
        t[a + ".kv_a_layernorm.weight"] = torch.ones(512, dtype=torch.bfloat16)
        t[a + ".kv_b_proj.weight"] = w(HEADS * 256, 512)
        t[a + ".o_proj.weight"] = w(HIDDEN, HEADS * 128)
    t["model.layers.0.mlp.gate_proj.weight"] = w(DENSE, HIDDEN)
    t["model.layers.0.mlp.up_proj.weight"] = w(DENSE, HIDDEN)
    t["model.layers.0.mlp.down_proj.weight"] = w(HIDDEN, DENSE)
    m = "model.layers.1.mlp"
    t[m + ".gate.weight"] = w(experts, HIDDEN)
    t[m + ".gate.e_score_correction_bias"] = w(experts, dtype=torch.float32)
    t[m + ".shared_experts.gate_proj.weight"] = w(MOE, HIDDEN)
    t[m + ".shared_experts.up_proj.weight"] = w(MOE, HIDDEN)
    t[m + ".shared_experts.down_proj.weight"] = w(HIDDEN, MOE)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(a.seed)
    compressor = BaseCompressor.load_from_registry("pack-quantized", config=qconfig())
    tensors = {}
    t0 = time.time()
    for e in range(a.experts):
        p = f"model.layers.1.mlp.experts.{e}"
        tensors.update(module(compressor, gen, p + ".gate_proj", MOE, HIDDEN))
        tensors.update(module(compressor, gen, p + ".up_proj", MOE, HIDDEN))
        tensors.update(module(compressor, gen, p + ".down_proj", HIDDEN, MOE))
    shard = "model-00001-of-00002.safetensors"
    safetensors.torch.save_file(tensors, os.path.join(a.out, shard), metadata={"format": "pt"})
    weight_map = {k: shard for k in tensors}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    # Everything else the config implies, small (few heads, small vocabulary), in a second shard.
    rest = rest_of_model(gen, a.experts)
    safetensors.torch.save_file(rest, os.path.join(a.out, "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in rest})
    size += sum(t.numel() * t.element_size() for t in rest.values())
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2", "hidden_size": HIDDEN,
        "moe_intermediate_size": MOE, "intermediate_size": DENSE, "n_routed_experts": a.experts,
        "num_experts_per_tok": 8, "n_shared_experts": 1, "first_k_dense_replace": 1, "num_hidden_layers": 2,
        "vocab_size": VOCAB, "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "kv_lora_rank": 512,
        "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "rms_norm_eps": 1e-05, "torch_dtype": "bfloat16",
        "quantization_config": qconfig().model_dump(),
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{a.out}/{shard}: {len(tensors)} tensors, {os.path.getsize(os.path.join(a.out, shard))} bytes, "
          f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
