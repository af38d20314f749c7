#!/usr/bin/env python3
"""Generate the CheckpointKit test fixtures under Fixtures/.

Deterministic: every random tensor is drawn from a torch.Generator seeded from
sha256("<fixture tag>/<tensor name>"), JSON is written with fixed key order, and
safetensors files are written by safetensors' own save_file. Running the script
twice gives byte-identical outputs (see README.md).

Usage:  python3 Fixtures/make_fixtures.py

Needs: torch, safetensors, numpy, ml_dtypes, compressed-tensors (0.12.2 used).
Only the generated sub-folders/files of Fixtures/ are deleted and rewritten;
make_fixtures.py and README.md are left alone.
"""

import ml_dtypes  # noqa: F401  (import before safetensors.numpy, see README)

import copy
import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import torch

import safetensors
import safetensors.numpy
import safetensors.torch
import compressed_tensors
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.compressors.quantized_compressors.pack_quantized import (
    unpack_from_int32,
)
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
)
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
from compressed_tensors.utils.match import is_match

ROOT = Path(__file__).resolve().parent
GENERATED = [
    "kimi-k2-tiny",
    "kimi-k2-tiny.expected.json",
    "kimi-k25-tiny",
    "kimi-k25-tiny.expected.json",
    "reference",
    "malformed",
]

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_text(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def write_json(path: Path, obj, sort_keys=False):
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def gen_for(tag: str, name: str) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{tag}/{name}".encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(seed & ((1 << 63) - 1))


def bf16_normal(tag, name, shape, std=0.02):
    g = gen_for(tag, name)
    return (torch.randn(shape, generator=g, dtype=torch.float32) * std).to(torch.bfloat16)


def bf16_norm(tag, name, shape):
    g = gen_for(tag, name)
    return (1.0 + 0.01 * torch.randn(shape, generator=g, dtype=torch.float32)).to(torch.bfloat16)


def f32_bias(tag, name, shape):
    g = gen_for(tag, name)
    return torch.randn(shape, generator=g, dtype=torch.float32) * 0.01


ST_DTYPE = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.uint16: "U16", torch.int32: "I32", torch.uint32: "U32", torch.int64: "I64",
    torch.uint64: "U64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float32: "F32", torch.float64: "F64", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2", torch.complex64: "C64",
    torch.float8_e4m3fnuz: "F8_E4M3FNUZ", torch.float8_e5m2fnuz: "F8_E5M2FNUZ",
}


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def parse_safetensors(path: Path):
    """Independent header parse: returns (N, header_dict, data_bytes)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    return n, header, data, raw


def describe_file(path: Path):
    n, header, data, raw = parse_safetensors(path)
    tensors = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        tensors[name] = {
            "dtype": e["dtype"],
            "shape": e["shape"],
            "data_offsets": [b, en],
            "sha256": sha256_bytes(data[b:en]),
        }
    return {
        "size": len(raw),
        "sha256": sha256_bytes(raw),
        "header_length": n,
        "metadata": header.get("__metadata__"),
        "tensors": tensors,
    }


# --------------------------------------------------------------------------
# compressed-tensors objects (the schema is the library's)
# --------------------------------------------------------------------------

K2_IGNORE = [
    "lm_head",
    "re:.*self_attn.*",
    "re:.*shared_experts.*",
    "re:.*mlp\\.(gate|up|gate_up|down)_proj.*",
]
# K2.5-style list (names carry a language_model. prefix, so "lm_head" is a regex).
K25_IGNORE = [
    "re:.*self_attn.*",
    "re:.*shared_experts.*",
    "re:.*mlp\\.(gate|up|gate_up|down)_proj.*",
    "re:.*lm_head.*",
    "re:.*vision_tower.*",
    "re:.*mm_projector.*",
]

QARGS = QuantizationArgs(
    num_bits=4, type="int", symmetric=True, strategy="group", group_size=32,
    dynamic=False, observer="minmax",
)
QSCHEME = QuantizationScheme(targets=["Linear"], weights=QARGS)


def make_qconfig(ignore):
    return QuantizationConfig(
        config_groups={"group_0": QSCHEME},
        quant_method="compressed-tensors",
        format="pack-quantized",
        quantization_status="compressed",
        kv_cache_scheme=None,
        ignore=list(ignore),
    )


# Keys of the quantization_config as shipped with K2 Thinking (FORMATS.md 3.4)
SHIPPED_TOP_KEYS = ["config_groups", "quant_method", "kv_cache_scheme", "format",
                    "quantization_status", "ignore"]
SHIPPED_SCHEME_KEYS = ["targets", "weights", "input_activations", "output_activations"]


def qconfig_dict_shipped(ignore):
    """Library model_dump(), pruned to the key set of FORMATS.md 3.4."""
    full = make_qconfig(ignore).model_dump()
    out = {k: full[k] for k in SHIPPED_TOP_KEYS}
    out["config_groups"] = {
        g: {k: s[k] for k in SHIPPED_SCHEME_KEYS} for g, s in full["config_groups"].items()
    }
    # the library must parse it back to the same object
    assert QuantizationConfig.model_validate(copy.deepcopy(out)) == make_qconfig(ignore)
    return out


def qconfig_dict_full(ignore):
    """Library model_dump() verbatim (includes format: null, global_compression_ratio)."""
    d = make_qconfig(ignore).model_dump()
    assert QuantizationConfig.model_validate(copy.deepcopy(d)) == make_qconfig(ignore)
    return d


COMPRESSOR = BaseCompressor.load_from_registry("pack-quantized", config=make_qconfig(K2_IGNORE))


def make_int4_expert(tag, prefix, out_f, in_f):
    """QAT-emulating INT4 weights on the absmax/7 grid, compressed by the library.

    Returns (compressed dict {prefix.weight_packed/_scale/_shape: tensor}, info).
    """
    assert in_f % 32 == 0
    g = gen_for(tag, prefix + ".weight")
    w = torch.randn(out_f, in_f, generator=g, dtype=torch.float32) * 0.02
    wg = w.view(out_f, in_f // 32, 32)
    scale = (wg.abs().amax(dim=-1) / 7.0).to(torch.bfloat16)          # s = bf16(absmax/7)
    q = torch.clamp(torch.round(wg / scale.float().unsqueeze(-1)), -7, 7)
    assert (q.abs().amax(dim=-1) == 7).all(), "every group must reach |q| = 7"
    q = q.view(out_f, in_f).to(torch.int8)
    # the "trained" BF16 weight lies exactly on the grid: bf16(q * s)
    w_grid = (q.float().view(out_f, in_f // 32, 32) * scale.float().unsqueeze(-1)) \
        .view(out_f, in_f).to(torch.bfloat16)

    # library quantize (with the given scale) must reproduce the codes
    q_lib = quantize(x=w_grid, scale=scale, zero_point=torch.zeros_like(scale, dtype=torch.int8),
                     args=QARGS, dtype=torch.int8)
    assert torch.equal(q_lib, q), f"{prefix}: library quantize != intended codes"

    # library compressor path: weight + weight_scale (+ zero point) -> packed triplet
    sd = {
        prefix + ".weight": w_grid,
        prefix + ".weight_scale": scale,
        prefix + ".weight_zero_point": torch.zeros_like(scale, dtype=torch.int8),
    }
    comp = COMPRESSOR.compress(sd, names_to_scheme={prefix: QSCHEME})
    assert set(comp) == {prefix + ".weight_packed", prefix + ".weight_scale", prefix + ".weight_shape"}, comp.keys()
    comp = {k: v.contiguous() for k, v in sorted(comp.items())}
    info = {"codes": q, "scale": scale, "w_grid": w_grid, "out": out_f, "in": in_f}
    return comp, info


def check_expert_roundtrip(tensors, prefix, info):
    """Library unpack / dequantize of what was *written* gives back the codes."""
    packed = tensors[prefix + ".weight_packed"]
    scale = tensors[prefix + ".weight_scale"]
    shape = tensors[prefix + ".weight_shape"]
    assert packed.dtype == torch.int32
    assert list(shape.tolist()) == [info["out"], info["in"]]
    codes = unpack_from_int32(packed, 4, torch.Size(shape.tolist()))
    assert torch.equal(codes, info["codes"]), prefix
    assert torch.equal(scale, info["scale"]), prefix
    deq = COMPRESSOR.decompress_weight(
        {"weight_packed": packed, "weight_scale": scale, "weight_shape": shape}, QARGS)
    assert deq.dtype == torch.bfloat16
    assert torch.equal(deq, info["w_grid"]), prefix
    deq2 = dequantize(x_q=codes, scale=scale)
    assert torch.equal(deq2, info["w_grid"]), prefix
    f32 = (codes.float().view(info["out"], -1, 32) * scale.float().unsqueeze(-1)).view(info["out"], info["in"])
    hist = torch.bincount((codes.flatten().to(torch.int64) + 8), minlength=16).tolist()
    return {
        "weight_shape": [info["out"], info["in"]],
        "codes_int8_sha256": sha256_bytes(codes.numpy().tobytes()),
        "dequant_bf16_sha256": sha256_bytes(deq.view(torch.int16).numpy().tobytes()),
        "dequant_f32_sha256": sha256_bytes(f32.numpy().tobytes()),
        "code_histogram_from_-8": hist,
        "max_abs_code_every_group": 7,
    }


# --------------------------------------------------------------------------
# model description
# --------------------------------------------------------------------------

K2_TINY = dict(
    hidden_size=256, intermediate_size=320, moe_intermediate_size=96, num_hidden_layers=3,
    first_k_dense_replace=1, moe_layer_freq=1, n_routed_experts=4, num_experts_per_tok=2,
    n_shared_experts=1, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=64,
    kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, vocab_size=1024,
)
K25_TINY = dict(
    hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
    first_k_dense_replace=1, moe_layer_freq=1, n_routed_experts=2, num_experts_per_tok=1,
    n_shared_experts=1, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=32,
    kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16, vocab_size=256,
)
MICRO = dict(
    hidden_size=64, intermediate_size=64, moe_intermediate_size=32, num_hidden_layers=2,
    first_k_dense_replace=1, moe_layer_freq=1, n_routed_experts=2, num_experts_per_tok=1,
    n_shared_experts=1, num_attention_heads=1, num_key_value_heads=1, q_lora_rank=32,
    kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16, vocab_size=64,
)


def text_config(d, qcfg):
    v = d["vocab_size"]
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_deepseek.DeepseekV3Config",
            "AutoModel": "modeling_deepseek.DeepseekV3Model",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
        },
        "aux_loss_alpha": 0.001,
        "bos_token_id": v - 256 if v > 256 else v - 4,
        "eos_token_id": v - 254 if v > 256 else v - 3,
        "pad_token_id": v - 1,
        "ep_size": 1,
        "first_k_dense_replace": d["first_k_dense_replace"],
        "hidden_act": "silu",
        "hidden_size": d["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": d["intermediate_size"],
        "kv_lora_rank": d["kv_lora_rank"],
        "max_position_embeddings": 262144,
        "model_type": "kimi_k2",
        "moe_intermediate_size": d["moe_intermediate_size"],
        "moe_layer_freq": d["moe_layer_freq"],
        "n_group": 1,
        "n_routed_experts": d["n_routed_experts"],
        "n_shared_experts": d["n_shared_experts"],
        "norm_topk_prob": True,
        "num_attention_heads": d["num_attention_heads"],
        "num_experts_per_tok": d["num_experts_per_tok"],
        "num_hidden_layers": d["num_hidden_layers"],
        "num_key_value_heads": d["num_key_value_heads"],
        "num_nextn_predict_layers": 0,
        "pretraining_tp": 1,
        "q_lora_rank": d["q_lora_rank"],
        "qk_nope_head_dim": d["qk_nope_head_dim"],
        "qk_rope_head_dim": d["qk_rope_head_dim"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 1.0, "beta_slow": 1.0, "factor": 64.0, "mscale": 1.0,
            "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn",
        },
        "rope_theta": 50000.0,
        "routed_scaling_factor": 2.827,
        "scoring_func": "sigmoid",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": 1,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.56.2",
        "use_cache": True,
        "v_head_dim": d["v_head_dim"],
        "vocab_size": v,
        "quantization_config": qcfg,
    }
    return cfg


def build_model(d, tag, prefix=""):
    """Returns (ordered {name: tensor}, {expert_prefix: info}, {name: layer or None})."""
    H = d["hidden_size"]
    nh = d["num_attention_heads"]
    qhd = d["qk_nope_head_dim"] + d["qk_rope_head_dim"]
    T = {}
    experts = {}
    layer_of = {}

    def put(name, t, layer):
        T[name] = t.contiguous()
        layer_of[name] = layer

    P = prefix + "model."
    put(P + "embed_tokens.weight", bf16_normal(tag, P + "embed_tokens.weight", (d["vocab_size"], H)), None)
    for i in range(d["num_hidden_layers"]):
        L = f"{P}layers.{i}."
        put(L + "input_layernorm.weight", bf16_norm(tag, L + "input_layernorm.weight", (H,)), i)
        A = L + "self_attn."
        put(A + "q_a_proj.weight", bf16_normal(tag, A + "q_a_proj.weight", (d["q_lora_rank"], H)), i)
        put(A + "q_a_layernorm.weight", bf16_norm(tag, A + "q_a_layernorm.weight", (d["q_lora_rank"],)), i)
        put(A + "q_b_proj.weight", bf16_normal(tag, A + "q_b_proj.weight", (nh * qhd, d["q_lora_rank"])), i)
        put(A + "kv_a_proj_with_mqa.weight",
            bf16_normal(tag, A + "kv_a_proj_with_mqa.weight", (d["kv_lora_rank"] + d["qk_rope_head_dim"], H)), i)
        put(A + "kv_a_layernorm.weight", bf16_norm(tag, A + "kv_a_layernorm.weight", (d["kv_lora_rank"],)), i)
        put(A + "kv_b_proj.weight",
            bf16_normal(tag, A + "kv_b_proj.weight",
                        (nh * (d["qk_nope_head_dim"] + d["v_head_dim"]), d["kv_lora_rank"])), i)
        put(A + "o_proj.weight", bf16_normal(tag, A + "o_proj.weight", (H, nh * d["v_head_dim"])), i)
        put(L + "post_attention_layernorm.weight",
            bf16_norm(tag, L + "post_attention_layernorm.weight", (H,)), i)
        M = L + "mlp."
        moe = i >= d["first_k_dense_replace"] and (i % d["moe_layer_freq"] == 0)
        if not moe:
            I = d["intermediate_size"]
            put(M + "gate_proj.weight", bf16_normal(tag, M + "gate_proj.weight", (I, H)), i)
            put(M + "up_proj.weight", bf16_normal(tag, M + "up_proj.weight", (I, H)), i)
            put(M + "down_proj.weight", bf16_normal(tag, M + "down_proj.weight", (H, I)), i)
        else:
            E = d["n_routed_experts"]
            I = d["moe_intermediate_size"]
            put(M + "gate.weight", bf16_normal(tag, M + "gate.weight", (E, H)), i)
            put(M + "gate.e_score_correction_bias", f32_bias(tag, M + "gate.e_score_correction_bias", (E,)), i)
            S = M + "shared_experts."
            IS = I * d["n_shared_experts"]
            put(S + "gate_proj.weight", bf16_normal(tag, S + "gate_proj.weight", (IS, H)), i)
            put(S + "up_proj.weight", bf16_normal(tag, S + "up_proj.weight", (IS, H)), i)
            put(S + "down_proj.weight", bf16_normal(tag, S + "down_proj.weight", (H, IS)), i)
            for e in range(E):
                for proj, (o, n) in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
                    pf = f"{M}experts.{e}.{proj}"
                    comp, info = make_int4_expert(tag, pf, o, n)
                    for k, v in comp.items():
                        put(k, v, i)
                    experts[pf] = info
    put(P + "norm.weight", bf16_norm(tag, P + "norm.weight", (H,)), "final")
    put(prefix + "lm_head.weight", bf16_normal(tag, prefix + "lm_head.weight", (d["vocab_size"], H)), "final")
    return T, experts, layer_of


def check_ignore_semantics(T, ignore):
    """With targets ["Linear"], only routed experts may be quantized (library matcher)."""
    lin = torch.nn.Linear(1, 1)
    modules = set()
    for name in T:
        for suf in (".weight", ".weight_packed", ".weight_scale", ".weight_shape"):
            if name.endswith(suf):
                m = name[: -len(suf)]
                if m.endswith("_proj") or m.endswith("lm_head"):
                    modules.add(m)
    for m in sorted(modules):
        quantized = is_match(m, lin, ["Linear"], ignore)
        assert quantized == (".mlp.experts." in m), (m, quantized)


def shard_name(i, n):
    return f"model-{i:05d}-of-{n:06d}.safetensors"


def save_shard(path: Path, tensors: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})


def write_index(path: Path, weight_map: dict, total_size: int):
    write_json(path, {"metadata": {"total_size": total_size}, "weight_map": weight_map}, sort_keys=True)


def write_checksums(folder: Path, names):
    lines = [f"{sha256_bytes((folder / n).read_bytes())}  {n}\n" for n in sorted(names)]
    write_text(folder / "checksums.sha256", "".join(lines))


def write_sidecar_files(folder: Path, d, model_name):
    v = d["vocab_size"]
    write_json(folder / "generation_config.json", {
        "bos_token_id": v - 256 if v > 256 else v - 4,
        "eos_token_id": v - 254 if v > 256 else v - 3,
        "max_length": 262144,
        "transformers_version": "4.56.2",
    })
    write_json(folder / "tokenizer_config.json", {
        "added_tokens_decoder": {},
        "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]},
        "bos_token": "[BOS]",
        "eos_token": "[EOS]",
        "pad_token": "[PAD]",
        "model_max_length": 262144,
        "tokenizer_class": "TikTokenTokenizer",
        "chat_template_file": "chat_template.jinja",
    })
    write_text(folder / "chat_template.jinja",
               "{#- Stand-in chat template for the CheckpointKit test fixture. -#}\n"
               "{%- for message in messages -%}\n"
               "<|im_{{ message['role'] }}|>{{ message['content'] }}<|im_end|>\n"
               "{%- endfor -%}\n"
               "{%- if add_generation_prompt -%}<|im_assistant|>{%- endif -%}\n")
    # tiktoken BPE ranks: "<base64 token> <rank>" per line (dummy content)
    import base64
    toks = [b"!", b"\"", b"#", b"a", b"b", b"ab", b" the", b"\xe4\xbd\xa0"]
    write_text(folder / "tiktoken.model",
               "".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(toks)))
    write_text(folder / "tokenization_kimi.py",
               "# Stand-in for tokenization_kimi.py of the real checkpoint (test fixture).\n"
               "# Not executable model code.\n")
    write_text(folder / "configuration_deepseek.py",
               "# Stand-in for configuration_deepseek.py of the real checkpoint (test fixture).\n"
               "# Not executable model code.\n")
    write_text(folder / "modeling_deepseek.py",
               "# Stand-in for modeling_deepseek.py of the real checkpoint (test fixture).\n"
               "# Not executable model code.\n")
    write_text(folder / "README.md",
               f"# {model_name} (test fixture)\n\n"
               "Tiny random checkpoint in the Kimi K2 Thinking layout, generated by\n"
               "`Fixtures/make_fixtures.py` for CheckpointKit tests. Not a real model.\n")
    write_text(folder / "LICENSE",
               "Stand-in LICENSE file for a CheckpointKit test fixture.\n"
               "The tensors are random numbers generated by Fixtures/make_fixtures.py.\n")


def write_model_checkpoint(folder: Path, shards: dict):
    """shards: {filename: {name: tensor}}. Returns (weight_map, total_size)."""
    weight_map, total = {}, 0
    for fname, tensors in shards.items():
        save_shard(folder / fname, tensors)
        for name, t in tensors.items():
            assert name not in weight_map
            weight_map[name] = fname
            total += tensor_nbytes(t)
    write_index(folder / "model.safetensors.index.json", weight_map, total)
    return weight_map, total


def expected_for(folder: Path, shard_files, experts, extra):
    exp = {"generator": generator_info(), **extra, "shards": {}, "tensors": {}, "quantized_modules": {}}
    loaded = {}
    for fname in shard_files:
        desc = describe_file(folder / fname)
        exp["shards"][fname] = {
            "size": desc["size"], "sha256": desc["sha256"], "header_length": desc["header_length"],
            "tensor_count": len(desc["tensors"]),
        }
        for name, t in sorted(desc["tensors"].items()):
            exp["tensors"][name] = {
                "dtype": t["dtype"], "shape": t["shape"], "sha256": t["sha256"],
                "shard": fname, "data_offsets": t["data_offsets"],
            }
        loaded.update(safetensors.torch.load_file(str(folder / fname)))
    for pf in sorted(experts):
        exp["quantized_modules"][pf] = check_expert_roundtrip(loaded, pf, experts[pf])
    exp["total_size"] = sum(
        (e["data_offsets"][1] - e["data_offsets"][0]) for e in exp["tensors"].values())
    return exp


def generator_info():
    return {
        "script": "Fixtures/make_fixtures.py",
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "compressed_tensors": compressed_tensors.__version__,
        "numpy": np.__version__,
        "ml_dtypes": ml_dtypes.__version__,
    }


# --------------------------------------------------------------------------
# 1. kimi-k2-tiny
# --------------------------------------------------------------------------


def make_k2_tiny():
    tag = "kimi-k2-tiny"
    folder = ROOT / tag
    d = K2_TINY
    T, experts, layer_of = build_model(d, tag)
    check_ignore_semantics(T, K2_IGNORE)
    n = 3
    shards = {shard_name(i, n): {} for i in range(1, n + 1)}
    for name, t in T.items():
        L = layer_of[name]
        idx = 1 if (L is None or L == 0) else (2 if L == 1 else 3)
        shards[shard_name(idx, n)][name] = t
    cfg = text_config(d, qconfig_dict_shipped(K2_IGNORE))
    write_json(folder / "config.json", cfg)
    weight_map, total = write_model_checkpoint(folder, shards)
    write_sidecar_files(folder, d, "Kimi-K2-Thinking-tiny")
    write_checksums(folder, shards.keys())
    exp = expected_for(folder, list(shards), experts, {
        "layout": "kimi_k2", "tensor_prefix": "",
        "weight_shape_dtype": ST_DTYPE[T["model.layers.1.mlp.experts.0.gate_proj.weight_shape"].dtype],
    })
    assert exp["total_size"] == total
    exp["checksums_file"] = "checksums.sha256"
    write_json(ROOT / "kimi-k2-tiny.expected.json", exp)
    return exp


# --------------------------------------------------------------------------
# 2. kimi-k25-tiny
# --------------------------------------------------------------------------


def make_k25_tiny():
    tag = "kimi-k25-tiny"
    folder = ROOT / tag
    d = K25_TINY
    prefix = "language_model."
    T, experts, layer_of = build_model(d, tag, prefix=prefix)
    check_ignore_semantics(T, K25_IGNORE)
    n = 2
    shards = {shard_name(i, n): {} for i in range(1, n + 1)}
    for name, t in T.items():
        L = layer_of[name]
        idx = 1 if (L is None or L == 0) else 2
        shards[shard_name(idx, n)][name] = t
    tc = text_config(d, qconfig_dict_full(K25_IGNORE))
    tc.pop("auto_map")  # the K2.5 wrapper carries its own auto_map
    v = d["vocab_size"]
    cfg = {
        "architectures": ["KimiK25ForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_kimi_k25.KimiK25Config",
            "AutoModel": "modeling_kimi_k25.KimiK25ForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_kimi_k25.KimiK25ForConditionalGeneration",
        },
        "bos_token_id": v - 256,
        "eos_token_id": v - 254,
        "pad_token_id": v - 1,
        "model_type": "kimi_k25",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.56.2",
        "text_config": tc,
    }
    write_json(folder / "config.json", cfg)
    weight_map, total = write_model_checkpoint(folder, shards)
    write_sidecar_files(folder, d, "Kimi-K2.5-tiny")
    write_checksums(folder, shards.keys())
    exp = expected_for(folder, list(shards), experts, {
        "layout": "kimi_k25", "tensor_prefix": prefix,
        "weight_shape_dtype": ST_DTYPE[T[prefix + "model.layers.1.mlp.experts.0.gate_proj.weight_shape"].dtype],
    })
    assert exp["total_size"] == total
    exp["checksums_file"] = "checksums.sha256"
    write_json(ROOT / "kimi-k25-tiny.expected.json", exp)
    return exp


# --------------------------------------------------------------------------
# 3. reference writer files
# --------------------------------------------------------------------------


def make_reference():
    folder = ROOT / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}

    all_dtypes = {
        "bool": torch.tensor([True, False, True]),
        "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "i8": torch.tensor([-128, -1, 127], dtype=torch.int8),
        "i16": torch.tensor([-32768, -1, 32767], dtype=torch.int16),
        "u16": torch.from_numpy(np.array([0, 1, 65535], dtype=np.uint16)),
        "i32": torch.tensor([-2**31, -1, 2**31 - 1], dtype=torch.int32),
        "u32": torch.from_numpy(np.array([0, 1, 2**32 - 1], dtype=np.uint32)),
        "i64": torch.tensor([-2**63, -1, 2**63 - 1], dtype=torch.int64),
        "u64": torch.from_numpy(np.array([0, 1, 2**64 - 1], dtype=np.uint64)),
        "f16": torch.tensor([1.0, -2.5, 65504.0], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -2.5, 3.0e38], dtype=torch.bfloat16),
        "f32": torch.tensor([1.0, -2.5, 3.1415927], dtype=torch.float32),
        "f64": torch.tensor([1.0, -2.5, 3.141592653589793], dtype=torch.float64),
        "f8_e4m3": torch.tensor([1.0, -448.0, 0.001953125], dtype=torch.float32).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.tensor([1.0, -57344.0, 2.0 ** -16], dtype=torch.float32).to(torch.float8_e5m2),
        "f32_2x3": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "bf16_2x3": torch.arange(6, dtype=torch.float32).reshape(2, 3).to(torch.bfloat16),
    }
    safetensors.torch.save_file(all_dtypes, str(folder / "all-dtypes.safetensors"), metadata={"format": "pt"})
    files["all-dtypes.safetensors"] = "safetensors.torch.save_file; one tensor per dtype listed in the brief"

    extra = {
        "c64": torch.tensor([1 + 2j, -3.5 + 0.25j], dtype=torch.complex64),
        "f8_e4m3fnuz": torch.tensor([1.0, -2.0], dtype=torch.float32).to(torch.float8_e4m3fnuz),
        "f8_e5m2fnuz": torch.tensor([1.0, -2.0], dtype=torch.float32).to(torch.float8_e5m2fnuz),
    }
    safetensors.torch.save_file(extra, str(folder / "extra-dtypes.safetensors"), metadata={"format": "pt"})
    files["extra-dtypes.safetensors"] = "safetensors.torch.save_file; C64, F8_E4M3FNUZ, F8_E5M2FNUZ"

    np_tensors = {
        "bool": np.array([True, False], dtype=bool),
        "u8": np.array([0, 255], dtype=np.uint8),
        "i8": np.array([-128, 127], dtype=np.int8),
        "i16": np.array([-32768, 32767], dtype=np.int16),
        "u16": np.array([0, 65535], dtype=np.uint16),
        "i32": np.array([-2**31, 2**31 - 1], dtype=np.int32),
        "u32": np.array([0, 2**32 - 1], dtype=np.uint32),
        "i64": np.array([-2**63, 2**63 - 1], dtype=np.int64),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "f16": np.array([1.0, -2.5], dtype=np.float16),
        "f32": np.array([[1.0, -2.5], [0.5, 4.0]], dtype=np.float32),
        "f64": np.array([1.0, -2.5], dtype=np.float64),
    }
    safetensors.numpy.save_file(np_tensors, str(folder / "numpy-dtypes.safetensors"), metadata={"format": "pt"})
    files["numpy-dtypes.safetensors"] = "safetensors.numpy.save_file; every dtype safetensors.numpy 0.8.0 maps (no BF16/F8 there)"

    scalar_empty = {
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "scalar_i64": torch.tensor(-7, dtype=torch.int64),
        "empty": torch.zeros((0, 4), dtype=torch.bfloat16),
        "empty_1d": torch.zeros((0,), dtype=torch.int32),
    }
    safetensors.torch.save_file(scalar_empty, str(folder / "scalar-and-empty.safetensors"), metadata={"format": "pt"})
    files["scalar-and-empty.safetensors"] = "rank-0 tensors (shape []) and empty tensors (shape [0,4], [0])"

    names = {
        "caf\u00e9.weight": torch.tensor([1.0], dtype=torch.float32),
        "\u65e5\u672c\u8a9e": torch.tensor([2.0], dtype=torch.float32),
        "emoji\U0001F600": torch.tensor([3.0], dtype=torch.float32),
        'quote"name': torch.tensor([4.0], dtype=torch.float32),
        "back\\slash": torch.tensor([5.0], dtype=torch.float32),
        "slash/name": torch.tensor([6.0], dtype=torch.float32),
        "tab\tnewline\nname": torch.tensor([7.0], dtype=torch.float32),
        "ctrl\u0001name": torch.tensor([8.0], dtype=torch.float32),
    }
    safetensors.torch.save_file(names, str(folder / "escaped-names.safetensors"), metadata={"format": "pt"})
    files["escaped-names.safetensors"] = "names with non-ASCII (2,3,4-byte UTF-8), quote, backslash, slash, tab/newline, U+0001"

    safetensors.torch.save_file({}, str(folder / "no-tensors.safetensors"), metadata={"format": "pt"})
    files["no-tensors.safetensors"] = "zero tensors, only __metadata__"

    # NOTE: no file with a second __metadata__ key: the Rust writer keeps __metadata__ in a
    # HashMap, so with more than one key their order (and the file bytes) varies run to run.

    manifest = {"generator": generator_info(), "files": {}}
    for fname, note in files.items():
        p = folder / fname
        n, header, data, raw = parse_safetensors(p)
        assert len(raw) < 4096, fname
        desc = describe_file(p)
        manifest["files"][fname] = {
            "note": note,
            "size": desc["size"],
            "sha256": desc["sha256"],
            "header_length": n,
            "header_text": raw[8:8 + n].decode("utf-8"),
            "metadata": desc["metadata"],
            "tensor_order": [k for k in header if k != "__metadata__"],
            "tensors": {k: {**v, "data_hex": data[v["data_offsets"][0]:v["data_offsets"][1]].hex()}
                        for k, v in desc["tensors"].items()},
        }
    write_json(folder / "expected.json", manifest)


# --------------------------------------------------------------------------
# 4a. malformed single safetensors files (hand-built bytes)
# --------------------------------------------------------------------------

def jdump(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


def entry_json(dtype, shape, offsets, drop_offsets=False):
    parts = [f'"dtype":{jdump(dtype)}', f'"shape":{jdump(shape)}']
    if not drop_offsets:
        parts.append(f'"data_offsets":{jdump(offsets)}')
    return "{" + ",".join(parts) + "}"


def header_text(entries, metadata='{"format":"pt"}'):
    """entries: list of (name, entry_json_text). Keys written in the order given."""
    items = []
    if metadata is not None:
        items.append(f'"__metadata__":{metadata}')
    for name, ej in entries:
        items.append(f"{jdump(name)}:{ej}")
    return "{" + ",".join(items) + "}"


def sf_file(htext, data: bytes, pad=True, length=None):
    hb = htext.encode("utf-8") if isinstance(htext, str) else htext
    if pad:
        hb += b" " * ((8 - len(hb) % 8) % 8)
    n = len(hb) if length is None else length
    return struct.pack("<Q", n) + hb + data


ALPHA = ("model.alpha.weight", "F32", [2, 2], struct.pack("<4f", 1.0, -2.0, 0.5, 3.25))
BETA = ("model.beta.weight", "I32", [2], struct.pack("<2i", 7, -1))
GAMMA = ("model.gamma.weight", "BF16", [3], bytes.fromhex("803f00bf0040"))  # 1.0, -0.5, 2.0


def base_entries(overrides=None):
    """Sequential offsets for ALPHA, BETA, GAMMA; overrides: {name: dict(dtype, shape, offsets, drop)}."""
    overrides = overrides or {}
    entries, data, off = [], b"", 0
    for name, dt, shape, blob in (ALPHA, BETA, GAMMA):
        o = overrides.get(name, {})
        blob = o.get("blob", blob)
        offs = o.get("offsets", [off, off + len(blob)])
        entries.append((name, entry_json(o.get("dtype", dt), o.get("shape", shape), offs,
                                         drop_offsets=o.get("drop", False))))
        data += blob
        off += len(blob)
    return entries, data


def make_malformed_safetensors(manifest):
    folder = ROOT / "malformed" / "safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    B = "model.beta.weight"

    def add(fname, content: bytes, code, tensor=None, note=""):
        (folder / fname).write_bytes(content)
        manifest.append({"path": f"malformed/safetensors/{fname}", "code": code, "file": fname,
                         "tensor": tensor, "note": note})

    entries, data = base_entries()
    valid = sf_file(header_text(entries), data)
    # my hand-built bytes must equal the reference writer's bytes
    ref = safetensors.torch.save(
        {ALPHA[0]: torch.tensor([[1.0, -2.0], [0.5, 3.25]], dtype=torch.float32),
         BETA[0]: torch.tensor([7, -1], dtype=torch.int32),
         GAMMA[0]: torch.tensor([1.0, -0.5, 2.0], dtype=torch.bfloat16)}, metadata={"format": "pt"})
    assert valid == ref, "hand-built base file differs from safetensors.torch.save output"
    safetensors.torch.load(valid)  # parses
    (n_valid,) = struct.unpack("<Q", valid[:8])
    add("valid.safetensors", valid, "valid", None,
        "base file (3 tensors: F32 [2,2], I32 [2], BF16 [3]); every other case here is this file with one defect; "
        "byte-identical to safetensors.torch.save output")

    add("empty-file.safetensors", b"", "header-too-small", None, "0-byte file")
    add("seven-bytes.safetensors", valid[:7], "header-too-small", None, "first 7 bytes of valid.safetensors")
    add("header-too-large.safetensors", struct.pack("<Q", 100_000_001) + valid[8:], "header-too-large", None,
        "length field 100,000,001 (limit is 100,000,000); rest of valid.safetensors follows")
    add("header-len-u64-max.safetensors", struct.pack("<Q", 2**64 - 1) + valid[8:], "header-too-large", None,
        "length field 0xFFFFFFFFFFFFFFFF (8+N would overflow a UInt64 add)")
    add("header-past-eof.safetensors", valid[: 8 + n_valid // 2], "header-length-past-eof", None,
        f"valid.safetensors truncated inside the header (N={n_valid}, file is {8 + n_valid // 2} bytes)")

    ht = header_text(entries)
    bad = ht.encode("utf-8").replace(b"model.alpha", b"model.a\xffpha")
    assert len(bad) == len(ht.encode())
    add("header-not-utf8.safetensors", sf_file(bad, data), "header-not-utf8", None,
        "byte 0xFF inside the name of model.alpha.weight")
    bad2 = ht.encode("utf-8").replace(b"model.alpha", b"model.\xed\xa0\x80ha")
    assert len(bad2) == len(ht.encode())
    add("header-not-utf8-surrogate.safetensors", sf_file(bad2, data), "header-not-utf8", None,
        "UTF-8-encoded surrogate U+D800 (ED A0 80) inside a tensor name (invalid UTF-8)")

    assert ht.endswith("}")
    add("header-not-json.safetensors", sf_file(ht[:-1] + " ", data), "header-not-json", None,
        "final '}' of the header replaced by a space: unterminated object")
    add("header-trailing-garbage.safetensors", sf_file(ht + "xyz", data), "header-not-json", None,
        "valid JSON object followed by 'xyz' then space padding")
    add("header-not-object.safetensors", sf_file('["model.alpha.weight","model.beta.weight"]', b""),
        "header-not-object", None, "top-level JSON array, no data")

    add("metadata-non-string.safetensors", sf_file(header_text(entries, metadata='{"format":1}'), data),
        "invalid-metadata", None, '__metadata__ is {"format": 1} (non-string value)')

    e, dd = base_entries({B: {"drop": True}})
    add("entry-missing-offsets.safetensors", sf_file(header_text(e), dd), "invalid-tensor-entry", B,
        "model.beta.weight has no data_offsets")
    e, dd = base_entries({B: {"shape": [-2]}})
    add("entry-negative-dim.safetensors", sf_file(header_text(e), dd), "invalid-tensor-entry", B,
        "model.beta.weight shape [-2]")
    e, dd = base_entries({B: {"shape": "2"}})
    add("entry-shape-string.safetensors", sf_file(header_text(e), dd), "invalid-tensor-entry", B,
        'model.beta.weight shape is the string "2"')

    e, dd = base_entries({B: {"dtype": "Q4"}})
    add("unknown-dtype.safetensors", sf_file(header_text(e), dd), "unknown-dtype", B,
        'model.beta.weight dtype "Q4" (size fields unchanged)')

    e, dd = base_entries()
    e_dup = e[:2] + [e[1]] + e[2:]
    add("duplicate-tensor.safetensors", sf_file(header_text(e_dup), dd), "duplicate-tensor", B,
        "model.beta.weight appears twice with identical entries; reference safetensors 0.8.0 ACCEPTS this "
        "(last key wins) -- our reader reports it")

    # gap: beta starts 2 bytes after alpha ends; 2 filler bytes keep the buffer fully sized
    e, dd = base_entries({B: {"offsets": [18, 26], "blob": b"\x00\x00" + BETA[3]}})
    assert e[2] == (GAMMA[0], entry_json("BF16", [3], [26, 32]))
    add("offsets-gap.safetensors", sf_file(header_text(e), dd), "invalid-offsets", B,
        "model.beta.weight data_offsets [18,26] but previous end is 16 (2-byte hole)")
    # overlap: beta starts 2 bytes before alpha ends
    e, dd = base_entries({B: {"offsets": [14, 22], "blob": BETA[3][2:]}})
    assert e[2] == (GAMMA[0], entry_json("BF16", [3], [22, 28]))
    add("offsets-overlap.safetensors", sf_file(header_text(e), dd), "invalid-offsets", B,
        "model.beta.weight data_offsets [14,22] overlap model.alpha.weight [0,16]; buffer is 28 bytes")
    e, dd = base_entries({B: {"offsets": [16, 8]}})
    add("offsets-end-before-begin.safetensors", sf_file(header_text(e), dd), "invalid-offsets", B,
        "model.beta.weight data_offsets [16,8] (end < begin)")

    e, dd = base_entries({B: {"shape": [2, 18446744073709551614]}})
    add("overflow-numel.safetensors", sf_file(header_text(e), dd), "overflow", B,
        "model.beta.weight shape [2, 18446744073709551614]: element count overflows UInt64")
    e, dd = base_entries({B: {"shape": [4611686018427387904]}})
    add("overflow-bits.safetensors", sf_file(header_text(e), dd), "overflow", B,
        "model.beta.weight I32 shape [2^62]: numel fits, numel*32 bits (and numel*4 bytes) overflow UInt64")

    e, dd = base_entries({B: {"dtype": "F4", "shape": [3], "blob": b"\x21\x03"}})
    add("misaligned-f4.safetensors", sf_file(header_text(e), dd), "misaligned-slice", B,
        "model.beta.weight dtype F4 shape [3] = 12 bits, not a whole number of bytes (given 2 bytes)")

    e, dd = base_entries({B: {"shape": [3]}})
    add("size-mismatch.safetensors", sf_file(header_text(e), dd), "size-mismatch", B,
        "model.beta.weight I32 shape [3] needs 12 bytes but data_offsets span 8")

    add("truncated-data.safetensors", valid[:-3], "incomplete-buffer", None,
        "valid.safetensors with the last 3 data bytes cut off (truncated shard)")
    add("trailing-byte.safetensors", valid + b"\x00", "incomplete-buffer", None,
        "valid.safetensors plus one trailing 0x00 byte after the data")


# --------------------------------------------------------------------------
# 4b. malformed checkpoints (MICRO base)
# --------------------------------------------------------------------------


def micro_base():
    tag = "micro"
    T, experts, layer_of = build_model(MICRO, tag)
    check_ignore_semantics(T, K2_IGNORE)
    s1, s2 = shard_name(1, 2), shard_name(2, 2)
    shards = {s1: {}, s2: {}}
    for name, t in T.items():
        L = layer_of[name]
        shards[s1 if (L is None or L == 0) else s2][name] = t
    cfg = text_config(MICRO, qconfig_dict_shipped(K2_IGNORE))
    return shards, cfg, experts


def index_text(weight_map, total_size):
    return json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map},
                      indent=2, sort_keys=True) + "\n"


def write_case(folder: Path, shards, cfg, weight_map=None, total_size=None, sizes_fallback=None,
               config_text=None, index_override=None, skip_files=()):
    """Write config.json, shards and index. weight_map defaults to the shards' contents."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "config.json", config_text if config_text is not None else json.dumps(cfg, indent=2) + "\n")
    for fname, tensors in shards.items():
        if fname in skip_files:
            continue
        save_shard(folder / fname, tensors)
    if weight_map is None:
        weight_map = {}
        for fname, tensors in shards.items():
            for name in tensors:
                assert name not in weight_map
                weight_map[name] = fname
    if total_size is None:
        total_size = 0
        for name, fname in weight_map.items():
            if name in shards.get(fname, {}):
                total_size += tensor_nbytes(shards[fname][name])
            else:
                holders = [s for s in shards.values() if name in s]
                t = holders[0][name] if holders else sizes_fallback[name]
                total_size += tensor_nbytes(t)
    write_text(folder / "model.safetensors.index.json",
               index_override if index_override is not None else index_text(weight_map, total_size))
    # every shard we wrote must be a valid safetensors file
    for fname in shards:
        if (folder / fname).exists():
            safetensors.torch.load_file(str(folder / fname))
    return weight_map


