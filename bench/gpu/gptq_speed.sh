#!/usr/bin/env bash
# GPTQ W4A16 speed on a Llama-3-8B-shaped model (random bf16 weights) on the GPU: end-to-end time, peak GPU
# memory (nvidia-smi, sampled every 0.5 s) and peak host memory (the report's peak RSS).
#
#   bench/gpu/gptq_speed.sh LLMC_BIN MAKE_MODEL_BIN SHARED_DIR OUT_DIR [SAMPLES] [SEQ_LEN] [LAYERS]
#
# The model gets the fixture's tokenizer (its ids are valid in the 8B vocabulary); calibration text is the
# fixture's calibration + eval + wikitext2 files concatenated (about 1.5M tokens: enough for 512 x 2048).
# CALIB_ACTIVATIONS=fp32|bf16|host passes --calib-activations (where the activations stay between blocks);
# EXTRA adds llmc compress flags (e.g. EXTRA="--precision bf16"). SPDLOG_LEVEL=debug puts each GPU GPTQ solve's
# phases (ms) into OUT_DIR/llmc_gptq.log (the phases synchronize the stream: a profile, not a timing run).
# MODEL_ARGS overrides the 8B shape's sizes (llmc-make-model flags), e.g. the Llama-3-70B shape:
#   MODEL_ARGS="--hidden 8192 --intermediate 28672 --heads 64 --kv-heads 8" bench/gpu/gptq_speed.sh ... 512 2048 4
set -euo pipefail
llmc="$1"; make_model="$2"; shared="$3"; out="$4"; samples="${5:-512}"; seq="${6:-2048}"; layers="${7:-}"
work="${WORK:-/tmp/gptq-speed}"
mkdir -p "$work" "$out"
model="$work/llama8b${layers:+-$layers}$(echo "${MODEL_ARGS:-}" | tr -d ' -')"
if [ ! -f "$model/config.json" ]; then
  # shellcheck disable=SC2086
  "$make_model" "$model" --shape 8b ${layers:+--layers "$layers"} ${MODEL_ARGS:-} > /dev/null
  cp "$shared/models/llmc-fixture-llama/tokenizer.json" "$shared/models/llmc-fixture-llama/tokenizer_config.json" "$model/"
fi
cat "$shared/data/calibration.txt" "$shared/data/eval.txt" "$shared/data/wikitext2-test.txt" > "$work/calib.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader,nounits -lms 500 > "$out/smi.csv" &
smi=$!
t0=$(date +%s.%N)
LLMC_VERBOSE=1 "$llmc" compress "$model" "$work/out" --scheme W4A16 --algorithm gptq --dataset "$work/calib.txt" \
  --num-samples "$samples" --seq-len "$seq" --device cuda ${CALIB_ACTIVATIONS:+--calib-activations "$CALIB_ACTIVATIONS"} ${EXTRA:-} \
  --overwrite --json > "$out/llmc_gptq.json" 2> "$out/llmc_gptq.log"
t1=$(date +%s.%N)
kill $smi
python3 - "$out" "$t0" "$t1" <<'PY'
import json, sys
out, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
r = json.load(open(f"{out}/llmc_gptq.json"))
rows = [l.strip().split(", ") for l in open(f"{out}/smi.csv") if l.strip()]
peak = max(int(x[1]) for x in rows) if rows else 0
s = r["solve"]
print(json.dumps({"card": rows[0][0] if rows else "?", "wall_seconds": t1 - t0, "llmc_seconds": r["seconds"],
                  "peak_gpu_mib_nvidia_smi": peak, "peak_device_used_bytes": s.get("peak_device_used_bytes"),
                  "peak_host_rss_bytes": r["peak_rss_bytes"], "samples": s["calibration"]["samples"],
                  "tokens": s["calibration"]["tokens"], "blocks": len(s["blocks"]), "setup": s.get("setup"),
                  "block_seconds_mean": {k: sum(b.get(k, 0) for b in s["blocks"]) / len(s["blocks"])
                                         for k in ("load_s", "calibrate_s", "solve_s", "propagate_s", "finish_s", "commit_s", "commit_wait_s")}}, indent=1))
PY
