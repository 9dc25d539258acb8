#!/usr/bin/env bash
# Accuracy of every algorithm on the fixture model: compresses ../shared/models/llmc-fixture-llama with each
# scheme/algorithm pair (calibration: 128 samples x 512 tokens of ../shared/data/calibration.txt, seed 42) and
# evaluates the perplexity on ../shared/data/eval.txt (first 100 windows of 512 tokens, the protocol of
# fixture_report.json) and, with WIKITEXT=1, on wikitext2-test.txt. Prints a markdown table and writes the
# raw numbers to $OUT/accuracy.json.
#
#   bench/accuracy.sh [LLMC_BIN] [OUT_DIR]
#   ONLY='W8A8|FP8|NVFP4' bench/accuracy.sh ...     # only the rows whose label matches (grep -E)
#   WINDOWS=64 NUM_SAMPLES=32 bench/accuracy.sh ...  # smaller settings (defaults 100 and 128)
#   DEVICE=cuda bench/accuracy.sh ...                # calibrate and evaluate on the GPU (default cpu)
#
# `llmc eval` runs the dequantized weights with activations (Linear inputs, kv cache) fake-quantized as the
# checkpoint's quantization_config says: "eval.txt ppl". For schemes that quantize activations (W8A8, FP8, NVFP4)
# it also reports the same weights with fp32 activations: "weights only".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
llmc="${1:-$here/build/bin/llmc}"
out="${2:-$(mktemp -d)}"
shared="${LLMC_SHARED_DIR:-$here/../shared}"
model="$shared/models/llmc-fixture-llama"
calib="$shared/data/calibration.txt"
evaltext="$shared/data/eval.txt"
windows="${WINDOWS:-100}"
samples="${NUM_SAMPLES:-128}"  # calibration samples of 512 tokens
device="${DEVICE:-cpu}"
mkdir -p "$out"
[ -d "$model" ] || { echo "accuracy.sh: needs $model" >&2; exit 2; }

ppl() {  # ppl MODEL TEXT -> "PERPLEXITY PERPLEXITY_WEIGHTS_ONLY"
  "$llmc" eval "$1" --text "$2" --max-windows "$windows" --device "$device" --json |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["perplexity"], j.get("perplexity_weights_only", j["perplexity"]))'
}

results="$out/accuracy.jsonl"
: > "$results"
run() {  # run LABEL SCHEME ALGORITHM-or-RECIPE
  local label="$1" scheme="$2" how="$3" dir="$out/$(echo "$1" | tr ' /+:()' '______')"
  if [ -n "${ONLY:-}" ] && ! echo "$label" | grep -Eq "$ONLY"; then return 0; fi
  local args=()
  if [ -f "$how" ]; then args=(--recipe "$how"); else args=(--scheme "$scheme" --algorithm "$how"); fi
  local t0 t1
  t0=$(date +%s.%N)
  "$llmc" compress "$model" "$dir" "${args[@]}" --dataset "$calib" --num-samples "$samples" --seq-len 512 --seed 42 \
    --device "$device" --overwrite --json > "$dir.summary.json"
  t1=$(date +%s.%N)
  local p w=""
  p=$(ppl "$dir" "$evaltext")
  if [ "${WIKITEXT:-0}" = 1 ]; then w=$(ppl "$dir" "$shared/data/wikitext2-test.txt" | cut -d' ' -f1); fi
  python3 - "$label" "$scheme" "$p" "$t0" "$t1" "$w" >> "$results" <<'EOF'
import json, sys
label, scheme, p, t0, t1, w = sys.argv[1:]
q, wo = (float(v) for v in p.split())
print(json.dumps({"label": label, "scheme": scheme, "ppl_eval": q, "ppl_eval_weights_only": wo,
                  "seconds": float(t1) - float(t0), "ppl_wikitext2": float(w) if w else None}))
EOF
  echo "  $label: $p" >&2
}

