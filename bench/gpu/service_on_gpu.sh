#!/usr/bin/env bash
# The service on the GPU machine: `llmc serve` with one CUDA worker runs a calibrated GPTQ job on the fixture
# (submitted and watched through the CLI, as a pipeline would), and the result is checked.
#
#   bench/gpu/service_on_gpu.sh BIN_DIR SHARED_DIR OUT_DIR
set -euo pipefail
bin="$1"; shared="$2"; out="$3"
work=$(mktemp -d)
cd "$work"
"$bin/llmc" serve --data-dir "$work/data" --port 0 --http-port 0 --workers 1 --device "${DEVICE:-cuda}" \
  --allowed-input-root "$shared" > "$out/serve.log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/data/admin.token" ] && grep -q "coordinator on" "$out/serve.log" && break; sleep 0.2; done
addr=$(grep -o 'coordinator on 127.0.0.1:[0-9]*' "$out/serve.log" | head -1 | cut -d' ' -f3)
export LLMC_TOKEN=$(cat "$work/data/admin.token") LLMC_SERVER="$addr"
"$bin/llmc" submit "$shared/models/llmc-fixture-llama" "$work/out-gptq" --scheme W4A16 --algorithm gptq \
  --dataset "$shared/data/calibration.txt" --num-samples "${SAMPLES:-128}" --seq-len 512 --json > "$out/submit.json"
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$out/submit.json")
"$bin/llmc" watch "$id" --no-progress > "$out/watch.log" 2>&1 || true
"$bin/llmc" get "$id" --json > "$out/job.json"
"$bin/llmc" eval "$work/out-gptq" --text "$shared/data/eval.txt" --max-windows 100 --device "${DEVICE:-cuda}" --json > "$out/eval.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
job = json.load(open(f"{out}/job.json"))
ev = json.load(open(f"{out}/eval.json"))
summary = json.loads(job.get("summaryJson") or job.get("summary_json") or "{}")
print(json.dumps({"state": job.get("state"), "workers": job.get("workerIds") or job.get("worker_ids"),
                  "device": summary.get("solve", {}).get("device"), "device_name": summary.get("solve", {}).get("device_name"),
                  "compress_seconds": summary.get("seconds"), "ppl_eval_100": ev.get("perplexity")}, indent=1))
PY
