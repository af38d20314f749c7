#!/usr/bin/env bash
# `ckpt convert --to bf16` on a synthetic K2-shaped checkpoint (issue 4), next to
# (a) the I/O floor: `cat` of the input, then `dd` of as many bytes as the
#     output, with fsync (plain tools, no computation), and
# (b) compressed-tensors' own `convert_checkpoint` with `CompressedTensorsDequantizer`.
# Every row starts with a cold page cache when the script may drop caches (root).
#
# The checkpoint (1.59 GB INT4 expert shard + 0.31 GB rest, made by
# scripts/make-k2-bench-shard.py with the real compressed-tensors compressor)
# goes to $BENCH_DIR/k2 (default .bench/, git-ignored). (b) needs a Python with
# compressed-tensors >= 0.14 and transformers: set CT_PYTHON, e.g.
#   python3 -m venv .bench/venv && .bench/venv/bin/pip install 'torch==2.13.0+cpu' compressed-tensors transformers
#   CT_PYTHON=.bench/venv/bin/python scripts/bench-convert.sh
# Without it, (b) is skipped. REPEATS (default 2) runs of each; the best is shown.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
REPEATS=${REPEATS:-2} bench_setup
src="$dir/k2"
if [[ ! -f "$src/model-00001-of-00002.safetensors" ]]; then
  python3 scripts/make-k2-bench-shard.py "$src"
fi
"$ckpt" validate "$src" >/dev/null
in_bytes=$(cat "$src"/*.safetensors | wc -c)
out_bytes=$("$ckpt" convert "$src" "$dir/plan-only" --to bf16 --dry-run --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_out"])')

# rows: name seconds peak_rss_kb

blocks=$(( (out_bytes + (64 << 20) - 1) / (64 << 20) ))
best "I/O floor (cat input; dd output, fsync)" bash -c \
  "cat '$src'/*.safetensors > /dev/null && dd if=/dev/zero of='$dir/out' bs=64M count=$blocks conv=fsync status=none"
best "ckpt convert --to bf16" "$ckpt" convert "$src" "$dir/out" --to bf16 --json
if [[ -n "${CT_PYTHON:-}" ]]; then
  best "compressed-tensors convert_checkpoint" "$CT_PYTHON" -c "
import sys
from compressed_tensors.entrypoints.convert import convert_checkpoint
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer
convert_checkpoint('$src', '$dir/out', CompressedTensorsDequantizer('$src'))
"
fi
rm -rf "$dir/out" "$dir/plan-only"

echo "Input $(python3 -c "print(f'{$in_bytes/1e9:.2f}')") GB, BF16 output $(python3 -c "print(f'{$out_bytes/1e9:.2f}')") GB; caches $(can_drop && echo dropped before every run || echo NOT dropped); best of $repeats"
print_rows "output GB/s" "$out_bytes"
