#!/usr/bin/env bash
# Foundation benchmarks for Docs/PERFORMANCE.md, measured side by side in one run:
#   - memcpy bandwidth (the machine's ceiling)
#   - parse + validate a synthetic 100k-tensor header
#   - `ckpt validate` (headers only) on a full-scale 62-shard sparse Kimi K2 checkpoint
#   - `ckpt validate --data` and `ckpt hash` on a >= 2 GB shard next to `cat` and `sha256sum`
#   - the same on two 1 GB shards with --jobs 1 and --jobs 2 (parallel across shards)
# Files go to $BENCH_DIR (default .bench/, git-ignored). Page cache is warm unless
# the script may drop caches (root with writable /proc/sys/vm/drop_caches): then
# a "cold" row is printed too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
swift build -c release --product ckpt >/dev/null
ckpt="$(swift build -c release --show-bin-path)/ckpt"
dir=${BENCH_DIR:-.bench}
mkdir -p "$dir"

seconds() {  # best of 3 wall-clock runs of "$@", in seconds
  local best="" s e d
  for _ in 1 2 3; do
    s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N)
    d=$(( e - s ))
    if [[ -z "$best" || $d -lt $best ]]; then best=$d; fi
  done
  python3 -c "print(f'{$best/1e9:.3f}')"
}
rate() { python3 -c "print(f'{$1/$2/1e9:.2f} GB/s')"; }
can_drop() { [[ -w /proc/sys/vm/drop_caches ]]; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
cold() {  # one cold run of "$@", in seconds
  drop; local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N)
  python3 -c "print(f'{($e-$s)/1e9:.3f}')"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB"
"$ckpt" bench memcpy
"$ckpt" bench header --tensors 100000

k2="$dir/k2-sparse"
[[ -d "$k2" ]] || "$ckpt" bench make-k2 "$k2"
t=$(seconds "$ckpt" validate "$k2")
echo "validate (headers only), 62-shard sparse K2: ${t} s ($("$ckpt" validate "$k2" | tail -1 | cut -c1-120))"

shard="$dir/shard-2g.safetensors"
[[ -f "$shard" ]] || "$ckpt" bench make-shard "$shard" --mib 2048
size=$(stat -c %s "$shard")
cat "$shard" >/dev/null
echo "file: $shard, $size bytes (warm page cache, best of 3)"
for label in "cat" "ckpt validate --data" "sha256sum" "ckpt hash"; do
  case $label in
    cat) cmd=(cat "$shard") ;;
    "ckpt validate --data") cmd=("$ckpt" validate "$shard" --data) ;;
    sha256sum) cmd=(sha256sum "$shard") ;;
    "ckpt hash") cmd=("$ckpt" hash "$shard") ;;
  esac
  t=$(seconds "${cmd[@]}")
  line="  $(printf '%-22s' "$label") ${t} s  $(rate "$size" "$t")"
  if can_drop; then c=$(cold "${cmd[@]}"); line="$line   cold ${c} s  $(rate "$size" "$c")"; fi
  echo "$line"
done

two="$dir/two-shards"
if [[ ! -d "$two" ]]; then
  mkdir -p "$two"
  "$ckpt" bench make-shard "$two/a.safetensors" --mib 1024 >/dev/null
  "$ckpt" bench make-shard "$two/b.safetensors" --mib 1024 >/dev/null
fi
total=$(( $(stat -c %s "$two/a.safetensors") + $(stat -c %s "$two/b.safetensors") ))
cat "$two"/*.safetensors >/dev/null
echo "two 1 GB shards ($total bytes, warm):"
for j in 1 2; do
  t=$(seconds "$ckpt" validate "$two" --data --jobs $j); echo "  validate --data --jobs $j  ${t} s  $(rate "$total" "$t")"
  t=$(seconds "$ckpt" hash "$two" --jobs $j); echo "  hash --jobs $j             ${t} s  $(rate "$total" "$t")"
done
t=$(seconds cat "$two/a.safetensors" "$two/b.safetensors"); echo "  cat                        ${t} s  $(rate "$total" "$t")"
t=$(seconds sha256sum "$two/a.safetensors" "$two/b.safetensors"); echo "  sha256sum (serial)         ${t} s  $(rate "$total" "$t")"
