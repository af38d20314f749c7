#!/usr/bin/env bash
# Sets up, builds ckpt in release mode and runs the main job on the bundled
# fixture checkpoint (a tiny Kimi-K2-Thinking-shaped compressed-tensors INT4
# model): inspect and validate it, convert it to BF16 and to DeepSeek-V3 block
# FP8 (into .demo/, replaced on every run), validate both outputs, round-trip
# through fp16 back to INT4, and report diff + verify of both conversions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
swift build -c release --product ckpt
ckpt="$(swift build -c release --show-bin-path)/ckpt"
fixture=Fixtures/kimi-k2-tiny

echo "\$ ckpt inspect $fixture"
"$ckpt" inspect "$fixture"
echo
echo "\$ ckpt validate $fixture --data --checksums $fixture/checksums.sha256"
"$ckpt" validate "$fixture" --data --checksums "$fixture/checksums.sha256"

out=.demo
rm -rf "$out"
for to in bf16 fp8-block; do
  echo
  echo "\$ ckpt convert $fixture $out/$to --to $to"
  "$ckpt" convert "$fixture" "$out/$to" --to "$to"
  echo
  echo "\$ ckpt validate $out/$to --data --checksums $out/$to/checksums.sha256"
  "$ckpt" validate "$out/$to" --data --checksums "$out/$to/checksums.sha256"
done

# The way back (issue 5): INT4 -> fp16 -> INT4 recovers the trained grid; the
# files are the original's byte for byte, so the original's checksums verify.
echo
echo "\$ ckpt convert $fixture $out/fp16 --to fp16 && ckpt requantize $out/fp16 $out/int4 --to int4"
"$ckpt" convert "$fixture" "$out/fp16" --to fp16 >/dev/null
"$ckpt" requantize "$out/fp16" "$out/int4" --to int4
echo
echo "\$ ckpt validate $out/int4 --data --checksums $fixture/checksums.sha256"
"$ckpt" validate "$out/int4" --data --checksums "$fixture/checksums.sha256"

# Numerical diffs (issue 6): what each conversion changed, tensor by tensor,
# and what it changes in the layer outputs (reference FP32 forward pass through
# OpenBLAS, MoE blocks included). Reports: .demo/{diff,verify}-<target>.{json,h5,html}.
for to in bf16 fp8-block; do
  echo
  echo "\$ ckpt diff $fixture $out/$to --top 5 --json $out/diff-$to.json --hdf5 $out/diff-$to.h5 --html $out/diff-$to.html"
  "$ckpt" diff "$fixture" "$out/$to" --top 5 --json "$out/diff-$to.json" --hdf5 "$out/diff-$to.h5" --html "$out/diff-$to.html"
  echo
  echo "\$ ckpt verify $fixture $out/$to --top 5 --json $out/verify-$to.json --hdf5 $out/verify-$to.h5 --html $out/verify-$to.html"
  "$ckpt" verify "$fixture" "$out/$to" --top 5 --json "$out/verify-$to.json" --hdf5 "$out/verify-$to.h5" --html "$out/verify-$to.html"
done

# Pipelines and archives (issue 7): the two shipped pipelines, end to end on
# the fixture, then an archive of it read in place. Their state files are
# .demo/pipeline-*/.ckpt-run.*.json; rerunning with --resume skips finished steps.
for p in fp8-verify fp16-roundtrip; do
  echo
  echo "\$ ckpt run Docs/pipelines/$p.yaml --set model=$fixture --set work=$out/pipeline/$p"
  "$ckpt" run "Docs/pipelines/$p.yaml" --set model="$fixture" --set work="$out/pipeline/$p" >/dev/null
  echo "\$ ckpt run Docs/pipelines/$p.yaml --set model=$fixture --set work=$out/pipeline/$p --resume"
  "$ckpt" run "Docs/pipelines/$p.yaml" --set model="$fixture" --set work="$out/pipeline/$p" --resume
done
echo
echo "\$ ckpt compress $fixture $out/zst && ckpt validate $out/zst --data --checksums $fixture/checksums.sha256"
"$ckpt" compress "$fixture" "$out/zst"
"$ckpt" validate "$out/zst" --data --checksums "$fixture/checksums.sha256"
