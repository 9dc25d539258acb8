#!/usr/bin/env bash
# ctest ConsoleTypeCheck: tsc --checkJs over the console's modules (jsconfig.json). Same rule as the browser test
# for a missing toolchain: an error under CI=true, skipped (77) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/tsc ] || ! command -v node >/dev/null; then
  if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
    echo "ConsoleTypeCheck: error: node or client/web/node_modules missing; scripts/setup.sh installs them" >&2
    exit 1
  fi
  echo "SKIPPED: node or client/web/node_modules missing (npm ci in client/web)"
  exit 77
fi
exec node_modules/.bin/tsc -p jsconfig.json
