#!/usr/bin/env bash
# Builds the browser app into dist/ (release, wasm-opt -Oz), then leaves beside each file a
# brotli (-q 11) and a gzip (-9) copy, which the server sends as they are (ServeDir's
# precompressed files) instead of compressing each response. Never downloads tools.
set -euo pipefail
cd "$(dirname "$0")/.."
# binaryen's wasm-opt from tools/ (see scripts/setup.sh) comes before any system one.
export PATH="$PWD/tools/binaryen/node_modules/.bin:$HOME/.cargo/bin:$PATH"
echo "[build] building the app with trunk (release)"
trunk build --release --offline
echo "[build] precompressing dist/ (brotli -q 11, gzip -9)"
for f in dist/*.wasm dist/*.js dist/*.css dist/*.html dist/*.svg; do
  [ -e "$f" ] || continue
  brotli -q 11 -f -k -o "$f.br" "$f"
  gzip -9 -n -c "$f" >"$f.gz"
done
