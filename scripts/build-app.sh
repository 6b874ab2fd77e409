#!/usr/bin/env bash
# Builds the browser app into dist/ (release, wasm-opt -Oz). Never downloads tools.
set -euo pipefail
cd "$(dirname "$0")/.."
# binaryen's wasm-opt from tools/ (see scripts/setup.sh) comes before any system one.
export PATH="$PWD/tools/binaryen/node_modules/.bin:$HOME/.cargo/bin:$PATH"
echo "[build] building the app with trunk (release)"
trunk build --release --offline
