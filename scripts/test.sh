#!/usr/bin/env bash
# Builds llmc with every test and runs the whole suite (unit, integration; gpu-labelled tests skip without a
# GPU), then a short fuzzing smoke run of the parsers. Same command locally and in CI. Whatever configured the
# build directory before (scripts/quickstart.sh builds without tests), tests and benchmarks are switched on here,
# and the run fails if ctest finds no tests or fewer than the suite has.
#   scripts/test.sh            # everything
#   LLMC_SANITIZE=address,undefined scripts/test.sh   # the same under sanitizers (build dir build-san)
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite's size without the gpu-labelled tests (those exist only in CUDA builds): a run that registers fewer
# lost some (a target not built, an option off).
MIN_TESTS=${LLMC_MIN_TESTS:-760}
bash scripts/setup.sh
count_tests() {  # ctest -N prints "Total Tests: N"
  ctest --test-dir "$1" -N "${@:2}" | sed -n 's/^Total Tests: *//p'
}
if [ -n "${LLMC_SANITIZE:-}" ]; then
  BUILD_DIR=${BUILD_DIR:-build-san} LLMC_WITH_CUDA=OFF bash scripts/build.sh -DLLMC_SANITIZE="$LLMC_SANITIZE" \
    -DLLMC_BUILD_TESTS=ON -DLLMC_BUILD_BENCH=OFF
  ctest --test-dir "${BUILD_DIR:-build-san}" --output-on-failure -j2 -LE gpu --no-tests=error
  exit 0
fi
BUILD=${BUILD_DIR:-build}
BUILD_DIR=$BUILD bash scripts/build.sh -DLLMC_BUILD_TESTS=ON -DLLMC_BUILD_BENCH=ON
bash scripts/thread_safety.sh  # clang's thread-safety analysis of the locking annotations (build-clang)
n=$(count_tests "$BUILD" -LE gpu)
if [ "${n:-0}" -lt "$MIN_TESTS" ]; then
  echo "llmc test: error: ctest registers ${n:-0} non-gpu tests in $BUILD, fewer than the suite's $MIN_TESTS" >&2
  exit 1
fi
ctest --test-dir "$BUILD" --output-on-failure -j2 --no-tests=error
if [ "${LLMC_SKIP_FUZZ:-0}" != 1 ]; then
  bash scripts/fuzz.sh "${LLMC_FUZZ_SECONDS:-15}"
fi
