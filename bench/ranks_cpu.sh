#!/usr/bin/env bash
# The CPU path of distributed calibration: one GPTQ W4A16 job on a synthetic Llama-shaped model (4 blocks of
# hidden 1024, MLP 2816, GQA 16/4; the fixture's tokenizer), its calibration shared by 1, 2 and 4 ranks over Gloo
# on this machine (`llmc compress --ranks N`). Prints, per rank count, the job's time, the mean time per block and
# its split (calibrate / solve / propagate / communicate, rank 0), the communication share of rank 0's block time
# and the bytes it moved, and the speed-up against 1 rank measured in the same run. The ranks share this machine's
# cores (each gets cores / N threads), so little speed-up is expected on a small machine: the number that matters
# here is the communication share.
#
#   bench/ranks_cpu.sh [BUILD_DIR] [OUT_DIR]      (SAMPLES=32 SEQ_LEN=256 RANKS="1 2 4" override)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
out="${2:-$(mktemp -d)}"
shared="${LLMC_SHARED_DIR:-$here/../shared}"
fixture="$shared/models/llmc-fixture-llama"
calib="$shared/data/calibration.txt"
[ -d "$fixture" ] || { echo "ranks_cpu.sh: needs $fixture (its tokenizer) and $calib" >&2; exit 2; }
mkdir -p "$out"
model="$out/model"
rm -rf "$model"
"$build/bin/llmc-make-model" "$model" --shape tiny --layers 4 --hidden 1024 --intermediate 2816 --heads 16 \
  --kv-heads 4 --vocab 8192 --seed 7
cp "$fixture/tokenizer.json" "$fixture/tokenizer_config.json" "$model/"
echo "# llmc compress --ranks N, GPTQ W4A16, ${SAMPLES:-32} x ${SEQ_LEN:-256} tokens, $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p'))"
echo "# commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F)"
for n in ${RANKS:-1 2 4}; do
  "$build/bin/llmc" compress "$model" "$out/out$n" --scheme W4A16 --algorithm gptq --dataset "$calib" \
    --num-samples "${SAMPLES:-32}" --seq-len "${SEQ_LEN:-256}" --ranks "$n" --overwrite --no-progress --json \
    > "$out/summary$n.json"
done
python3 - "$out" ${RANKS:-1 2 4} <<'PY'
import json, sys
out, ranks = sys.argv[1], [int(x) for x in sys.argv[2:]]
print("| ranks | job s | block s | calibrate | solve | propagate | communicate | comm share | comm bytes (rank 0) | speed-up |")
print("|---|---|---|---|---|---|---|---|---|---|")
base = None
for n in ranks:
    r = json.load(open(f"{out}/out{n}/compression_report.json"))
    s = r["solve"]
    blocks = [b for b in s["blocks"] if not b.get("resumed")]
    mean = lambda k: sum(b.get(k, 0.0) for b in blocks) / len(blocks)
    block = sum(b.get(k, 0.0) for b in blocks for k in ("load_s", "calibrate_s", "solve_s", "propagate_s")) / len(blocks)
    comm = mean("communicate_s")
    job = r["seconds"]
    base = base or job
    print(f"| {n} | {job:.2f} | {block:.2f} | {mean('calibrate_s'):.2f} | {mean('solve_s'):.2f} | "
          f"{mean('propagate_s'):.2f} | {comm:.2f} | {100 * comm / block:.1f}% | {s['communication']['bytes'] / 1e6:.1f} MB | "
          f"{base / job:.2f}x |")
PY
