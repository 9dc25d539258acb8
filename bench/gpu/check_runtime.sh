#!/usr/bin/env bash
# Runtime checks on the GPU machine (which has Python with tokenizers/transformers but no compiler):
#   1. llmc tokenize vs Hugging Face tokenizers on whole files and unicode strings (ids must be equal);
#   2. llmc eval perplexity of the fixture vs the fixture report (HF bf16), and of compressed checkpoints.
# usage: bench/gpu/check_runtime.sh BIN_DIR FIXTURE_DIR DATA_DIR OUT_DIR
set -uo pipefail
BIN=$1; FIX=$2; DATA=$3; OUT=$4
mkdir -p "$OUT"
here=$(dirname "$0")
echo "== tokenizer parity"
for f in "$DATA"/*.txt; do
  name=$(basename "$f")
  python3 "$here/tokenizer_reference.py" "$FIX" --file "$f" --no-special > "$OUT/ref_$name.json" || { echo "reference failed for $name"; continue; }
  "$BIN/llmc" tokenize "$FIX" --file "$f" --json --no-special > "$OUT/llmc_$name.json"
  python3 - "$OUT/ref_$name.json" "$OUT/llmc_$name.json" "$name" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))["results"][0]["ids"]
ours = json.load(open(sys.argv[2]))["ids"]
first = next((i for i, (a, b) in enumerate(zip(ref, ours)) if a != b), None)
same = ref == ours
print(f"{sys.argv[3]}: hf {len(ref)} ids, llmc {len(ours)} ids, equal={same}" + ("" if same else f", first difference at {first if first is not None else min(len(ref), len(ours))}"))
PY
done
echo "== perplexity (200 windows of 512, as fixture_report.json)"
for f in eval.txt wikitext2-test.txt; do
  "$BIN/llmc" eval "$FIX" --text "$DATA/$f" --json > "$OUT/eval_bf16_$f.json" && python3 -c "
import json; r=json.load(open('$OUT/eval_bf16_$f.json')); ref=json.load(open('$FIX/fixture_report.json'))['ppl_bf16']['$f']
print('$f', 'llmc', round(r['perplexity'],4), 'hf', round(ref,4), 'diff %.3f%%' % (100*(r['perplexity']/ref-1)), 'tokens/s', round(r.get('tokens_per_second',0)))"
done
echo "== compressed checkpoints on eval.txt (100 windows)"
"$BIN/llmc" eval "$FIX" --text "$DATA/eval.txt" --max-windows 100 --json > "$OUT/eval100_bf16.json"
python3 -c "import json; print('bf16', round(json.load(open('$OUT/eval100_bf16.json'))['perplexity'],4))"
for s in W4A16 W4A16_ASYM W8A16 W8A8 FP8_DYNAMIC FP8_BLOCK NVFP4A16 MXFP4A16; do
  "$BIN/llmc" compress "$FIX" "/tmp/ck_$s" --scheme $s --overwrite --json > /dev/null &&
  "$BIN/llmc" eval "/tmp/ck_$s" --text "$DATA/eval.txt" --max-windows 100 --json > "$OUT/eval100_$s.json" &&
  python3 -c "import json; print('$s', round(json.load(open('$OUT/eval100_$s.json'))['perplexity'],4))"
done
