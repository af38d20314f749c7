# Shared by scripts/bench-*.sh (sourced): cold-cache timing of commands and the
# result table. Needs $dir (scratch folder) and $repeats set by the caller.

can_drop() { [[ -w /proc/sys/vm/drop_caches ]]; }
drop() { if can_drop; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }
now() { date +%s%N; }

# rows: "name nanoseconds peak_rss_kb"
rows=()

# best NAME COMMAND...: runs COMMAND $repeats times, each from a dropped page
# cache with $dir/out removed, and keeps the fastest (stdout in $dir/stdout).
best() {
  local name=$1; shift
  local bs="" brss=""
  for _ in $(seq "$repeats"); do
    rm -rf "$dir/out"; drop
    local s e rss
    s=$(now)
    /usr/bin/time -f "%M" -o "$dir/rss" "$@" >"$dir/stdout" 2>"$dir/err" || { cat "$dir/err"; exit 1; }
    e=$(now)
    rss=$(tail -1 "$dir/rss")
    local t=$(( e - s ))
    if [[ -z "$bs" || $t -lt $bs ]]; then bs=$t; brss=$rss; fi
  done
  rows+=("$name $bs $brss")
}

# print_rows LABEL BYTES: the table, throughput as BYTES per second under
# LABEL, each row against the first (the I/O floor).
print_rows() {
  local label=$1 bytes=$2 floor_ns=""
  printf '%-42s %9s %12s %12s %12s\n' "" "wall s" "$label" "vs floor" "peak RSS"
  for r in "${rows[@]}"; do
    read -r _ ns rss <<<"$(echo "$r" | awk '{print "x", $(NF-1), $NF}')"
    name=$(echo "$r" | awk '{NF-=2; print}')
    [[ -z "$floor_ns" ]] && floor_ns=$ns
    python3 - "$name" "$ns" "$rss" "$floor_ns" "$bytes" <<'PY'
import sys
name, ns, rss, floor, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = ns / 1e9
print(f"{name:<42} {s:9.2f} {n / s / 1e9:12.2f} {floor / ns:11.2f}x {rss / 1024:9.0f} MiB")
PY
  done
}

# k2_inputs: sets $src = $dir/k2 (the K2-shaped INT4 benchmark checkpoint,
# scripts/make-k2-bench-shard.py) and $bf16 = $dir/k2-bf16 (its BF16
# conversion by $ckpt), making either when missing.
k2_inputs() {
  src="$dir/k2"
  [[ -f "$src/model-00001-of-00002.safetensors" ]] || python3 scripts/make-k2-bench-shard.py "$src"
  bf16="$dir/k2-bf16"
  [[ -f "$bf16/model.safetensors.index.json" ]] || "$ckpt" convert "$src" "$bf16" --to bf16 --json >/dev/null
}

# bench_setup: builds ckpt in release mode and sets $ckpt, $dir ($BENCH_DIR,
# default .bench, created), $repeats ($REPEATS, default 1) and $py ($CT_PYTHON,
# default python3).
bench_setup() {
  swift build -c release --product ckpt >/dev/null
  ckpt="$(swift build -c release --show-bin-path)/ckpt"
  dir=${BENCH_DIR:-.bench}
  repeats=${REPEATS:-1}
  py=${CT_PYTHON:-python3}
  mkdir -p "$dir"
}
