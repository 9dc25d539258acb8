#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (deploy/k8s): `kubectl kustomize` of every overlay, the OpenAPI
# schemas and TypeScript types of every object (npm kubernetes-models, @kubernetes-models/prometheus-operator,
# typescript; installed here with `npm ci` from package-lock.json), and llmc's own rules (k8s_validate.mjs says
# which). With BUILD_DIR, the containers' flags are checked against `llmc-server --help` and `llmc-worker --help`.
#   deploy/tests/k8s_test.sh [BUILD_DIR]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for t in kubectl node npm; do
  command -v "$t" >/dev/null || { echo "k8s_test: $t is not installed" >&2; exit 1; }
done
BIN_ARGS=()
if [ $# -ge 1 ]; then BIN_ARGS=(--bin "$(cd "$1" && pwd)/bin"); fi
cd "$HERE"
npm ci --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null
exec node k8s_validate.mjs ../k8s "${BIN_ARGS[@]}"
