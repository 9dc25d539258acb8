#!/usr/bin/env bash
# Distributed calibration on the GPUs of one host (one process per GPU, NCCL, NCCL_NVLS_ENABLE=0):
#   1. agreement: the fixture's GPTQ W4A16, SmoothQuant+GPTQ W8A8 and NVFP4 GPTQ jobs on each GPU count, 2 GPUs
#      twice (byte-identical), every output evaluated on the GPU (100 windows of eval.txt), codes compared with
#      the 1-GPU output;
#   2. speed-up: GPTQ W4A16 on a Llama-3-8B-shaped model (random bf16 weights, the fixture's tokenizer), SAMPLES x
#      SEQ_LEN tokens, end to end on each GPU count, with the per-block split (calibrate / solve / propagate /
#      communicate), NCCL's share and the bytes and bandwidth of rank 0's collectives, against an all-reduce
#      measured on the same machine (llmc-bench-allreduce).
#
#   bench/gpu/multi_gpu.sh BIN_DIR SHARED_DIR OUT_DIR        (GPUS="1 2 4" SAMPLES=512 SEQ_LEN=2048 SKIP_8B=1)
#
# BIN_DIR holds llmc, llmc-make-model and llmc-bench-allreduce. Prints markdown tables; raw reports stay in OUT_DIR.
set -euo pipefail
bin="$1"; shared="$2"; out="$3"
gpus="${GPUS:-1 2 4}"
export NCCL_NVLS_ENABLE=0
mkdir -p "$out"
model="$shared/models/llmc-fixture-llama"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
echo
echo "## Agreement (fixture, 128 x 512 calibration)"
echo "| job | GPUs | seconds | ppl (100 windows) | identical codes vs 1 GPU | repeat identical |"
echo "|---|---|---|---|---|---|"
for job in "gptq_w4a16:--scheme W4A16 --algorithm gptq" "sq_gptq_w8a8:--scheme W8A8 --algorithm smoothquant+gptq" \
           "nvfp4_gptq:--scheme NVFP4 --algorithm gptq"; do
  name=${job%%:*}; args=${job#*:}
  for n in $gpus; do
    runs="a"; [ "$n" = 2 ] && runs="a b"
    for r in $runs; do
      dir="$out/$name-$n$r"
      t0=$(date +%s.%N)
      # shellcheck disable=SC2086
      "$bin/llmc" compress "$model" "$dir" $args --dataset "$shared/data/calibration.txt" --num-samples 128 \
        --seq-len 512 --device cuda --ranks "$n" --overwrite --no-progress --json > "$dir.json"
      t1=$(date +%s.%N)
      echo "$t0 $t1" > "$dir.time"
    done
    ppl=$("$bin/llmc" eval "$out/$name-${n}a" --text "$shared/data/eval.txt" --max-windows 100 --device cuda --json |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
    python3 - "$out" "$name" "$n" "$ppl" <<'PY'
import json, struct, sys
out, name, n, ppl = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def load(d):
    b = open(f"{d}/model.safetensors", "rb").read(); k = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + k]); base = 8 + k
    return {t: (v["dtype"], b[base + v["data_offsets"][0]:base + v["data_offsets"][1]]) for t, v in h.items() if t != "__metadata__"}
def same_codes(a, c):
    s = t = 0
    for name_, (dt, x) in a.items():
        if not name_.startswith("model.layers."): continue
        y = c[name_][1]
        if name_.endswith("weight_packed"):
            for i in range(len(x)):
                s += ((x[i] & 15) == (y[i] & 15)) + ((x[i] >> 4) == (y[i] >> 4)); t += 2
        elif dt in ("I8", "F8_E4M3", "U8") and name_.endswith(".weight"):
            s += sum(1 for i in range(len(x)) if x[i] == y[i]); t += len(x)
    return s / t if t else float("nan")
t0, t1 = map(float, open(f"{out}/{name}-{n}a.time").read().split())
one = load(f"{out}/{name}-1a") if n != 1 else None
same = "—" if one is None else f"{100 * same_codes(one, load(f'{out}/{name}-{n}a')):.1f}%"
rep = "—"
if n == 2:
    rep = "yes" if open(f"{out}/{name}-2a/model.safetensors", "rb").read() == open(f"{out}/{name}-2b/model.safetensors", "rb").read() else "NO"
print(f"| {name} | {n} | {t1 - t0:.1f} | {ppl:.4f} | {same} | {rep} |")
PY
  done
done
[ -n "${SKIP_8B:-}" ] && exit 0

echo
echo "## All-reduce on this machine (fp32, 256 MiB, NCCL)"
for n in $gpus; do
  [ "$n" -gt 1 ] && "$bin/llmc-bench-allreduce" --gpus "$n" --mib 256 --iters 20
done

echo
echo "## Speed-up: GPTQ W4A16, Llama-3-8B shape, ${SAMPLES:-512} x ${SEQ_LEN:-2048}"
work="${WORK:-/tmp/multi-gpu}"
mkdir -p "$work"
m8="$work/llama8b"
if [ ! -f "$m8/config.json" ]; then
  "$bin/llmc-make-model" "$m8" --shape 8b > /dev/null
  cp "$model/tokenizer.json" "$model/tokenizer_config.json" "$m8/"
fi
cat "$shared/data/calibration.txt" "$shared/data/eval.txt" "$shared/data/wikitext2-test.txt" > "$work/calib.txt" 2>/dev/null ||
  cat "$shared/data/calibration.txt" "$shared/data/eval.txt" > "$work/calib.txt"
echo "| GPUs | end to end s | block s | calibrate | solve | propagate | communicate | NCCL share | rank 0 bytes | rank 0 GB/s | speed-up |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for n in $gpus; do
  comm=""; [ "$n" = 1 ] && comm="--comm nccl"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$bin/llmc" compress "$m8" "$work/out$n" --scheme W4A16 --algorithm gptq --dataset "$work/calib.txt" \
    --num-samples "${SAMPLES:-512}" --seq-len "${SEQ_LEN:-2048}" --device cuda --ranks "$n" $comm --overwrite \
    --no-progress --json > "$out/speed$n.json"
  t1=$(date +%s.%N)
  python3 - "$out" "$n" "$t0" "$t1" <<'PY'
import json, sys
out, n, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = json.load(open(f"{out}/speed{n}.json"))["solve"]
blocks = s["blocks"]
mean = lambda k: sum(b.get(k, 0.0) for b in blocks) / len(blocks)
block = sum(mean(k) for k in ("load_s", "calibrate_s", "solve_s", "propagate_s"))
c = s["communication"]
wall = t1 - t0
open(f"{out}/speed{n}.wall", "w").write(str(wall))
base = float(open(f"{out}/speed1.wall").read()) if n != 1 else wall
gbps = c["bytes"] / c["seconds"] / 1e9 if c["seconds"] > 0 else 0
print(f"| {n} | {wall:.1f} | {block:.2f} | {mean('calibrate_s'):.2f} | {mean('solve_s'):.2f} | {mean('propagate_s'):.2f} | "
      f"{mean('communicate_s'):.2f} | {100 * mean('communicate_s') / block:.1f}% | {c['bytes'] / 1e9:.2f} GB | {gbps:.1f} | {base / wall:.2f}x |")
PY
done
