#!/usr/bin/env python3
"""Fixtures for `ckpt requantize`, made by compressed-tensors itself.

1. Fixtures/kimi-k2-tiny-minmax/: kimi-k2-tiny with every routed expert
   quantized by the library's *default* rule instead of the QAT /7 grid:
   minmax observer scales (`calculate_qparams` on each group's min and max of
   the BF16 weight: absmax / 7.5, codes in [-8, 7]) and the library compressor
   (`pack-quantized` `compress`). Every other file is kimi-k2-tiny's.
2. Fixtures/requantize/offgrid.safetensors: the BF16 weights those experts of
   layer 1 (experts 0 and 1) were made from. They lie on no grid, so
   requantizing them must equal the library's compressor exactly
   (--scale-rule minmax: the triplets in kimi-k2-tiny-minmax) and the /7 rule
   (--scale-rule qat7: Fixtures/requantize/offgrid-qat7.safetensors, computed
   here with torch as s = bf16(max(absmax/7, 1e-5)), q = clamp(rint(x/s), -7, 7)
   in FP32, packed by the library's pack_to_int32).
3. With --ckpt PATH (a built `ckpt`): runs the round trips and the off-grid
   requantizations with that binary, loads every output with compressed-tensors
   (unpack_from_int32, decompress_weight) and checks it against the library's
   own results; then records the SHA-256 of each checked output file in
   Fixtures/requantize/python-check.json, which the Swift tests compare with
   what `ckpt` writes today. Tests need no Python.

Usage:
    python3 Fixtures/make_requantize_fixtures.py                     # 1 and 2
    python3 Fixtures/make_requantize_fixtures.py --ckpt .build/release/ckpt   # and 3
"""

import ml_dtypes  # noqa: F401  (before safetensors.numpy)

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import safetensors.torch
import compressed_tensors
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.compressors.quantized_compressors.pack_quantized import pack_to_int32, unpack_from_int32
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils import calculate_qparams

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "kimi-k2-tiny"
MINMAX = ROOT / "kimi-k2-tiny-minmax"
OUT = ROOT / "requantize"
TAG = "kimi-k2-tiny-minmax"
QARGS = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)
QSCHEME = QuantizationScheme(targets=["Linear"], weights=QARGS)
COMPRESSOR = BaseCompressor.load_from_registry("pack-quantized", config=None)
OFFGRID_MODULES = [f"model.layers.1.mlp.experts.{e}.{p}" for e in (0, 1) for p in ("down_proj", "gate_proj", "up_proj")]

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def gen_for(tag: str, name: str) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{tag}/{name}".encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(seed & ((1 << 63) - 1))


def weights_for(prefix: str, out_f: int, in_f: int) -> torch.Tensor:
    g = gen_for(TAG, prefix + ".weight")
    return (torch.randn(out_f, in_f, generator=g, dtype=torch.float32) * 0.02).to(torch.bfloat16)


