#!/usr/bin/env bash
# Run persona-chat: installs what is missing, builds the app (release, by Trunk) and the
# server, then serves both on one URL. Ctrl-C stops it.
#   ADDR (default 127.0.0.1:8080) and DATA_DIR (default ./data) are passed to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
bash scripts/build-app.sh
echo "[run] building the server"
cargo build --profile server -p persona-chat-server --quiet

export PERSONA_ADDR="${ADDR:-${PERSONA_ADDR:-127.0.0.1:8080}}"
export PERSONA_DATA_DIR="${DATA_DIR:-${PERSONA_DATA_DIR:-./data}}"
export PERSONA_STATIC_DIR="${PERSONA_STATIC_DIR:-./dist}"
# exec: Ctrl-C goes straight to the server, which shuts down cleanly.
exec target/server/persona-chat-server
