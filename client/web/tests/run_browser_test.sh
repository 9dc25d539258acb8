#!/usr/bin/env bash
# ctest ConsoleBrowserTest: console.test.mjs under `node --test` (playwright-core driving Debian's chromium) against
# a real `llmc serve`. Without node, chromium, client/web/node_modules or the shared fixture model it fails when CI
# is set (CI=true: a CI run must not pass without the test) and is skipped (exit 77) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
chromium=${LLMC_CHROMIUM:-/usr/bin/chromium}
missing=()
command -v node >/dev/null || missing+=("node (Debian nodejs)")
[ -x "$chromium" ] || missing+=("$chromium (apt-get install chromium)")
[ -f node_modules/playwright-core/package.json ] || missing+=("client/web/node_modules (npm ci in client/web)")
shared=${LLMC_SHARED_DIR:-../../../shared}
[ -d "$shared/models/llmc-fixture-llama" ] || missing+=("the fixture model $shared/models/llmc-fixture-llama (LLMC_SHARED_DIR)")
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
    echo "ConsoleBrowserTest: error: missing ${missing[*]} (scripts/setup.sh installs chromium, node and node_modules; the fixture model comes with ../shared)" >&2
    exit 1
  fi
  echo "SKIPPED: missing ${missing[*]} (scripts/setup.sh installs chromium, node and node_modules; the fixture model comes with ../shared)"
  exit 77
fi
exec node --test --test-reporter=spec tests/console.test.mjs