recipes="$out/recipes"
mkdir -p "$recipes"
cat > "$recipes/w8a8_rtn.yaml" <<'EOF'
QuantizationModifier: {scheme: W8A8, ignore: [lm_head]}
EOF
cat > "$recipes/gptq_none.yaml" <<'EOF'
GPTQModifier: {scheme: W4A16, ignore: [lm_head], actorder: null}
EOF
cat > "$recipes/gptq_group.yaml" <<'EOF'
GPTQModifier: {scheme: W4A16, ignore: [lm_head], actorder: group}
EOF
cat > "$recipes/rtn_imatrix.yaml" <<'EOF'
QuantizationModifier: {scheme: W4A16, ignore: [lm_head], weight_observer: imatrix_mse}
EOF
cat > "$recipes/gptq_imatrix.yaml" <<'EOF'
GPTQModifier: {scheme: W4A16, ignore: [lm_head], weight_observer: imatrix_mse}
EOF
cat > "$recipes/sparsegpt24.yaml" <<'EOF'
SparseGPTModifier: {sparsity: 0.5, mask_structure: "2:4", ignore: [lm_head]}
EOF
cat > "$recipes/wanda24.yaml" <<'EOF'
WandaPruningModifier: {sparsity: 0.5, mask_structure: "2:4", ignore: [lm_head]}
EOF

base=$(ppl "$model" "$evaltext" | cut -d' ' -f1)
wbase=""
if [ "${WIKITEXT:-0}" = 1 ]; then wbase=$(ppl "$model" "$shared/data/wikitext2-test.txt" | cut -d' ' -f1); fi
echo "  bf16: $base" >&2

run "W4A16 RTN" W4A16 rtn
run "W4A16 GPTQ (actorder static)" W4A16 gptq
run "W4A16 GPTQ (actorder none)" W4A16 "$recipes/gptq_none.yaml"
run "W4A16 GPTQ (actorder group)" W4A16 "$recipes/gptq_group.yaml"
run "W4A16 RTN (imatrix_mse)" W4A16 "$recipes/rtn_imatrix.yaml"
run "W4A16 GPTQ (imatrix_mse)" W4A16 "$recipes/gptq_imatrix.yaml"
run "W4A16 AWQ" W4A16 awq
run "W4A16_ASYM RTN" W4A16_ASYM rtn
run "W4A16_ASYM GPTQ" W4A16_ASYM gptq
run "W4A16_ASYM AWQ" W4A16_ASYM awq
run "W8A8 RTN" W8A8 rtn
run "W8A8 SmoothQuant+GPTQ" W8A8 smoothquant+gptq
run "FP8 static RTN" FP8 rtn
run "FP8 static GPTQ" FP8 gptq
run "NVFP4 RTN" NVFP4 rtn
run "NVFP4 GPTQ" NVFP4 gptq
run "2:4 SparseGPT" none "$recipes/sparsegpt24.yaml"
run "2:4 Wanda" none "$recipes/wanda24.yaml"

python3 - "$results" "$base" "$wbase" "$out/accuracy.json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = float(sys.argv[2]); wbase = float(sys.argv[3]) if sys.argv[3] else None
json.dump({"bf16": base, "bf16_wikitext2": wbase, "rows": rows}, open(sys.argv[4], "w"), indent=1)
wt = wbase is not None
print("| method | eval.txt ppl | vs bf16 | weights only |" + (" wikitext2 ppl |" if wt else "") + " compress s |")
print("|---|---|---|---|" + ("---|" if wt else "") + "---|")
print(f"| bf16 | {base:.3f} | — | — |" + (f" {wbase:.3f} |" if wt else "") + " — |")
for r in rows:
    d = 100 * (r["ppl_eval"] / base - 1)
    wo = r["ppl_eval_weights_only"]
    wo_s = "—" if wo == r["ppl_eval"] else f"{wo:.3f} ({100 * (wo / base - 1):+.2f}%)"
    line = f"| {r['label']} | {r['ppl_eval']:.3f} | {d:+.2f}% | {wo_s} |"
    if wt: line += f" {r['ppl_wikitext2']:.3f} |"
    line += f" {r['seconds']:.1f} |"
    print(line)
EOF
