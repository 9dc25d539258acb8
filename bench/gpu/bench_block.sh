#!/bin/bash
# bench_block.sh [BENCH_BINARY] [-- extra args for both]: one Llama-3-8B-shaped decoder block, llmc's CUDA block
# runner (llmc-bench-block) against PyTorch/transformers (bench/gpu/block_bench.py) on the same GPU, same batch and
# sequence length, and the ratio llmc tokens/s / PyTorch tokens/s for fp32 (llmc fp32 vs torch fp32, TF32 off on
# both) and bf16 (llmc bf16 GEMMs and bf16 flash attention with fp32 norms and activations between them vs torch
# bf16 throughout). llmc's tf32 mode is printed too (no PyTorch counterpart is run). Needs python3 with torch and
# transformers, and a CUDA device.
#   BENCH_BINARY defaults to build/bin/llmc-bench-block (or .devbundle*/bin/llmc-bench-block when present).
#   BATCH (default 4) and SEQ_LEN (default 2048) set the shape; ITERS (default 10) the timed runs. PROFILE=1 adds
#   llmc's time per stage of the block (llmc-bench-block --profile: CUDA events between stages, separate runs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
  for c in build/bin/llmc-bench-block build-cuda/bin/llmc-bench-block .devbundle*/bin/llmc-bench-block; do
    [ -x "$c" ] && bin=$c && break
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "bench_block.sh: llmc-bench-block not found; pass its path" >&2; exit 1; }
batch=${BATCH:-4} seq=${SEQ_LEN:-2048} iters=${ITERS:-10}
llmc_json=$("$bin" --batch "$batch" --seq-len "$seq" --iters "$iters" --precision fp32,tf32,bf16 --json \
  ${PROFILE:+--profile})
torch_json=$(python3 "$here/block_bench.py" --batch "$batch" --seq-len "$seq" --iters "$iters" --dtypes fp32,bf16 --json)
echo "$llmc_json"
echo "$torch_json"
python3 - "$llmc_json" "$torch_json" <<'PY'
import json, sys
l, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
lt = {r["precision"]: r for r in l["results"]}
tt = {r["dtype"]: r for r in t["results"]}
print(f"\nLlama-3-8B block, {l['batch']} x {l['seq_len']} tokens, {l['device']}; torch {t['torch']}, "
      f"transformers {t['transformers']}")
print(f"{'mode':28s} {'llmc tok/s':>12s} {'torch tok/s':>12s} {'llmc/torch':>11s}")
for name, lk, tk in (("fp32 (TF32 off)", "fp32", "fp32"), ("llmc tf32 vs torch fp32", "tf32", "fp32"),
                     ("bf16 GEMMs vs torch bf16", "bf16", "bf16")):
    if lk in lt and tk in tt:
        a, b = lt[lk]["tokens_per_second"], tt[tk]["tokens_per_second"]
        print(f"{name:28s} {a:12.0f} {b:12.0f} {a / b:11.3f}")
for r in l["results"]:
    if r.get("stages_ms"):
        total = sum(s["ms"] for s in r["stages_ms"])
        print(f"\nllmc {r['precision']} per stage (mean of {l['iters']} runs, {total:.1f} ms in all):")
        for s in r["stages_ms"]:
            print(f"  {s['stage']:24s} {s['ms']:9.2f} ms {100 * s['ms'] / total:5.1f}%")
PY