def library_minmax(prefix: str, w: torch.Tensor) -> dict:
    """The library's default: minmax observer scales, then its compressor."""
    out_f, in_f = w.shape
    wg = w.view(out_f, in_f // 32, 32)
    scale, zp = calculate_qparams(wg.amin(dim=-1), wg.amax(dim=-1), QARGS)
    assert scale.dtype == torch.bfloat16
    sd = {prefix + ".weight": w, prefix + ".weight_scale": scale, prefix + ".weight_zero_point": zp}
    comp = COMPRESSOR.compress(sd, names_to_scheme={prefix: QSCHEME})
    assert set(comp) == {prefix + ".weight_packed", prefix + ".weight_scale", prefix + ".weight_shape"}, comp.keys()
    return {k: v.contiguous() for k, v in comp.items()}


def torch_qat7(prefix: str, w: torch.Tensor) -> dict:
    out_f, in_f = w.shape
    wg = w.float().view(out_f, in_f // 32, 32)
    scale = torch.clamp(wg.abs().amax(dim=-1) / 7.0, min=1e-5).to(torch.bfloat16)
    q = torch.clamp(torch.round(wg / scale.float().unsqueeze(-1)), -7, 7).view(out_f, in_f).to(torch.int8)
    return {
        prefix + ".weight_packed": pack_to_int32(q, 4).contiguous(),
        prefix + ".weight_scale": scale.contiguous(),
        prefix + ".weight_shape": torch.tensor([out_f, in_f], dtype=torch.int64),
    }


def make_fixtures():
    if MINMAX.exists():
        shutil.rmtree(MINMAX)
    shutil.copytree(SRC, MINMAX)
    offgrid, qat7 = {}, {}
    minus8 = groups = 0
    for shard in sorted(MINMAX.glob("*.safetensors")):
        tensors = safetensors.torch.load_file(str(shard))
        modules = sorted(k[: -len(".weight_packed")] for k in tensors if k.endswith(".weight_packed"))
        for m in modules:
            out_f, in_f = tensors[m + ".weight_shape"].tolist()
            w = weights_for(m, out_f, in_f)
            comp = library_minmax(m, w)
            assert comp[m + ".weight_shape"].dtype == tensors[m + ".weight_shape"].dtype
            tensors.update(comp)
            codes = unpack_from_int32(comp[m + ".weight_packed"], 4, torch.Size([out_f, in_f])).view(out_f, -1, 32)
            minus8 += int((codes == -8).any(dim=-1).sum())
            groups += codes.shape[0] * codes.shape[1]
            if m in OFFGRID_MODULES:
                offgrid[m + ".weight"] = w
                qat7.update(torch_qat7(m, w))
        safetensors.torch.save_file(tensors, str(shard), metadata={"format": "pt"})
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in sorted(MINMAX.glob("*.safetensors"))]
    (MINMAX / "checksums.sha256").write_text("".join(lines))
    readme = (
        "# kimi-k2-tiny-minmax\n\nkimi-k2-tiny with every routed expert quantized by compressed-tensors' default rule\n"
        "(minmax observer: absmax / 7.5, codes in [-8, 7]) instead of the QAT /7 grid. Made by\n"
        "`Fixtures/make_requantize_fixtures.py`; do not edit.\n")
    (MINMAX / "README.md").write_text(readme)
    OUT.mkdir(exist_ok=True)
    safetensors.torch.save_file(offgrid, str(OUT / "offgrid.safetensors"), metadata={"format": "pt"})
    safetensors.torch.save_file(qat7, str(OUT / "offgrid-qat7.safetensors"), metadata={"format": "pt"})
    assert 0.1 < minus8 / groups < 0.5, (minus8, groups)
    print(f"kimi-k2-tiny-minmax: {groups} groups, {minus8} hold -8 ({100 * minus8 / groups:.1f} %)")


def run(ckpt, *args):
    r = subprocess.run([ckpt, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ckpt {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def triplets(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.glob("*.safetensors")):
        out.update(safetensors.torch.load_file(str(p)))
    return out


def library_decompress(t: dict, m: str) -> torch.Tensor:
    return COMPRESSOR.decompress_weight(
        {"weight_packed": t[m + ".weight_packed"], "weight_scale": t[m + ".weight_scale"], "weight_shape": t[m + ".weight_shape"]}, QARGS)


def check_with_ckpt(ckpt: str):
    record = {"compressed_tensors": compressed_tensors.__version__, "torch": torch.__version__, "checks": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, src in (("kimi-k2-tiny", SRC), ("kimi-k2-tiny-minmax", MINMAX)):
            original = triplets(src)
            for to in ("fp16", "bf16"):
                conv = tmp / f"{name}-{to}"
                run(ckpt, "convert", src, conv, "--to", to, "--json")
                back = tmp / f"{name}-{to}-int4"
                report = json.loads(run(ckpt, "requantize", conv, back, "--to", "int4", "--json"))
                got = triplets(back)
                for k, v in original.items():
                    assert torch.equal(got[k], v) and got[k].dtype == v.dtype, (name, to, k)
                mods = sorted(k[: -len(".weight_packed")] for k in got if k.endswith(".weight_packed"))
                for m in mods:
                    assert torch.equal(library_decompress(got, m), library_decompress(original, m)), (name, to, m)
                record["checks"].append({
                    "case": f"{name} -> {to} -> requantize", "rule": report["rule"]["used"],
                    "modules": len(mods), "outputs": {p.name: sha256_file(p) for p in sorted(back.glob("*.safetensors"))}})
        expected_minmax = triplets(MINMAX)
        expected_qat7 = safetensors.torch.load_file(str(OUT / "offgrid-qat7.safetensors"))
        for rule, expected in (("minmax", expected_minmax), ("qat7", expected_qat7)):
            out = tmp / f"offgrid-{rule}"
            run(ckpt, "requantize", OUT / "offgrid.safetensors", out, "--to", "int4", "--scale-rule", rule, "--json")
            got = triplets(out)
            for m in OFFGRID_MODULES:
                for suffix in (".weight_packed", ".weight_scale", ".weight_shape"):
                    assert torch.equal(got[m + suffix], expected[m + suffix]), (rule, m + suffix)
                deq = library_decompress(got, m)
                assert deq.dtype == torch.bfloat16 and list(deq.shape) == got[m + ".weight_shape"].tolist()
            record["checks"].append({
                "case": f"offgrid --scale-rule {rule}", "rule": rule, "modules": len(OFFGRID_MODULES),
                "outputs": {p.name: sha256_file(p) for p in sorted(out.glob("*.safetensors"))}})
    (OUT / "python-check.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"python-check.json: {len(record['checks'])} checks passed with compressed-tensors {compressed_tensors.__version__}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", help="a built ckpt binary: run and check the round trips, record python-check.json")
    a = ap.parse_args()
    make_fixtures()
    if a.ckpt:
        check_with_ckpt(a.ckpt)


if __name__ == "__main__":
    main()
