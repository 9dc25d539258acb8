#!/usr/bin/env bash
# Every GPU check and measurement of llmc, by priority, under one deadline: the gpu-labelled test binaries, the
# fixture's GPTQ W4A16 accuracy by --precision / --calib-activations, the 8B-shaped 4-layer GPTQ speed in its
# configurations (tf32 + fp32 activations, bf16 + bf16, bf16 + host), one 8B block against PyTorch, fixture GPTQ in
# the remaining precisions, a calibrated Llama 4, an FP8 static + kv and an AWQ FP8_DYNAMIC fixture checkpoint loaded
# by ctcheck, the 70B-shaped 4-layer run, the accuracy table on the GPU and the 8B job end to end (32 layers). A step
# starts only if its estimate fits before DEADLINE seconds (default 570; everything takes about 25 minutes on an H100,
# so one call runs the first steps and logs the rest as skipped); each result is appended to OUT/progress.txt as it
# comes, the logs and reports stay in OUT.
#
#   bench/gpu/verify_all.sh BIN_DIR SHARED_DIR OUT [CTCHECK_PY]
#
#   BIN_DIR     llmc, llmc-make-model, llmc-bench-block and the cuda_*_test binaries (e.g. .devbundle/bin, with
#               LD_LIBRARY_PATH set as docs/benchmarks.md says)
#   SHARED_DIR  ../shared (models/llmc-fixture-llama, data/*.txt)
#   CTCHECK_PY  ctcheck.py (../shared/tools/ctcheck copied into the project); the ctcheck steps skip without it
#   TESTS       the test binaries to run (default: all, the most recently changed first)
# The tests read LLMC_SOURCE_DIR's engine/model/testdata (compiled in) and LLMC_SHARED_DIR.
set -u
B="$1"; S="$2"; OUT="$3"; CT="${4:-}"
mkdir -p "$OUT"
F="$S/models/llmc-fixture-llama"
T0=$(date +%s)
DEADLINE=${DEADLINE:-570}
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/progress.txt"; }
fits() { [ $(( $(date +%s) - T0 + $1 )) -le "$DEADLINE" ]; }
export LLMC_SHARED_DIR="$S"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/card.txt" 2>&1
el "start on $(tail -n 1 "$OUT/card.txt")"

for t in ${TESTS:-cuda_decoder_kernels_test cuda_block_test cuda_calib_test cuda_activation_quant_test cuda_awq_test \
                   cuda_vl_test cuda_gptq_test cuda_model_ops_test cuda_rtn_test block_goldens_test}; do
  fits 60 || { el "skip test $t"; continue; }
  timeout 150 "$B/$t" --gtest_brief=1 > "$OUT/$t.log" 2>&1
  el "test $t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$t.log" | tr '\n' ' ')"
done

