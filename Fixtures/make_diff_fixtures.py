#!/usr/bin/env python3
"""Independent numpy references for `ckpt diff` and `ckpt verify`.

1. Runs `ckpt convert Fixtures/kimi-k2-tiny OUT --to T` for T in bf16, fp16,
   fp32 and fp8-block (into a temporary folder) and records the SHA-256 of each
   output shard.
2. Decodes the INT4 original (A) and each conversion (B) to float32 with numpy
   alone (its own safetensors reader; INT4 codes are cross-checked against
   compressed-tensors' unpack_from_int32) and compares them per logical tensor:
   an INT4 triplet X.weight_{packed,scale,shape} is the one tensor `X.weight`,
   and an FP8 `X.weight_scale_inv` belongs to `X.weight`. Per tensor: counts,
   float64 sums (math.fsum, so independent of summation order), the first
   index of max |d|, rmse, relative error, cosine, SQNR and the histogram of
   |d| by binary exponent (bin 0: d == 0, bin 1: below 2^-40, bins 2..49:
   2^-40 .. 2^7, bin 50: 2^8 and above).
3. Writes Fixtures/diff/activations.safetensors: `hidden_states` F32 [8, 256]
   from np.random.default_rng(20261124).standard_normal, and the same rows as
   `model.layers.{1,2}.mlp.gate`: for `ckpt verify --activations`, a tensor
   named after a module is that module's exact input, and the router's input
   is the MoE block's, so the block runs on x itself (no norm) as in 4.
4. Runs the DeepSeek-V3 MoE block (inference/model.py: sigmoid scores,
   biased top-k choice, unbiased renormalized weights times
   routed_scaling_factor, SwiGLU experts plus the shared expert) of layers 1
   and 2 on those activations, in float64 from the INT4 original, and writes
   Fixtures/diff/moe-reference.safetensors (per layer L:
   model.layers.L.mlp.{output F32 [8,256], topk I64 [8,2], topk_weights F32 [8,2]};
   expert ids ascending per token).
5. Writes Fixtures/diff/expected.json: shard digests and metrics per target.

Deterministic: two runs give byte-identical files. Tests need no Python.

Usage:
    python3 Fixtures/make_diff_fixtures.py --ckpt .build/release/ckpt
"""

import ml_dtypes  # noqa: F401  (before safetensors.numpy)

import argparse
import hashlib
import json
import math
import platform
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy
import torch
import compressed_tensors
from compressed_tensors.compressors.quantized_compressors.pack_quantized import unpack_from_int32

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "kimi-k2-tiny"
OUT = ROOT / "diff"
TARGETS = ("bf16", "fp16", "fp32", "fp8-block")
SEED = 20261124
HIST_MIN_EXP, HIST_MAX_EXP, HIST_BINS = -40, 7, 51
NP_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F8_E4M3": np.uint8,
             "I32": np.int32, "I64": np.int64}


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def read_folder(folder: Path) -> dict:
    """{name: (dtype string, numpy array of the raw little-endian elements)} over every shard."""
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        raw = shard.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        for name, e in header.items():
            begin, end = e["data_offsets"]
            arr = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype=np.dtype(NP_DTYPES[e["dtype"]]).newbyteorder("<"))
            assert name not in out, name
            out[name] = (e["dtype"], arr.reshape(e["shape"]))
    return out


def to_f32(dtype: str, arr: np.ndarray) -> np.ndarray:
    """Exact float32 value of a BF16, F16, F32 or F8_E4M3 array."""
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F8_E4M3":
        return arr.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert dtype in ("F16", "F32"), dtype
    return arr.astype(np.float32)


