#!/usr/bin/env bash
# Prints the built app's transfer sizes: each .wasm, .js and .css file in dist/, raw, gzip
# (-9) and brotli (-q 11), and the total. Builds the app first unless --no-build is given.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${1:-}" != "--no-build" ]; then
  bash scripts/setup.sh >/dev/null
  bash scripts/build-app.sh >/dev/null 2>&1
fi
printf '%-44s %10s %10s %10s\n' file raw gzip brotli
total_raw=0 total_gz=0 total_br=0
for f in dist/*.wasm dist/*.js dist/*.css; do
  [ -e "$f" ] || continue
  raw=$(wc -c <"$f")
  gz=$(gzip -9 -c "$f" | wc -c)
  br=$(brotli -q 11 -c "$f" | wc -c)
  total_raw=$((total_raw + raw)); total_gz=$((total_gz + gz)); total_br=$((total_br + br))
  printf '%-44s %10d %10d %10d\n' "$(basename "$f")" "$raw" "$gz" "$br"
done
printf '%-44s %10d %10d %10d\n' total "$total_raw" "$total_gz" "$total_br"
awk -v r="$total_raw" -v g="$total_gz" -v b="$total_br" 'BEGIN { printf "%-44s %9.1fK %9.1fK %9.1fK\n", "total (KiB)", r/1024, g/1024, b/1024 }'
