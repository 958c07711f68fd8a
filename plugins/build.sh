#!/usr/bin/env bash
# Builds the example plugins and the host's test fixtures from source, into
# plugins/dist/: the Rust guests are compiled for
# wasm32-unknown-unknown with wit-bindgen, then wrapped into a component by
# plugins/tools/componentize (the wit-component crate); the JavaScript
# example is built by componentize-qjs from npm. Needs rustup, crates.io and
# npm.
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd)"
dist="$here/dist"
target="$here/target"
mkdir -p "$dist"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

cargo build --quiet --locked --release --manifest-path tools/componentize/Cargo.toml --target-dir "$target"
componentize="$target/release/componentize"

guest() { # guest CRATE_DIR OUTPUT_NAME [cargo args…]
  local dir="$1" out="$2"
  shift 2
  cargo build --quiet --locked --release --target wasm32-unknown-unknown \
    --manifest-path "$dir/Cargo.toml" --target-dir "$target/guests/$out" "$@"
  local core
  core="$(ls "$target/guests/$out/wasm32-unknown-unknown/release/"*.wasm | head -1)"
  "$componentize" "$core" "$dist/$out.wasm"
}

guest examples/kpi-rust kpi-energy
# The JavaScript example: componentize-qjs (npm, pinned in its lock file)
# embeds QuickJS and the script into a component; WASI imports are stubbed
# with traps, so the component imports only the host's log.
if ! command -v npm >/dev/null; then
  echo "error: npm is required to build plugins/examples/kpi-js (apt-get install nodejs npm)" >&2
  exit 1
fi
(
  cd examples/kpi-js
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    # `npm install` with the lock file, not `npm ci`: the package lists
    # native bindings for platforms the registry does not serve, which the
    # lock cannot record and `npm ci` then refuses.
    npm install --no-save --no-audit --no-fund --loglevel=error
  fi
  npx --no-install componentize-qjs --wit ../../wit --world kpi --js kpi.js --sync --stub-wasi \
    -o "$dist/kpi-thermal.wasm" >/dev/null
)
guest examples/report-rust health-report
for kind in spin memory huge trap; do
  HOSTILE_KIND="$kind" guest fixtures/hostile "hostile-$kind" --features "$kind"
done
echo "plugins built into $dist"
