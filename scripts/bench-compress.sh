#!/usr/bin/env bash
# `ckpt compress` / `ckpt decompress` (issue 7) next to zipnn (PyPI) and
# `zstd -3 -T0`, file to file, on
# (a) the BF16 conversion of the synthetic K2-shaped benchmark shard
#     ($BENCH_DIR/k2-bf16/model-00001-of-00002.safetensors, 5.6 GB: its experts
#     lie on the INT4 grid), and
# (b) a random-normal BF16 shard of ~2 GiB (std 0.02, numpy, made once).
# Each row starts from a cold page cache when the script may drop caches and
# ends when its output is on disk (`sync`: zipnn and zstd leave it in the page
# cache, ckpt fsyncs); every restored file is compared with the original. Ratio, compress and decompress
# GB/s of original bytes; all tools get the same threads ($JOBS, default: all cores).
# Needs `pip install zipnn` (the zipnn rows are skipped without it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
bench_setup
jobs=${JOBS:-$(nproc)}
mkdir -p "$dir/z"
k2_inputs
normal="$dir/normal-bf16.safetensors"
[[ -f "$normal" ]] || python3 - "$normal" <<'PY'
import sys, ml_dtypes, numpy as np
import safetensors.numpy
rng = np.random.default_rng(7)
t = {f"layer.{i}.weight": (rng.standard_normal((7168, 18432), dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16) for i in range(8)}
safetensors.numpy.save_file(t, sys.argv[1], metadata={"format": "pt"})
PY
cat > "$dir/zipnn_file.py" <<'PY'
import sys, zipnn
mode, src, dst, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
z = zipnn.ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=threads)
data = open(src, "rb").read()
out = z.compress(data) if mode == "c" else z.decompress(data)
open(dst, "wb").write(out)
PY
timed() {  # timed VAR COMMAND...: cold cache, nanoseconds into VAR, until the output is on disk (sync)
  local var=$1; shift
  drop
  local s e
  s=$(now); { "$@" && sync; } >/dev/null 2>"$dir/err" || { cat "$dir/err"; exit 1; }; e=$(now)
  printf -v "$var" '%s' "$(( e - s ))"
}
row() {  # row NAME ORIGINAL ARCHIVE COMPRESS_NS DECOMPRESS_NS
  python3 -c "import sys; n,o,a,c,d=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]); print(f'{n:<34} {o/a:7.2f}x {o/c:12.2f} {o/d:14.2f}')" "$@"
}
for f in "$bf16/model-00001-of-00002.safetensors" "$normal"; do
  size=$(stat -c %s "$f")
  echo "$f ($((size / 1000000)) MB), $jobs threads"
  printf '%-34s %8s %12s %14s\n' "" "ratio" "compress GB/s" "decompress GB/s"
  rm -f "$dir/z/"*
  timed c "$ckpt" compress "$f" "$dir/z/a.safetensors.zst" --jobs "$jobs"
  timed d "$ckpt" decompress "$dir/z/a.safetensors.zst" "$dir/z/a.safetensors" --jobs "$jobs"
  cmp "$f" "$dir/z/a.safetensors"
  row "ckpt compress" "$size" "$(stat -c %s "$dir/z/a.safetensors.zst")" "$c" "$d"
  rm -f "$dir/z/"*
  if python3 -c "import zipnn" 2>/dev/null; then
    timed c python3 "$dir/zipnn_file.py" c "$f" "$dir/z/b.znn" "$jobs"
    timed d python3 "$dir/zipnn_file.py" d "$dir/z/b.znn" "$dir/z/b.out" "$jobs"
    cmp "$f" "$dir/z/b.out"
    row "zipnn $(python3 -c 'import importlib.metadata as m; print(m.version("zipnn"))')" "$size" "$(stat -c %s "$dir/z/b.znn")" "$c" "$d"
    rm -f "$dir/z/"*
  fi
  timed c zstd -q -3 -T"$jobs" "$f" -o "$dir/z/c.zst"
  timed d zstd -q -d -T"$jobs" "$dir/z/c.zst" -o "$dir/z/c.out"
  cmp "$f" "$dir/z/c.out"
  row "zstd -3 -T$jobs $(zstd --version | grep -o 'v[0-9.]*')" "$size" "$(stat -c %s "$dir/z/c.zst")" "$c" "$d"
  rm -f "$dir/z/"*
  echo
done
