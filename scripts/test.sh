#!/usr/bin/env bash
# Runs the test suite from the repository root, wherever it is called from.
#
# Usage: scripts/test.sh [swift test arguments...]
#   e.g. scripts/test.sh --filter NativeLibraryTests
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec swift test "$@"
