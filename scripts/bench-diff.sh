#!/usr/bin/env bash
# `ckpt diff` and `ckpt verify` (issue 6) on the synthetic K2-shaped benchmark
# checkpoint (INT4, 1.9 GB) against its BF16 conversion (5.9 GB), next to
# (a) the I/O floor: `cat` of both checkpoints, and
# (b) the comparison people write by hand (LANDSCAPE.md, "Numerical diffs"):
#     safetensors + compressed-tensors' `unpack_from_int32` and torch, tensor by
#     tensor, the same sums in float64.
# Then `ckpt verify` with its achieved GFLOP/s next to the OpenBLAS sgemm peak
# it measures in the same run, at --samples 32 and 128, with OpenBLAS's own
# kernel choice and with OPENBLAS_CORETYPE=Haswell (what 0.3.21 picks on Zen 5).
# Every timed row starts with a cold page cache when the script may drop caches.
#
# BENCH_DIR (default .bench/) holds k2/ (scripts/make-k2-bench-shard.py) and
# k2-bf16/ (made here). CT_PYTHON: a Python with torch, safetensors and
# compressed-tensors (row (b) is skipped without them). REPEATS (default 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
bench_setup
k2_inputs
bytes=$(cat "$src"/*.safetensors "$bf16"/*.safetensors | wc -c)

best "I/O floor (cat A and B)" bash -c "cat '$src'/*.safetensors '$bf16'/*.safetensors > /dev/null"
best "ckpt diff A B" "$ckpt" diff "$src" "$bf16" --json "$dir/diff.json"
if "$py" -c "import torch, compressed_tensors, safetensors" 2>/dev/null; then
  cat > "$dir/handrolled.py" <<'PY'
# The per-tensor comparison people write by hand: safetensors + compressed-tensors + torch.
import json, sys, torch
from safetensors import safe_open
from compressed_tensors.compressors.quantized_compressors.pack_quantized import unpack_from_int32
torch.set_num_threads(2)
def tensors(folder):
    index = json.load(open(f"{folder}/model.safetensors.index.json"))["weight_map"]
    by_file = {}
    for name, f in index.items(): by_file.setdefault(f, []).append(name)
    for f, names in by_file.items():
        with safe_open(f"{folder}/{f}", "pt") as h:
            for n in names:
                if n.endswith("weight_packed"):
                    m = n[: -len(".weight_packed")]
                    shape = h.get_tensor(m + ".weight_shape").tolist()
                    q = unpack_from_int32(h.get_tensor(n), 4, torch.Size(shape))
                    s = h.get_tensor(m + ".weight_scale").float()
                    yield m + ".weight", (q.float().view(shape[0], -1, 32) * s.unsqueeze(-1)).view(shape)
                elif not n.endswith(("weight_scale", "weight_shape")):
                    yield n, h.get_tensor(n).float()
b = dict(tensors(sys.argv[2]))
worst = 0.0
for name, x in tensors(sys.argv[1]):
    y = b.pop(name).float()
    d = x.double() - y.double()
    dd, aa = (d * d).sum().item(), (x.double() ** 2).sum().item()
    worst = max(worst, (dd / aa) ** 0.5 if aa else 0.0)
print("worst relative", worst)
PY
  best "hand-rolled torch + compressed-tensors" "$py" "$dir/handrolled.py" "$src" "$bf16"
fi
print_rows "GB/s read" "$bytes"
python3 -c "import json; d=json.load(open('$dir/diff.json')); print('ckpt diff:', d['summary']['items'], 'tensors, worst relative', max(r['metrics']['relative'] or 0 for r in d['rows']))"

echo
for samples in 32 128; do
  for core in "" Haswell; do
    drop
    env ${core:+OPENBLAS_CORETYPE=$core} "$ckpt" verify "$src" "$bf16" --samples "$samples" --json "$dir/verify.json" >/dev/null || true
    python3 - "$dir/verify.json" "$samples" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d["performance"]; s = d["settings"]
print(f"ckpt verify --samples {sys.argv[2]:>3} [{s['blas']}]: {p['seconds']:.1f} s, {p['gflop']:.0f} GFLOP, "
      f"{p['gflop_per_s']:.1f} GFLOP/s achieved, sgemm peak {p['sgemm_peak_gflop_per_s']:.1f} GFLOP/s "
      f"({p['gflop_per_s'] / p['sgemm_peak_gflop_per_s']:.0%})")
PY
  done
done
