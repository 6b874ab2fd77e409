#!/usr/bin/env bash
# Builds the browser app into dist/ (release, wasm-opt -Oz). Never downloads tools.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
echo "[build] building the app with trunk (release)"
trunk build --release --offline