acc() {  # LABEL ARGS...: fixture GPTQ W4A16, 128 x 512 calibration, perplexity on the first 100 windows of eval.txt
  local l=$1; shift
  local d=/tmp/llmc-verify-acc-$l t0 t1 p
  t0=$(date +%s.%N)
  timeout 120 "$B/llmc" compress "$F" "$d" --scheme W4A16 --algorithm gptq --dataset "$S/data/calibration.txt" \
    --num-samples 128 --seq-len 512 --seed 42 --device cuda --overwrite --json "$@" > "$OUT/acc_$l.json" 2> "$OUT/acc_$l.log"
  t1=$(date +%s.%N)
  p=$(timeout 60 "$B/llmc" eval "$d" --text "$S/data/eval.txt" --max-windows 100 --device cuda --json 2>> "$OUT/acc_$l.log" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
  el "accuracy $l: perplexity $p, compress $(python3 -c "print(round($t1 - $t0, 2))") s ($*)"
}
speed() {  # LABEL ESTIMATE ACTIVATIONS EXTRA...: bench/gpu/gptq_speed.sh, 8B shape, 4 layers, 512 x 2048
  local l=$1 est=$2 a=$3; shift 3
  fits "$est" || { el "skip $l"; return; }
  CALIB_ACTIVATIONS=$a EXTRA="$*" WORK=/tmp/llmc-verify-speed timeout 200 \
    bash "$(dirname "$0")/gptq_speed.sh" "$B/llmc" "$B/llmc-make-model" "$S" "$OUT/$l" 512 2048 4 > "$OUT/$l.txt" 2>&1
  el "$l rc=$? $(tr -d '\n' < "$OUT/$l.txt" | cut -c1-700)"
}

fits 30 && acc tf32_fp32act
fits 30 && acc bf16_bf16act --precision bf16 --calib-activations bf16
speed speed8b_tf32_fp32 110 fp32
speed speed8b_bf16_bf16 80 bf16 --precision bf16
speed speed8b_bf16_host 80 host --precision bf16
if fits 60; then
  timeout 120 bash "$(dirname "$0")/bench_block.sh" "$B/llmc-bench-block" > "$OUT/bench_block.txt" 2>&1
  el "bench_block rc=$? $(tail -n 5 "$OUT/bench_block.txt")"
fi
fits 20 && acc fp32 --precision fp32
fits 20 && acc bf16_fp32act --precision bf16

if [ -n "$CT" ] && fits 40; then  # calibrated Llama 4 (GPTQ, every expert) in transformers + compressed-tensors
  m=/tmp/llmc-verify-llama4
  rm -rf "$m" && cp -r "${LLMC_SOURCE_DIR:-.}/engine/model/testdata/tiny-llama4text" "$m"
  python3 - "$m" <<'PY'
import json, sys
vocab = {chr(c): c - 32 for c in range(32, 127)}
vocab["<unk>"] = 95
json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": [], "unk_token": "<unk>"}},
          open(sys.argv[1] + "/tokenizer.json", "w"))
json.dump({}, open(sys.argv[1] + "/tokenizer_config.json", "w"))
PY
  printf '%s\n' "GPTQModifier:" "  ignore: [lm_head, 're:.*feed_forward\\.router\$']" "  config_groups:" "    g:" \
    "      targets: [Linear]" "      weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 16}" \
    > "$OUT/llama4.yaml"
  timeout 60 "$B/llmc" compress "$m" /tmp/llmc-verify-llama4-out --recipe "$OUT/llama4.yaml" --dataset "$S/data/calibration.txt" \
    --num-samples 16 --seq-len 64 --device cuda --overwrite --json > "$OUT/llama4.json" 2> "$OUT/llama4.log"
  el "llama4 gptq (cuda) rc=$?"
  timeout 120 python3 "$CT" load --ckpt /tmp/llmc-verify-llama4-out --orig "${LLMC_SOURCE_DIR:-.}/engine/model/testdata/tiny-llama4text" \
    --text "$S/data/eval.txt" --json-out "$OUT/llama4_load.json" > "$OUT/llama4_load.log" 2>&1
  el "llama4 ctcheck rc=$? $(tail -n 1 "$OUT/llama4_load.log" | cut -c1-600)"
fi
if [ -n "$CT" ] && fits 90; then  # FP8 static + kv: llmc eval (both figures) against the readers
  printf '%s\n' "QuantizationModifier:" "  ignore: [lm_head]" "  scheme: FP8" \
    "  kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}" > "$OUT/fp8kv.yaml"
  timeout 90 "$B/llmc" compress "$F" /tmp/llmc-verify-fp8kv --recipe "$OUT/fp8kv.yaml" --dataset "$S/data/calibration.txt" \
    --num-samples 128 --seq-len 512 --seed 42 --device cuda --overwrite --json > "$OUT/fp8kv.json" 2> "$OUT/fp8kv.log"
  timeout 60 "$B/llmc" eval /tmp/llmc-verify-fp8kv --text "$S/data/eval.txt" --max-windows 64 --device cuda \
    --activations both --json > "$OUT/fp8kv_eval.json" 2>&1
  el "fp8kv llmc eval: $(tail -c 300 "$OUT/fp8kv_eval.json")"
  timeout 150 python3 "$CT" load --ckpt /tmp/llmc-verify-fp8kv --orig "$F" --text "$S/data/eval.txt" \
    --json-out "$OUT/fp8kv_load.json" > "$OUT/fp8kv_load.log" 2>&1
  el "fp8kv ctcheck rc=$? $(tail -n 1 "$OUT/fp8kv_load.log" | cut -c1-600)"