def make_malformed_checkpoints(manifest):
    base_dir = ROOT / "malformed" / "checkpoints"
    shards0, cfg, experts = micro_base()
    S1, S2 = shard_name(1, 2), shard_name(2, 2)
    IDX = "model.safetensors.index.json"
    all_tensors = {n: t for s in shards0.values() for n, t in s.items()}

    def clone():
        return {f: dict(s) for f, s in shards0.items()}

    def add(dirname, code, file, tensor, note, **extra):
        manifest.append({"path": f"malformed/checkpoints/{dirname}", "code": code, "file": file,
                         "tensor": tensor, "note": note, **extra})

    # valid micro base
    d = base_dir / "valid-micro"
    write_case(d, clone(), cfg)
    write_checksums(d, [S1, S2])
    loaded = {}
    for f in (S1, S2):
        loaded.update(safetensors.torch.load_file(str(d / f)))
    for pf, info in experts.items():
        check_expert_roundtrip(loaded, pf, info)
    add("valid-micro", "valid", None, None,
        "valid MICRO checkpoint (hidden 64, 2 layers: 0 dense, 1 MoE with 2 routed experts); "
        "includes checksums.sha256 that matches")

    E0 = "model.layers.1.mlp.experts.0."
    # --- index / shard consistency
    sh = clone()
    write_case(base_dir / "missing-shard", sh, cfg, skip_files=(S2,))
    add("missing-shard", "missing-shard", S2, None, f"index maps tensors to {S2}, which is absent")

    sh = clone()
    t = "model.layers.1.self_attn.kv_b_proj.weight"
    wm = {n: f for f, s in sh.items() for n in s}
    del sh[S2][t]
    write_case(base_dir / "index-tensor-missing", sh, cfg, weight_map=wm, sizes_fallback=all_tensors)
    add("index-tensor-missing", "index-tensor-missing", S2, t,
        f"index maps {t} to {S2}; no shard holds it (total_size still counts it)")

    sh = clone()
    t = "model.layers.1.mlp.shared_experts.up_proj.weight"
    wm = {n: f for f, s in sh.items() for n in s if n != t}
    write_case(base_dir / "tensor-not-in-index", sh, cfg, weight_map=wm)
    add("tensor-not-in-index", "tensor-not-in-index", S2, t,
        f"{S2} holds {t} but the index does not list it (total_size excludes it)")

    sh = clone()
    t = "model.layers.1.mlp.gate.weight"
    wm = {n: f for f, s in sh.items() for n in s}
    wm[t] = S1
    write_case(base_dir / "index-wrong-shard", sh, cfg, weight_map=wm)
    add("index-wrong-shard", "index-wrong-shard", S1, t,
        f"index maps {t} to {S1} but it is in {S2} (file = the shard the index names)")

    sh = clone()
    t = "model.norm.weight"
    wm = {n: f for f, s in sh.items() for n in s}
    sh[S1][t] = sh[S2][t]
    write_case(base_dir / "tensor-in-two-shards", sh, cfg, weight_map=wm)
    add("tensor-in-two-shards", "tensor-in-two-shards", S1, t,
        f"{t} is stored in both shards (identical bytes); index maps it to {S2}; file = the extra copy's shard; "
        "total_size counts it once")

    sh = clone()
    wm = {n: f for f, s in sh.items() for n in s}
    true_total = sum(tensor_nbytes(all_tensors[n]) for n in wm)
    write_case(base_dir / "total-size-mismatch", sh, cfg, weight_map=wm, total_size=true_total + 2)
    add("total-size-mismatch", "total-size-mismatch", IDX, None,
        f"metadata.total_size = {true_total + 2}, real sum of tensor bytes = {true_total}")

    sh = clone()
    good = index_text(wm, true_total)
    trunc = good[: good.rindex("}")]  # drop the final closing brace
    write_case(base_dir / "invalid-index", sh, cfg, index_override=trunc)
    add("invalid-index", "invalid-index", IDX, None, "index JSON truncated (final '}' missing)")
    sh = clone()
    bad_wm = json.dumps({"metadata": {"total_size": true_total},
                         "weight_map": [[n, f] for n, f in sorted(wm.items())]}, indent=2) + "\n"
    write_case(base_dir / "invalid-index-weight-map", sh, cfg, index_override=bad_wm)
    add("invalid-index-weight-map", "invalid-index", IDX, None, "weight_map is a JSON array of [name, shard] pairs")

    # --- compressed-tensors triplets
    for suffix, code in (("weight_scale", "missing-weight-scale"), ("weight_packed", "missing-weight-packed"),
                         ("weight_shape", "missing-weight-shape")):
        sh = clone()
        t = E0 + "gate_proj." + suffix
        del sh[S2][t]
        write_case(base_dir / code, sh, cfg)
        add(code, code, S2, t, f"{t} absent from shard and index; the other two triplet members are present")

    sh = clone()
    t = E0 + "gate_proj.weight_packed"
    sh[S2][t] = sh[S2][t][:, :7].contiguous()
    write_case(base_dir / "bad-packed-shape", sh, cfg)
    add("bad-packed-shape", "bad-packed-shape", S2, t,
        f"{t} is [32, 7] (I32); weight_shape [32, 64] and weight_scale [32, 2] need [32, 8]")

    sh = clone()
    sh[S2][t] = sh[S2][t].to(torch.int64)
    write_case(base_dir / "bad-packed-dtype", sh, cfg)
    add("bad-packed-dtype", "bad-packed-dtype", S2, t, f"{t} stored as I64 [32, 8] (same values) instead of I32")
    sh = clone()
    sh[S2][t] = sh[S2][t].contiguous().view(torch.uint8).contiguous()
    write_case(base_dir / "bad-packed-dtype-u8", sh, cfg)
    add("bad-packed-dtype-u8", "bad-packed-dtype", S2, t,
        f"{t} stored as U8 [32, 32] (the same little-endian bytes) instead of I32 [32, 8]; "
        "the dtype check should fire before any shape check")

    sh = clone()
    t = E0 + "gate_proj.weight_scale"
    sh[S2][t] = sh[S2][t][:, :1].contiguous()
    write_case(base_dir / "bad-scale-shape", sh, cfg)
    add("bad-scale-shape", "bad-scale-shape", S2, t,
        f"{t} is [32, 1]; in = 64 needs 64/32 = 2 columns (packed and weight_shape are consistent)")

    sh = clone()
    t = E0 + "gate_proj.weight_shape"
    sh[S2][t] = torch.tensor([32, 4096], dtype=sh[S2][t].dtype)
    write_case(base_dir / "bad-weight-shape", sh, cfg)
    add("bad-weight-shape", "bad-weight-shape", S2, t,
        f"{t} = [32, 4096]; packed [32, 8] and scale [32, 2] both imply [32, 64]")

    sh = clone()
    t = E0 + "gate_proj.weight"
    sh[S2][t] = bf16_normal("micro", t, (32, 64))
    write_case(base_dir / "stray-weight", sh, cfg)
    add("stray-weight", "stray-weight", S2, t, f"plain BF16 {t} [32, 64] beside its weight_packed triplet (in index)")

    # --- config-driven completeness
    sh = clone()
    for suf in ("weight_packed", "weight_scale", "weight_shape"):
        del sh[S2]["model.layers.1.mlp.experts.1.down_proj." + suf]
    write_case(base_dir / "missing-tensor-expert", sh, cfg)
    add("missing-tensor-expert", "missing-tensor", None, "model.layers.1.mlp.experts.1.down_proj.weight_packed",
        "config says n_routed_experts 2; expert 1 down_proj triplet absent from shards and index")
    sh = clone()
    t = "model.layers.1.self_attn.o_proj.weight"
    del sh[S2][t]
    write_case(base_dir / "missing-tensor-o-proj", sh, cfg)
    add("missing-tensor-o-proj", "missing-tensor", None, t, f"{t} absent from shards and index")

    sh = clone()
    t = "model.layers.5.input_layernorm.weight"
    sh[S2][t] = bf16_norm("micro", t, (64,))
    write_case(base_dir / "unexpected-tensor-layer", sh, cfg)
    add("unexpected-tensor-layer", "unexpected-tensor", S2, t,
        f"{t} present (shard + index) but num_hidden_layers is 2")
    sh = clone()
    pf = "model.layers.1.mlp.experts.7.gate_proj"
    comp, _ = make_int4_expert("micro", pf, 32, 64)
    sh[S2].update(comp)
    write_case(base_dir / "unexpected-tensor-expert", sh, cfg)
    add("unexpected-tensor-expert", "unexpected-tensor", S2, pf + ".weight_packed",
        f"a full valid triplet for {pf} (weight_packed/_scale/_shape) but n_routed_experts is 2; "
        "tensor = the first of the three in sorted order")

    sh = clone()
    ctext = json.dumps(cfg, indent=2) + "\n"
    k = ctext.rindex("}")
    write_case(base_dir / "invalid-config", sh, cfg, config_text=ctext[:k].rstrip() + ",\n}\n")
    add("invalid-config", "invalid-config", "config.json", None, "config.json has a trailing comma before the final '}'")

    # --- data-scan cases (ckpt validate --data)
    sh = clone()
    t = "model.layers.1.self_attn.q_a_proj.weight"
    x = sh[S2][t].clone()
    x[3, 5] = float("nan")
    sh[S2][t] = x
    write_case(base_dir / "non-finite-nan", sh, cfg)
    add("non-finite-nan", "non-finite", S2, t, f"{t} (BF16) element [3,5] is NaN (0x7FC0)", data=True)
    sh = clone()
    t = "model.layers.1.mlp.gate.e_score_correction_bias"
    x = sh[S2][t].clone()
    x[1] = float("inf")
    sh[S2][t] = x
    write_case(base_dir / "non-finite-inf", sh, cfg)
    add("non-finite-inf", "non-finite", S2, t, f"{t} (F32) element [1] is +Inf", data=True)

    sh = clone()
    t = E0 + "up_proj.weight_scale"
    x = sh[S2][t].clone()
    x[0, 1] = 0.0
    sh[S2][t] = x
    write_case(base_dir / "bad-scale-zero", sh, cfg)
    add("bad-scale-zero", "bad-scale", S2, t, f"{t} [0,1] = 0.0", data=True)
    sh = clone()
    t = "model.layers.1.mlp.experts.1.gate_proj.weight_scale"
    x = sh[S2][t].clone()
    x[3, 0] = -x[3, 0]
    sh[S2][t] = x
    write_case(base_dir / "bad-scale-negative", sh, cfg)
    add("bad-scale-negative", "bad-scale", S2, t, f"{t} [3,0] negated (negative scale)", data=True)

    # --- checksum mismatch: one flipped bit in shard 2's data, digests of the original
    d = base_dir / "checksum-mismatch"
    write_case(d, clone(), cfg)
    write_checksums(d, [S1, S2])
    raw = bytearray((d / S2).read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    t = "model.layers.1.mlp.shared_experts.down_proj.weight"
    b, _ = hdr[t]["data_offsets"]
    pos = 8 + n + b + 10  # low (mantissa) byte of BF16 element 5: stays finite
    raw[pos] ^= 0x01
    (d / S2).write_bytes(bytes(raw))
    safetensors.torch.load_file(str(d / S2))
    add("checksum-mismatch", "checksum-mismatch", S2, None,
        f"byte at absolute offset {pos} of {S2} (inside {t}, low byte of BF16 element 5) XOR 0x01; "
        "checksums.sha256 holds the original digests; shard 1 matches",
        checksums="checksums.sha256")


# --------------------------------------------------------------------------


def main():
    for g in GENERATED:
        p = ROOT / g
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    k2 = make_k2_tiny()
    make_k25_tiny()
    make_reference()
    manifest = [
        {"path": "kimi-k2-tiny", "code": "valid", "file": None, "tensor": None,
         "note": "tiny Kimi K2 Thinking checkpoint, 3 shards, checksums.sha256"},
        {"path": "kimi-k25-tiny", "code": "valid", "file": None, "tensor": None,
         "note": "tiny Kimi K2.5 layout: language_model. prefix, quantization_config under text_config"},
    ]
    make_malformed_safetensors(manifest)
    make_malformed_checkpoints(manifest)
    write_json(ROOT / "malformed" / "MANIFEST.json", manifest)
    # safetensors' save_file creates 0600 files; normalise permissions
    for g in GENERATED:
        p = ROOT / g
        for f in ([p] if p.is_file() else p.rglob("*")):
            f.chmod(0o755 if f.is_dir() else 0o644)
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"weight_shape dtype written by compressed-tensors {compressed_tensors.__version__}: "
          f"{k2['weight_shape_dtype']}")
    print(f"total bytes under Fixtures/: {total}")


if __name__ == "__main__":
    main()
