#!/usr/bin/env bash
# `ckpt requantize --to int4` (issue 5) on a BF16 conversion of the synthetic
# K2-shaped benchmark checkpoint, next to
# (a) the I/O floor: `cat` of the BF16 input, then `dd` of as many bytes as the
#     INT4 output, with fsync (plain tools, no computation), and
# (b) compressed-tensors' compressor on the same BF16 tensors: its minmax
#     observer math (`calculate_qparams`) and `pack-quantized` `compress`, one
#     module at a time, shards written with safetensors' `save_file`.
# Every row starts with a cold page cache when the script may drop caches
# (root). The ckpt output is also checked against the original INT4 shards:
# BF16 -> INT4 recovers the grid, so the files must be byte-identical.
#
# BENCH_DIR (default .bench/) holds k2/ (scripts/make-k2-bench-shard.py) and
# k2-bf16/ (made here). CT_PYTHON: a Python with torch and compressed-tensors
# (default python3; row (b) is skipped if it cannot import them). REPEATS
# (default 1) runs of each; the best is shown.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
bench_setup
k2_inputs
in_bytes=$(cat "$bf16"/*.safetensors | wc -c)
out_bytes=$(cat "$src"/*.safetensors | wc -c)


blocks=$(( (out_bytes + (64 << 20) - 1) / (64 << 20) ))
best "I/O floor (cat input; dd output, fsync)" bash -c \
  "cat '$bf16'/*.safetensors > /dev/null && dd if=/dev/zero of='$dir/out' bs=64M count=$blocks conv=fsync status=none"
best "ckpt requantize --to int4" "$ckpt" requantize "$bf16" "$dir/out" --to int4 --json
python3 -c "import json; d=json.load(open('$dir/stdout')); t=d['totals']; print(f\"ckpt: rule {d['rule']['used']} ({d['rule']['source']}), {t['recovered']} of {t['groups']} groups recovered, {t['ambiguous']} ambiguous, {t['requantized']} requantized\")"
(cd "$dir/out" && for f in *.safetensors; do cmp -s "$f" "../k2/$f" && echo "ckpt: $f byte-identical to the original INT4 shard" || echo "ckpt: $f DIFFERS from the original"; done)
if "$py" -c "import torch, compressed_tensors" 2>/dev/null; then
  best "compressed-tensors compressor (minmax)" "$py" -c "
import json, os, torch, safetensors.torch
from safetensors import safe_open
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils import calculate_qparams
args = QuantizationArgs(num_bits=4, type='int', symmetric=True, strategy='group', group_size=32)
scheme = QuantizationScheme(targets=['Linear'], weights=args)
comp = BaseCompressor.load_from_registry('pack-quantized', config=None)
src, out = '$bf16', '$dir/out'
os.makedirs(out, exist_ok=True)
for name in sorted(f for f in os.listdir(src) if f.endswith('.safetensors')):
    tensors = {}
    with safe_open(os.path.join(src, name), 'pt') as f:
        for k in f.keys():
            t = f.get_tensor(k)
            if '.mlp.experts.' in k and k.endswith('.weight'):
                m = k[:-len('.weight')]
                g = t.view(t.shape[0], -1, 32)
                s, zp = calculate_qparams(g.amin(-1), g.amax(-1), args)
                tensors.update(comp.compress({k: t, m + '.weight_scale': s, m + '.weight_zero_point': zp}, names_to_scheme={m: scheme}))
            else:
                tensors[k] = t
    safetensors.torch.save_file(tensors, os.path.join(out, name), metadata={'format': 'pt'})
"
fi
rm -rf "$dir/out"

echo "BF16 input $(python3 -c "print(f'{$in_bytes/1e9:.2f}')") GB, INT4 output $(python3 -c "print(f'{$out_bytes/1e9:.2f}')") GB; caches $(can_drop && echo dropped before every run || echo NOT dropped); best of $repeats"
print_rows "input GB/s" "$in_bytes"