fi
if fits 60; then  # AWQ on a float scheme, the library's example recipe: its search on the host under --device cuda
  printf '%s\n' "AWQModifier: {duo_scaling: both}" "QuantizationModifier: {ignore: [lm_head], scheme: FP8_DYNAMIC, targets: [Linear]}" \
    > "$OUT/awq_fp8.yaml"
  t0=$(date +%s)
  timeout 60 "$B/llmc" compress "$F" /tmp/llmc-verify-awq-fp8 --recipe "$OUT/awq_fp8.yaml" --dataset "$S/data/calibration.txt" \
    --num-samples 32 --seq-len 512 --seed 42 --device cuda --overwrite --json > "$OUT/awq_fp8.json" 2> "$OUT/awq_fp8.log"
  el "awq fp8_dynamic both (cuda) rc=$? $(( $(date +%s) - t0 )) s"
  if [ -n "$CT" ] && fits 60; then
    timeout 90 python3 "$CT" load --ckpt /tmp/llmc-verify-awq-fp8 --orig "$F" --text "$S/data/eval.txt" \
      --json-out "$OUT/awq_fp8_load.json" > "$OUT/awq_fp8_load.log" 2>&1
    el "awq fp8 ctcheck rc=$? $(tail -n 1 "$OUT/awq_fp8_load.log" | cut -c1-600)"
  fi
fi
if fits 240; then
  MODEL_ARGS="--hidden 8192 --intermediate 28672 --heads 64 --kv-heads 8" speed speed70b_bf16_bf16 240 bf16 --precision bf16
fi
if fits 150; then  # the accuracy table (docs/accuracy.md) with every compression and evaluation on the GPU
  LLMC_SHARED_DIR="$S" DEVICE=cuda timeout 240 bash "$(dirname "$0")/../accuracy.sh" "$B/llmc" /tmp/llmc-verify-accuracy \
    > "$OUT/accuracy_cuda.md" 2> "$OUT/accuracy_cuda.log"
  el "accuracy table on cuda rc=$? $(tr '\n' ' ' < "$OUT/accuracy_cuda.md" | cut -c1-1500)"
fi
if fits 280; then  # the 8B job end to end (32 layers, bf16 / bf16); the model is made first, outside the timing
  mkdir -p /tmp/llmc-verify-e2e
  [ -f /tmp/llmc-verify-e2e/llama8b/config.json ] || { "$B/llmc-make-model" /tmp/llmc-verify-e2e/llama8b --shape 8b > /dev/null &&
    cp "$F/tokenizer.json" "$F/tokenizer_config.json" /tmp/llmc-verify-e2e/llama8b/; }
  CALIB_ACTIVATIONS=bf16 EXTRA="--precision bf16" WORK=/tmp/llmc-verify-e2e timeout $(( DEADLINE - $(date +%s) + T0 )) \
    bash "$(dirname "$0")/gptq_speed.sh" "$B/llmc" "$B/llmc-make-model" "$S" "$OUT/e2e8b" 512 2048 > "$OUT/e2e8b.txt" 2>&1
  el "e2e8b (32 layers) rc=$? $(tr -d '\n' < "$OUT/e2e8b.txt" | cut -c1-700)"
fi
el "done"
