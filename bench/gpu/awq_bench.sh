#!/usr/bin/env bash
# AWQ with `llmc compress --device cuda` (the grid search's losses on the GPU): the fixture with W4A16 and
# W4A16_ASYM (128 x 512 calibration tokens, the accuracy table's setting, then perplexity on the first 100
# windows of eval.txt, evaluated on the GPU), and a Llama-3-8B-shaped model of random bf16 weights cut to LAYERS
# layers (time only: random weights have no meaningful perplexity). Per run it prints the wall seconds, the
# pipeline's seconds, the summed per-block AWQ seconds (`awq_s` of the report), how many mappings searched on the
# device, and the perplexity; the raw reports stay in OUT_DIR.
#
#   bench/gpu/awq_bench.sh LLMC_BIN MAKE_MODEL_BIN SHARED_DIR OUT_DIR [LAYERS=4] [SAMPLES_8B=128] [SEQ_8B=512]
#   DEVICE=cpu bench/gpu/awq_bench.sh ...   # the same runs on the host, for the reference numbers
set -euo pipefail
llmc="$1"; make_model="$2"; shared="$3"; out="$4"; layers="${5:-4}"; samples8b="${6:-128}"; seq8b="${7:-512}"
device="${DEVICE:-cuda}"
work="${WORK:-/tmp/awq-bench}"
mkdir -p "$work" "$out"
fixture="$shared/models/llmc-fixture-llama"

summary() {  # summary LABEL REPORT_JSON T0 T1 PPL
  python3 - "$@" <<'PY'
import json, sys
label, rep, t0, t1, ppl = sys.argv[1:]
r = json.load(open(rep))
blocks = r["solve"]["blocks"]
maps = [m for b in blocks for m in b.get("awq", [])]
print(json.dumps({"run": label, "device": r["solve"].get("device"), "card": r["solve"].get("device_name"),
                  "wall_seconds": round(float(t1) - float(t0), 2), "llmc_seconds": r.get("seconds"),
                  "awq_seconds": round(sum(b.get("awq_s", 0) for b in blocks), 2),
                  "mappings": len(maps), "mappings_on_device": sum(1 for m in maps if m.get("on_device")),
                  "perplexity_eval_100": float(ppl) if ppl else None}))
PY
}

for scheme in W4A16 W4A16_ASYM; do
  dir="$out/fixture_$scheme"
  t0=$(date +%s.%N)
  "$llmc" compress "$fixture" "$dir" --scheme "$scheme" --algorithm awq --dataset "$shared/data/calibration.txt" \
    --num-samples 128 --seq-len 512 --seed 42 --device "$device" --overwrite --json > "$dir.json" 2> "$dir.log"
  t1=$(date +%s.%N)
  ppl=$("$llmc" eval "$dir" --text "$shared/data/eval.txt" --max-windows 100 --device "$device" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
  summary "fixture AWQ $scheme" "$dir.json" "$t0" "$t1" "$ppl" | tee -a "$out/awq_bench.jsonl"
done

model="$work/llama8b-$layers"
if [ ! -f "$model/config.json" ]; then
  "$make_model" "$model" --shape 8b --layers "$layers" > /dev/null
  cp "$fixture/tokenizer.json" "$fixture/tokenizer_config.json" "$model/"
fi
cat "$shared/data/calibration.txt" "$shared/data/eval.txt" "$shared/data/wikitext2-test.txt" > "$work/calib.txt"
for scheme in W4A16 W4A16_ASYM; do
  dir="$work/out_8b_$scheme"
  t0=$(date +%s.%N)
  "$llmc" compress "$model" "$dir" --scheme "$scheme" --algorithm awq --dataset "$work/calib.txt" \
    --num-samples "$samples8b" --seq-len "$seq8b" --device "$device" --overwrite --json > "$out/8b_$scheme.json" \
    2> "$out/8b_$scheme.log"
  t1=$(date +%s.%N)
  summary "8B shape, $layers layers, AWQ $scheme, $samples8b x $seq8b" "$out/8b_$scheme.json" "$t0" "$t1" "" |
    tee -a "$out/awq_bench.jsonl"
done
