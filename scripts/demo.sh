#!/usr/bin/env bash
# Sets up, builds ckpt in release mode and runs the main job on the bundled
# fixture checkpoint (a tiny Kimi-K2-Thinking-shaped compressed-tensors INT4
# model): inspect and validate it, convert it to BF16 and to DeepSeek-V3 block
# FP8 (into .demo/, replaced on every run), and validate both outputs.
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
