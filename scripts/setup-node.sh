#!/usr/bin/env bash
# Installs the pinned npm packages the integration tests use, from the npm
# registry: the reference graphql-ws client (api/tests/ws) and a real OpenID
# provider, npm oidc-provider (api/tests/oidc).
set -euo pipefail
if ! command -v node >/dev/null; then
  echo "error: Node.js is required for the WebSocket and single sign-on tests (apt-get install nodejs npm)" >&2
  exit 1
fi
root="$(dirname "$0")/../api/tests"
for dir in ws oidc; do
  cd "$root/$dir"
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  cd - >/dev/null
done
