#!/usr/bin/env bash
# Every calibrated algorithm through `llmc compress --device cuda` on the fixture (32 x 512 calibration tokens),
# each output evaluated on the GPU: a smoke check that the GPU pipeline runs them all, with perplexities.
#
#   bench/gpu/calibrated_on_gpu.sh LLMC SHARED_DIR OUT_DIR
set -euo pipefail
llmc="$1"; shared="$2"; out="$3"
model="$shared/models/llmc-fixture-llama"
mkdir -p "$out/recipes"
cat > "$out/recipes/sparsegpt.yaml" <<'Y'
SparseGPTModifier: {sparsity: 0.5, mask_structure: "2:4", ignore: [lm_head]}
Y
cat > "$out/recipes/wanda.yaml" <<'Y'
WandaPruningModifier: {sparsity: 0.5, mask_structure: "2:4", ignore: [lm_head]}
Y
cat > "$out/recipes/gptq_kv.yaml" <<'Y'
GPTQModifier:
  scheme: W4A16
  ignore: [lm_head]
  actorder: group
  kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}
Y
run() {  # LABEL ARGS...
  local label="$1"; shift
  local dir="$out/$(echo "$label" | tr ' +:' '___')"
  local t0 t1 p
  t0=$(date +%s.%N)
  "$llmc" compress "$model" "$dir" "$@" --dataset "$shared/data/calibration.txt" --num-samples 32 --seq-len 512 \
    --device "${DEVICE:-cuda}" --overwrite --json > "$dir.json"
  t1=$(date +%s.%N)
  p=$("$llmc" eval "$dir" --text "$shared/data/eval.txt" --max-windows 32 --device "${DEVICE:-cuda}" --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
  python3 -c 'import sys; print(f"| {sys.argv[1]} | {float(sys.argv[2]):.3f} | {float(sys.argv[4]) - float(sys.argv[3]):.2f} |")' "$label" "$p" "$t0" "$t1"
}
echo "| method (--device cuda) | eval.txt ppl (32 windows) | compress s |"
echo "|---|---|---|"
printf '| bf16 | %.3f | — |\n' "$("$llmc" eval "$model" --text "$shared/data/eval.txt" --max-windows 32 --device "${DEVICE:-cuda}" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')"
run "W4A16 GPTQ" --scheme W4A16 --algorithm gptq
run "W4A16 GPTQ group + fp8 kv cache" --recipe "$out/recipes/gptq_kv.yaml"
run "W4A16_ASYM AWQ" --scheme W4A16_ASYM --algorithm awq
run "W8A8 SmoothQuant+GPTQ" --scheme W8A8 --algorithm smoothquant+gptq
run "FP8 static" --scheme FP8
run "NVFP4 GPTQ" --scheme NVFP4 --algorithm gptq
run "2:4 SparseGPT" --recipe "$out/recipes/sparsegpt.yaml"
run "2:4 Wanda" --recipe "$out/recipes/wanda.yaml"
