#!/usr/bin/env bash
# Builds llmc and runs the whole test suite (unit, integration; gpu-labelled tests skip without a GPU), then a
# short fuzzing smoke run of the parsers. Same command locally and in CI.
#   scripts/test.sh            # everything
#   LLMC_SANITIZE=address,undefined scripts/test.sh   # the same under sanitizers (build dir build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${LLMC_SANITIZE:-}" ]; then
  BUILD_DIR=${BUILD_DIR:-build-san} LLMC_WITH_CUDA=OFF bash scripts/build.sh -DLLMC_SANITIZE="$LLMC_SANITIZE" -DLLMC_BUILD_BENCH=OFF
  ctest --test-dir "${BUILD_DIR:-build-san}" --output-on-failure -j2 -LE gpu
  exit 0
fi
BUILD_DIR=${BUILD_DIR:-build} bash scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j2
if [ "${LLMC_SKIP_FUZZ:-0}" != 1 ]; then
  bash scripts/fuzz.sh "${LLMC_FUZZ_SECONDS:-15}"
fi
