#!/usr/bin/env bash
# Installs what building and testing persona-chat needs, and only what is missing:
#   the wasm32 target, trunk 0.21.14, wasm-bindgen-cli at the Cargo.lock version,
#   binaryen's wasm-opt 132 from the npm registry (into tools/, for Node.js; Debian's
#   binaryen 108 corrupts the externref table export of today's wasm-bindgen output),
#   Node.js if missing, and Debian's brotli (size report);
#   with --test also Debian's chromium and chromium-driver, postgresql and redis-server.
# Safe to run again: each step checks first, so a warm machine passes through in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132
want_test_tools=0
[ "${1:-}" = "--test" ] && want_test_tools=1

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# Debian packages.
apt_missing=()
command -v npm >/dev/null 2>&1 || apt_missing+=(nodejs npm)
command -v brotli >/dev/null 2>&1 || apt_missing+=(brotli)
if [ "$want_test_tools" = 1 ]; then
  [ -x /usr/bin/chromium ] || apt_missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || apt_missing+=(chromium-driver)
  # The scale-out tests start their own private PostgreSQL and Redis (testkit/), never the
  # system services these packages come with.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${apt_missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

# rustfmt and clippy (the test command's lint layer); a minimal rustup profile lacks them.
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    say "adding the $component component"
    rustup component add "$component"
  fi
done

# The wasm target.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# Trunk, at the version that builds with this machine's rustc.
if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
  say "installing trunk $TRUNK_VERSION (takes several minutes, once)"
  cargo install trunk --version "$TRUNK_VERSION" --locked --force
fi

# wasm-bindgen-cli must equal the wasm-bindgen in Cargo.lock, or the built JS and wasm disagree.
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$wb_version" ]; then
  echo "setup: could not read the wasm-bindgen version from Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wb_version" ]; then
  say "installing wasm-bindgen-cli $wb_version (takes a few minutes, once)"
  # Not --locked: one of its locked dependencies is not in the registry.
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

# wasm-opt, used by Trunk through scripts/build-app.sh (which puts tools/ first on PATH).
wasm_opt=tools/binaryen/node_modules/.bin/wasm-opt
if ! "$wasm_opt" --version 2>/dev/null | grep -q "version $BINARYEN_VERSION"; then
  say "installing binaryen $BINARYEN_VERSION (wasm-opt) from the npm registry into tools/binaryen"
  mkdir -p tools/binaryen
  npm install --prefix tools/binaryen --no-audit --no-fund --silent "binaryen@$BINARYEN_VERSION.0.0"
fi
