#!/usr/bin/env bash
# The coordinator links no model runtime, BLAS or CUDA (docs/architecture.md, dependency rules): its shared
# libraries (ldd) and its symbols (nm) are checked.
#   server_deps_test.sh PATH/TO/llmc-server
set -euo pipefail
bin=$1
[ -x "$bin" ] || { echo "no llmc-server at $bin" >&2; exit 1; }
fail=0
libs=$(ldd "$bin")
for forbidden in libopenblas liblapack libblas libcublas libcudart libcusolver libnccl libcuda.so libicu libgloo; do
  if grep -q "$forbidden" <<<"$libs"; then
    echo "llmc-server links $forbidden:" >&2
    grep "$forbidden" <<<"$libs" >&2
    fail=1
  fi
done
syms=$(nm -C "$bin" | grep -E ' [TtWw] ' || true)
for forbidden in 'llmc::SequentialSolver' 'llmc::CausalLm' 'llmc::RunCompress' 'llmc::GptqQuantize' 'llmc::Tokenizer' \
                 'llmc::RunJobToOutput'; do
  if grep -q "$forbidden" <<<"$syms"; then
    echo "llmc-server contains engine code: $forbidden" >&2
    fail=1
  fi
done
# It does validate recipes with the pure format code.
grep -q 'llmc::ResolveJobRecipe' <<<"$syms" || { echo "llmc-server lacks llmc::ResolveJobRecipe (nm saw nothing?)" >&2; fail=1; }
[ $fail = 0 ] && echo "llmc-server: $(wc -l <<<"$libs") shared libraries, no BLAS, CUDA or model runtime"
exit $fail
