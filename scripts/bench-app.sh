#!/usr/bin/env bash
# Browser benchmark of the app (issue 6): what users feel, measured in headless Chromium
# against the real server over loopback, printed as a table next to the targets: the app's
# transfer size, navigation to Connected (cold loads), cross-tab latency, opening a long
# history, long tasks while a persona streams, and recovery after a server restart.
#
# Builds the app (scripts/build-app.sh) and the server (release profile `server`), then runs
# tests/uxbench (`cargo test --test uxbench`; never part of `cargo test`). Arguments go to the
# benchmark, e.g.
#   bash scripts/bench-app.sh --only start,crosstab --loads 10 --messages 300
#   bash scripts/bench-app.sh --no-build            # use dist/ and the server as they are
# (see `bash scripts/bench-app.sh --no-build --help`). PERSONA_SERVER_BIN and PERSONA_DIST
# override the server binary and the built app. Takes about 3 to 5 minutes at the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

build=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-build" ]; then build=0; else args+=("$a"); fi
done

if [ "$build" = 1 ]; then
  bash scripts/setup.sh --test >/dev/null
  echo "[bench-app] building the app (scripts/build-app.sh)"
  bash scripts/build-app.sh >/dev/null 2>&1 || { echo "[bench-app] the app does not build: run scripts/build-app.sh to see why" >&2; exit 1; }
  echo "[bench-app] building the server (cargo build --profile server -p persona-chat-server)"
  cargo build --profile server -p persona-chat-server --quiet
fi
export PERSONA_SERVER_BIN="${PERSONA_SERVER_BIN:-$PWD/target/server/persona-chat-server}"
echo "[bench-app] building and running the benchmark (cargo test --test uxbench)"
exec cargo test --test uxbench --quiet -- "${args[@]}"