def int4_decode(t: dict, m: str) -> np.ndarray:
    """q * scale in float32; q = nibble - 8, low nibble first, 8 per little-endian int32."""
    rows, cols = (int(v) for v in t[m + ".weight_shape"][1])
    packed = t[m + ".weight_packed"][1]
    nibbles = (packed.view(np.uint32)[:, :, None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF
    q = (nibbles.astype(np.int8) - 8).reshape(rows, -1)[:, :cols]
    lib = unpack_from_int32(torch.from_numpy(packed.copy()), 4, torch.Size([rows, cols])).numpy()
    assert np.array_equal(q, lib), m
    scale = np.repeat(to_f32(*t[m + ".weight_scale"]), 32, axis=1)[:, :cols]
    return q.astype(np.float32) * scale  # exact: <= 4-bit code times an 8-bit significand


def fp8_block_decode(t: dict, name: str) -> np.ndarray:
    """float32(e4m3 code) * weight_scale_inv[i // 128, j // 128], multiplied in float32."""
    codes = to_f32(*t[name])
    s_dtype, s = t[name + "_scale_inv"]
    assert s_dtype == "F32" and s.shape == tuple(-(-d // 128) for d in codes.shape), name
    full = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[:codes.shape[0], :codes.shape[1]]
    return codes * full


def logical_tensors(t: dict) -> dict:
    """{logical name: float32 array}: INT4 triplets and FP8 weight + scale_inv are one tensor each."""
    int4 = {k[: -len(".weight_packed")] for k in t if k.endswith(".weight_packed")}
    out = {}
    for name, (dtype, arr) in t.items():
        if name.endswith(".weight_packed"):
            out[name[: -len("_packed")]] = int4_decode(t, name[: -len(".weight_packed")])
        elif name.endswith((".weight_scale", ".weight_shape")) and name[: -len(".weight_scale")] in int4:
            continue  # consumed by its module
        elif name.endswith(".weight_scale_inv"):
            assert t[name[: -len("_scale_inv")]][0] == "F8_E4M3", name
        elif dtype == "F8_E4M3":
            out[name] = fp8_block_decode(t, name)
        else:
            assert not dtype.startswith("I"), f"integer tensor {name} not consumed by a module"
            out[name] = to_f32(dtype, arr)
    return out


def histogram(d: np.ndarray) -> list:
    ad = np.abs(d[d != 0])
    e = np.frexp(ad)[1].astype(np.int64) - 1  # |d| = m * 2^k, m in [0.5, 1): floor(log2|d|) = k - 1
    bins = np.where(e < HIST_MIN_EXP, 1, np.where(e > HIST_MAX_EXP, HIST_BINS - 1, 2 + e - HIST_MIN_EXP))
    h = np.bincount(bins, minlength=HIST_BINS)
    h[0] = d.size - ad.size
    return [int(c) for c in h]


def metrics(a: np.ndarray, b: np.ndarray) -> dict:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    a, b = a.ravel(), b.ravel()
    assert np.isfinite(a).all() and np.isfinite(b).all()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = a64 - b64
    ssd, ssa, ssb, sab = (math.fsum((x * y).tolist()) for x, y in ((d, d), (a64, a64), (b64, b64), (a64, b64)))
    ad = np.abs(d)
    max_abs = float(ad.max()) if ad.size else 0.0
    na, nb = math.sqrt(ssa), math.sqrt(ssb)
    assert ssd == 0 or ssa > 0
    return {
        "elements": int(a.size),
        "identical": int(np.count_nonzero(a.view(np.uint32) == b.view(np.uint32))),
        "sum_sq_diff": ssd, "sum_sq_a": ssa, "sum_sq_b": ssb, "sum_ab": sab,
        "max_abs": max_abs,
        "max_abs_index": int(np.argmax(ad)) if max_abs > 0 else -1,  # argmax: first occurrence
        "rmse": math.sqrt(ssd / a.size) if a.size else 0.0,
        "relative": math.sqrt(ssd) / na if ssd != 0 else 0.0,
        "cosine": sab / (na * nb) if na * nb != 0 else (1.0 if na == nb == 0 else 0.0),
        "sqnr_db": 10 * math.log10(ssa / ssd) if ssd != 0 else None,
        "histogram": histogram(d),
    }


def convert_and_compare(ckpt: str):
    original = logical_tensors(read_folder(SRC))
    conversions, all_metrics = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in TARGETS:
            dst = Path(tmp) / t
            r = subprocess.run([ckpt, "convert", str(SRC), str(dst), "--to", t], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"ckpt convert --to {t} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
            conversions[t] = {"files": {p.name: sha256_file(p) for p in sorted(dst.glob("*.safetensors"))}}
            converted = logical_tensors(read_folder(dst))
            assert sorted(converted) == sorted(original), t
            all_metrics[t] = {k: metrics(original[k], converted[k]) for k in sorted(original)}
    return conversions, all_metrics


def check_metrics(m: dict):
    """Sanity: fp16/fp32 exact, bf16 loses only in routed experts (<= 2^-8), fp8-block loses more."""
    routed = [k for k in m["bf16"] if ".mlp.experts." in k]
    assert len(routed) == 2 * 4 * 3
    for t in ("fp16", "fp32"):
        assert all(v["sum_sq_diff"] == 0 for v in m[t].values()), t
    for k, v in m["bf16"].items():
        if k in routed:
            assert 0 < v["relative"] <= 2.0 ** -8, k
            assert m["fp8-block"][k]["relative"] > v["relative"], k
        else:
            assert v["sum_sq_diff"] == 0, k


def dot_t(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T in float64, each dot product summed exactly (math.fsum) and rounded once."""
    return np.array([[math.fsum((xi * wj).tolist()) for wj in w] for xi in x])


def silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


def mlp(x: np.ndarray, w: dict, prefix: str) -> np.ndarray:
    """down(silu(gate(x)) * up(x)), float64."""
    g = dot_t(x, w[prefix + ".gate_proj.weight"])
    u = dot_t(x, w[prefix + ".up_proj.weight"])
    return dot_t(silu(g) * u, w[prefix + ".down_proj.weight"])


def moe_reference(x32: np.ndarray) -> dict:
    config = json.loads((SRC / "config.json").read_text())
    n_experts, top_k = config["n_routed_experts"], config["num_experts_per_tok"]
    assert config["scoring_func"] == "sigmoid" and config["norm_topk_prob"] and config["n_group"] == 1
    scale = float(config["routed_scaling_factor"])
    w = {k: v.astype(np.float64) for k, v in logical_tensors(read_folder(SRC)).items()}
    x = x32.astype(np.float64)
    out, notes = {}, []
    for layer in range(config["first_k_dense_replace"], config["num_hidden_layers"]):
        p = f"model.layers.{layer}.mlp"
        scores = 1.0 / (1.0 + np.exp(-dot_t(x, w[p + ".gate.weight"])))
        choice = scores + w[p + ".gate.e_score_correction_bias"]
        experts = [mlp(x, w, f"{p}.experts.{e}") for e in range(n_experts)]
        shared = mlp(x, w, p + ".shared_experts")
        y = np.empty_like(x)
        ids = np.empty((x.shape[0], top_k), dtype=np.int64)
        weights = np.empty((x.shape[0], top_k))
        for i in range(x.shape[0]):
            order = np.argsort(-choice[i], kind="stable")  # ties: lower index first
            ranked = choice[i][order]
            notes.append((layer, i, float(ranked[top_k - 1] - ranked[top_k])))
            chosen = np.sort(order[:top_k])
            wts = scores[i, chosen] / scores[i, chosen].sum() * scale
            ids[i], weights[i] = chosen, wts
            y[i] = sum(wt * experts[e][i] for wt, e in zip(wts, chosen)) + shared[i]
        out[p + ".output"] = y.astype(np.float32)
        out[p + ".topk"] = ids
        out[p + ".topk_weights"] = weights.astype(np.float32)
    gap = min(notes, key=lambda n: n[2])
    assert gap[2] > 0, f"tie at the top-{top_k} boundary: layer {gap[0]} token {gap[1]}"
    print(f"moe: smallest choice gap between rank {top_k} and {top_k + 1}: {gap[2]:.3g} (layer {gap[0]}, token {gap[1]})")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True, help="a built ckpt binary, used for the conversions")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)

    conversions, all_metrics = convert_and_compare(a.ckpt)
    check_metrics(all_metrics)

    x = np.random.default_rng(SEED).standard_normal((8, 256)).astype(np.float32)
    config = json.loads((SRC / "config.json").read_text())
    moe_layers = range(config["first_k_dense_replace"], config["num_hidden_layers"])
    acts = {"hidden_states": x, **{f"model.layers.{layer}.mlp.gate": x.copy() for layer in moe_layers}}
    safetensors.numpy.save_file(acts, str(OUT / "activations.safetensors"), metadata={"format": "pt"})
    safetensors.numpy.save_file(moe_reference(x), str(OUT / "moe-reference.safetensors"), metadata={"format": "pt"})

    expected = {
        "generator": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                      "compressed_tensors": compressed_tensors.__version__, "ml_dtypes": ml_dtypes.__version__,
                      "safetensors": safetensors.__version__, "script": "Fixtures/make_diff_fixtures.py"},
        "fixture": SRC.name,
        "conversions": conversions,
        "metrics": all_metrics,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    for t in TARGETS:
        lossy = [v["relative"] for v in all_metrics[t].values() if v["sum_sq_diff"] != 0]
        rng = f", relative {min(lossy):.3g} .. {max(lossy):.3g}" if lossy else ""
        print(f"{t}: {len(all_metrics[t])} tensors, {len(lossy)} lossy{rng}")


if __name__ == "__main__":
    main()
