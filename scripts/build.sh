#!/usr/bin/env bash
# Configures and builds llmc into ${BUILD_DIR:-build}. Extra arguments go to cmake's configure step.
# CUDA code is built when nvcc is found (Hopper sm_90 by default); set LLMC_WITH_CUDA=OFF to skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  -DLLMC_WITH_CUDA=${LLMC_WITH_CUDA:-AUTO} "$@"
cmake --build "$BUILD_DIR" -j"$(nproc)"
