#!/usr/bin/env bash
# A gang job that loses a rank, through `llmc serve` (one worker per GPU): for each GPU count, the same job runs
# once uninterrupted and once with rank 1's worker killed (kill -9) after two durable blocks. Checks that no rank
# hangs (every run bounded), that the killed run goes RETRYING and succeeds with a second attempt, and that its
# output equals the uninterrupted run's byte for byte.
#
#   bench/gpu/multi_gpu_fault.sh BIN_DIR SHARED_DIR OUT_DIR      (GPUS="2 4" DEVICE=cuda LAYERS=8 SAMPLES=128 SEQ_LEN=2048)
#
# DEVICE=cpu runs the same on CPU workers (Gloo) with the fixture model, for a dry run without GPUs.
set -euo pipefail
bin="$(cd "$1" && pwd)"; shared="$(cd "$2" && pwd)"; out="$3"
device="${DEVICE:-cuda}"
export NCCL_NVLS_ENABLE=0
mkdir -p "$out"; out="$(cd "$out" && pwd)"
work="${WORK:-/tmp/multi-gpu-fault}"
mkdir -p "$work"
if [ "$device" = cuda ]; then
  model="$work/llama8b-${LAYERS:-8}"
  if [ ! -f "$model/config.json" ]; then
    "$bin/llmc-make-model" "$model" --shape 8b --layers "${LAYERS:-8}" > /dev/null
    cp "$shared/models/llmc-fixture-llama/tokenizer.json" "$shared/models/llmc-fixture-llama/tokenizer_config.json" "$model/"
  fi
  samples="${SAMPLES:-128}"; seq="${SEQ_LEN:-2048}"
else
  model="$shared/models/llmc-fixture-llama"; samples="${SAMPLES:-64}"; seq="${SEQ_LEN:-512}"
fi
cat "$shared/data/calibration.txt" "$shared/data/eval.txt" > "$work/calib.txt"

state() {  # JOB -> STATE ATTEMPTS BLOCKS_DONE
  "$bin/llmc" get "$1" --json | python3 -c 'import json,sys; j=json.load(sys.stdin); p=j.get("progress",{}); print(j.get("state"), j.get("attempts",0), p.get("blocksDone", p.get("blocks_done",0)))'
}
echo "| GPUs | run | seconds | state | attempts | output equal to the uninterrupted run |"
echo "|---|---|---|---|---|---|"
for n in ${GPUS:-2 4}; do
  data="$work/serve$n"; rm -rf "$data"; mkdir -p "$data"
  (cd "$work" && exec "$bin/llmc" serve --data-dir "$data" --port 0 --http-port 0 --workers "$n" --device "$device" \
     --allowed-root "$work" --allowed-input-root "$shared" > "$out/serve$n.log" 2>&1) &
  serve=$!
  for _ in $(seq 300); do [ -f "$data/serve.ready" ] && break; sleep 0.1; done
  read -r grpc http < "$data/serve.ready"
  export LLMC_SERVER="127.0.0.1:$grpc" LLMC_TOKEN="$(cat "$data/admin.token")"
  sleep 2  # the workers register
  for run in plain killed; do
    dst="$work/out$n-$run"; rm -rf "$dst"
    job=$("$bin/llmc" submit "$model" "$dst" --scheme W4A16 --algorithm gptq --dataset "$work/calib.txt" \
          --num-samples "$samples" --seq-len "$seq" --gpus "$n" --json |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    t0=$(date +%s.%N); killed=""
    for _ in $(seq 3000); do
      read -r st att blocks < <(state "$job")
      if [ "$run" = killed ] && [ -z "$killed" ] && [ "$st" = RUNNING ] && [ "${blocks:-0}" -ge 2 ]; then
        w=$(curl -s -H "Authorization: Bearer $LLMC_TOKEN" "http://127.0.0.1:$http/api/v1/workers" |
            python3 -c 'import json,sys
for w in json.load(sys.stdin).get("workers", []):
    if w.get("rank") == 1 and w.get("state") == "BUSY": print(w["id"])')
        pid=$(pgrep -f -- "--worker-id $w( |\$)" | head -1 || true)
        [ -n "$pid" ] && kill -9 "$pid" && killed="$w"
      fi
      case "$st" in SUCCEEDED|FAILED|CANCELLED) break;; esac
      sleep 0.2
    done
    t1=$(date +%s.%N)
    same="—"
    if [ "$run" = killed ]; then
      same=yes
      for f in "$work/out$n-plain"/*.safetensors; do cmp -s "$f" "$dst/$(basename "$f")" || same=NO; done
    fi
    printf '| %s | %s | %.1f | %s | %s | %s |\n' "$n" "$run${killed:+ (rank 1 = $killed killed)}" \
      "$(python3 -c "print($t1-$t0)")" "$st" "$att" "$same"
  done
  kill "$serve"; wait "$serve" 2>/dev/null || true
done
