#!/usr/bin/env bash
# Sets up, builds ckpt in release mode and runs the main job on the bundled
# fixture checkpoint (a tiny Kimi-K2-Thinking-shaped compressed-tensors INT4
# model): inspect it, then validate headers, index, quantization tensors,
# config inventory, data and checksums.
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
