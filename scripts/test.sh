#!/usr/bin/env bash
# Runs every test of persona-chat, installing what is missing first (see scripts/setup.sh):
#   1. native: protocol round trips, app logic, server integration tests over real sockets
#   2. browser: wasm-bindgen-test in headless Chromium
#   3. end-to-end: the real server, the built app and Chromium driving two windows
# before them, the lint layer: rustfmt and clippy (-D warnings) for the native and wasm targets.
# Every layer runs even if an earlier one failed; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

bash scripts/setup.sh --test || { echo "setup failed" >&2; exit 1; }

logs=$(mktemp -d)
failed=()
layer() {
  local name="$1"; shift
  printf '\n\033[1;34m== %s\033[0m\n' "$name"
  if "$@" 2>&1 | tee "$logs/$name.log"; then :; else failed+=("$name"); fi
}

# Formatting (rustfmt.toml) and clippy with warnings as errors, for the native and wasm targets.
layer lint bash -c "cargo fmt --all -- --check \
  && cargo clippy --workspace --all-targets --quiet -- -D warnings \
  && cargo clippy --target wasm32-unknown-unknown -p persona-chat --lib --tests --quiet -- -D warnings"
layer native cargo test --workspace
layer build-app bash scripts/build-app.sh
layer browser cargo test --target wasm32-unknown-unknown --test web
# Each e2e test drives two Chromium windows: at most two tests at once (four windows), or the
# windows starve each other on a small machine and every timing stretches. E2E_THREADS overrides.
layer e2e bash -c "cargo build -p persona-chat-server --quiet && cargo test --test e2e -- --nocapture --test-threads=${E2E_THREADS:-2}"

printf '\n\033[1;34m== summary\033[0m\n'
echo "-- lint"
if [[ " ${failed[*]} " == *" lint "* ]]; then echo "rustfmt or clippy failed: see the output above"; else echo "rustfmt and clippy: clean"; fi
for name in native browser e2e; do
  echo "-- $name"
  grep -E '^test result:|^error: test failed|^error: could not compile' "$logs/$name.log" || echo "(no summary: see the output above)"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
