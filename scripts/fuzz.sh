#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for SECONDS (default 60) from its seed
# corpus. A crash, leak or sanitizer report fails the run and leaves the reproducer in build-fuzz/artifacts/.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
BUILD_DIR=build-fuzz
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DLLMC_BUILD_FUZZ=ON -DLLMC_BUILD_BENCH=OFF -DLLMC_WITH_CUDA=OFF >/dev/null
targets=$(ls tests/fuzz/fuzz_*.cc | xargs -n1 basename | sed 's/\.cc$//')
cmake --build "$BUILD_DIR" -j"$(nproc)" --target $targets
mkdir -p "$BUILD_DIR/artifacts"
for t in $targets; do
  corpus="$BUILD_DIR/corpus/$t"
  mkdir -p "$corpus"
  seeds="tests/fuzz/corpus/$t"
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
  "$BUILD_DIR/bin/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$BUILD_DIR/artifacts/$t-" -print_final_stats=1 "$corpus" ${seeds:+$( [ -d "$seeds" ] && echo "$seeds")} \
    2>&1 | grep -E "^(stat::number_of_executed_runs|==|SUMMARY|ERROR)|Done" || true
  if ls "$BUILD_DIR/artifacts/$t-"* >/dev/null 2>&1; then echo "fuzz: $t found a failure" >&2; exit 1; fi
done
echo "fuzz: no failures"
