#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a compressed model:
#   scripts/quickstart.sh [MODEL_DIR] [OUTPUT_DIR] [SCHEME]
# installs the dependencies (apt), builds llmc, compresses MODEL_DIR (default: ../shared/models/llmc-fixture-llama,
# or a small synthetic Llama when that is absent) to SCHEME (default W4A16) into OUTPUT_DIR (default ./out),
# prints the summary and describes the result.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-../shared/models/llmc-fixture-llama}
OUT=${2:-./out}
SCHEME=${3:-W4A16}
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build} LLMC_WITH_CUDA=${LLMC_WITH_CUDA:-OFF} bash scripts/build.sh -DLLMC_BUILD_TESTS=OFF >/dev/null
BIN=${BUILD_DIR:-build}/bin
if [ ! -d "$MODEL" ]; then
  if [ $# -ge 1 ]; then echo "quickstart: error: $MODEL is not a directory" >&2; exit 1; fi
  MODEL=${BUILD_DIR:-build}/demo-model
  echo "quickstart: ../shared is not here; using a synthetic Llama at $MODEL"
  [ -f "$MODEL/config.json" ] || "$BIN/llmc-make-model" "$MODEL" --shape tiny
fi
"$BIN/llmc" compress "$MODEL" "$OUT" --scheme "$SCHEME" --overwrite
echo
"$BIN/llmc" inspect "$OUT"
