#!/usr/bin/env bash
# ctest ConsoleBrowserTest: console.test.mjs under `node --test` (playwright-core driving Debian's chromium) against
# a real `llmc serve`. Without node, chromium or client/web/node_modules it fails when CI is set (CI=true: a CI run
# must not pass without the test) and is skipped (exit 77) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
chromium=${LLMC_CHROMIUM:-/usr/bin/chromium}
missing=()
command -v node >/dev/null || missing+=("node (Debian nodejs)")
[ -x "$chromium" ] || missing+=("$chromium (apt-get install chromium)")
[ -f node_modules/playwright-core/package.json ] || missing+=("client/web/node_modules (npm ci in client/web)")
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
    echo "ConsoleBrowserTest: error: missing ${missing[*]}; scripts/setup.sh installs them" >&2
    exit 1
  fi
  echo "SKIPPED: missing ${missing[*]}; scripts/setup.sh installs them"
  exit 77
fi
exec node --test --test-reporter=spec tests/console.test.mjs
