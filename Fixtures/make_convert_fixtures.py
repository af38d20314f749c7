#!/usr/bin/env python3
"""Reference outputs for `ckpt convert` on the bundled fixture, from compressed-tensors itself.

For every quantized module of Fixtures/kimi-k2-tiny, compressed-tensors' own
pack-quantized decompressor (`PackedQuantizationCompressor.decompress_weight`,
the code behind `ModelCompressor.decompress` and `convert_checkpoint` with
`CompressedTensorsDequantizer`) produces `X.weight` in the scale dtype (BF16).
This script writes the SHA-256 of each such tensor's raw little-endian bytes,
plus the FP32 upcast's, to Fixtures/convert/kimi-k2-tiny-dequantized.json, so
tests can compare `ckpt convert --to bf16` / `--to fp32` bit for bit without Python.

Run: pip install 'torch==2.13.0+cpu' compressed-tensors==0.12.2 safetensors
     python3 Fixtures/make_convert_fixtures.py
"""
import hashlib
import json
import os

import compressed_tensors
import torch
from compressed_tensors.compressors import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationConfig
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "kimi-k2-tiny")


def main():
    config = json.load(open(os.path.join(SRC, "config.json")))
    qconfig = QuantizationConfig.model_validate(config["quantization_config"])
    compressor = PackedQuantizationCompressor(config=qconfig)
    index = json.load(open(os.path.join(SRC, "model.safetensors.index.json")))["weight_map"]
    tensors = {}
    for name, shard in index.items():
        with safe_open(os.path.join(SRC, shard), framework="pt") as f:
            tensors[name] = f.get_tensor(name)
    out = {}
    for name in sorted(tensors):
        if not name.endswith(".weight_packed"):
            continue
        module = name[: -len(".weight_packed")]
        scheme = next(s for s in qconfig.config_groups.values())
        data = {"weight_packed": tensors[name], "weight_scale": tensors[module + ".weight_scale"],
                "weight_shape": tensors[module + ".weight_shape"]}
        w = compressor.decompress_weight(compressed_data=data, quantization_args=scheme.weights)
        assert w.dtype == torch.bfloat16, w.dtype
        bf16 = w.contiguous().view(torch.int16).numpy().tobytes()
        f32 = w.to(torch.float32).contiguous().numpy().tobytes()
        out[module + ".weight"] = {"shape": list(w.shape), "bf16_sha256": hashlib.sha256(bf16).hexdigest(),
                                   "fp32_of_bf16_sha256": hashlib.sha256(f32).hexdigest()}
    doc = {"generator": "Fixtures/make_convert_fixtures.py", "compressed_tensors": compressed_tensors.__version__,
           "torch": torch.__version__, "source": "Fixtures/kimi-k2-tiny", "weights": out}
    os.makedirs(os.path.join(HERE, "convert"), exist_ok=True)
    with open(os.path.join(HERE, "convert", "kimi-k2-tiny-dequantized.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(out)} modules")


if __name__ == "__main__":
    main()
