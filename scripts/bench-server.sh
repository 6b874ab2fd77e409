#!/usr/bin/env bash
# Load benchmark of the server (issue 3): builds the server and the bench with the server's
# release profile, then runs the bench, which starts the server itself on a free loopback
# port with a temporary data dir, measures, kills it and prints a table. Arguments are passed
# to the bench (see `target/server/persona-chat-bench --help`), e.g.
#   bash scripts/bench-server.sh --counts 1000,5000 --duration-secs 3
# With --abuse it prints the abuse figures of issue 12 instead (peak RSS under 200 concurrent
# sign-ins, others' p99 send latency during a typing flood, next to their targets):
#   bash scripts/bench-server.sh --abuse
# With --sync it prints the resync exchange's figures of issue 11 (the sync_state answer's size
# and p50/p99 round trip for a user with 50 and with 500 conversations, unchanged and with 3
# changed, over the socket and over HTTP):
#   bash scripts/bench-server.sh --sync
# PERSONA_BENCH_SERVER overrides the server binary. Takes a few minutes at the defaults
# (at most --timeout-secs, 360 by default). Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "[bench] building the server (cargo build --profile server -p persona-chat-server)"
cargo build --profile server -p persona-chat-server --quiet
echo "[bench] building the bench (cargo build --profile server -p persona-chat-bench)"
cargo build --profile server -p persona-chat-bench --quiet

export PERSONA_BENCH_SERVER="${PERSONA_BENCH_SERVER:-target/server/persona-chat-server}"
exec target/server/persona-chat-bench "$@"
