#!/usr/bin/env bash
# Makes sure the system packages CheckpointKit builds against are present.
#
# Needs pkg-config and the pkg-config modules libzstd, openblas and hdf5
# (Debian/Ubuntu: pkg-config libzstd-dev libopenblas-dev libhdf5-dev), and
# swift on PATH. As root, missing packages are installed with apt-get; as
# anyone else, the command to run is printed and the script fails. Silent and
# idempotent when everything is already there.
set -euo pipefail

packages=(pkg-config libzstd-dev libopenblas-dev libhdf5-dev)
modules=(libzstd openblas hdf5)

have_libraries() {
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "${modules[@]}"
}

missing_description() {
  if ! command -v pkg-config >/dev/null 2>&1; then
    echo "pkg-config is not installed"
    return
  fi
  local module missing=()
  for module in "${modules[@]}"; do
    pkg-config --exists "$module" || missing+=("$module")
  done
  echo "pkg-config cannot find: ${missing[*]}"
}

status=0

if ! have_libraries; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: $(missing_description); installing ${packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${packages[@]}"
    if ! have_libraries; then
      echo "setup.sh: still missing after apt-get install: $(missing_description)" >&2
      exit 1
    fi
  else
    {
      echo "setup.sh: CheckpointKit links libzstd, OpenBLAS and HDF5 through pkg-config,"
      echo "but $(missing_description). Install the development packages with:"
      echo
    } >&2
    echo "sudo apt-get install -y ${packages[*]}" >&2
    {
      echo
      echo "(On macOS: brew install pkg-config zstd openblas hdf5, and add"
      echo "\$(brew --prefix openblas)/lib/pkgconfig to PKG_CONFIG_PATH.)"
    } >&2
    status=1
  fi
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "setup.sh: 'swift' is not on PATH. Install Swift 6.3 or later from" \
    "https://www.swift.org/install/ and put its usr/bin on PATH." >&2
  status=1
fi

exit "$status"
