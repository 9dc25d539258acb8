#!/usr/bin/env bash
# The Grafana dashboards (deploy/grafana/dashboards): up to date with make_dashboards.py, then type-checked against
# npm @grafana/schema with TypeScript and llmc's rules (dashboards_typecheck.mjs says which). `npm ci` installs the
# pinned @grafana/schema and typescript from package-lock.json (scripts/setup.sh runs it too).
#   deploy/grafana/tests/dashboards_typecheck.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for t in node npm python3; do
  command -v "$t" >/dev/null || { echo "dashboards_typecheck: $t is not installed" >&2; exit 1; }
done
python3 "$HERE/../make_dashboards.py" --check
# The provisioning examples parse and say what Grafana needs (a file provider, a Prometheus data source).
python3 - "$HERE/../provisioning" <<'PY'
import sys, yaml
d = yaml.safe_load(open(f"{sys.argv[1]}/dashboards/llmc.yaml"))
assert d["apiVersion"] == 1 and d["providers"][0]["type"] == "file" and d["providers"][0]["options"]["path"], d
s = yaml.safe_load(open(f"{sys.argv[1]}/datasources/prometheus.yaml"))
assert s["apiVersion"] == 1 and s["datasources"][0]["type"] == "prometheus" and s["datasources"][0]["url"], s
print("provisioning examples: ok")
PY
cd "$HERE"
npm ci --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null
exec node dashboards_typecheck.mjs ../dashboards
