#!/usr/bin/env bash
# Installs the pinned npm packages the integration tests use (the reference
# graphql-ws client) from the npm registry, into api/tests/ws/node_modules.
set -euo pipefail
cd "$(dirname "$0")/../api/tests/ws"
if ! command -v node >/dev/null; then
  echo "error: Node.js is required for the WebSocket client tests (apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d node_modules/graphql-ws ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
