#!/usr/bin/env bash
# Every tiny family checkpoint (engine/model/testdata/tiny-*) compressed by `llmc compress` with FP8_DYNAMIC and with
# W4A16 in groups of 16 (the tiny models are 64 wide: group 128 does not divide them; a model with an in_features
# that 16 does not divide gets groups of 8, and the line says so), each output loaded by transformers and
# compressed-tensors through ctcheck (`ctcheck.py load --ckpt OUT --orig tiny-X`, ../shared/tools/ctcheck/README.md).
# Runs on the GPU machine, from the project root:
#
#   bench/gpu/family_ctcheck.sh LLMC CTCHECK_PY OUT_DIR [TEXT]
#
#   LLMC        the llmc binary (e.g. build/bin/llmc)
#   CTCHECK_PY  ctcheck.py, copied into a git-ignored folder of the project (e.g. .ctcheck/ctcheck.py)
#   OUT_DIR     where the compressed checkpoints, logs and ctcheck's reports go
#   TEXT        optional text for ctcheck's perplexities (the tiny models carry no tokenizer: ctcheck then maps
#               bytes onto the vocabulary, see its README)
#
# Prints one line per family and scheme (ok / FAIL and where), and a summary; a failure does not stop the others.
# Exit status: 0 when every compression and load passed, 1 otherwise. MoE presets leave the routers unquantized by
# themselves; the W4A16 recipe ignores them explicitly (llmc refuses a quantized router). Llama 4's fused experts
# are split into per-expert Linears (data-free); GPT-OSS's are refused by design (vLLM reads them fused,
# docs/formats.md): that refusal is printed as "refused" and not counted as a failure.
set -u
if [ $# -lt 3 ]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
llmc="$1"; ctcheck="$2"; out="$3"; text="${4:-}"
mkdir -p "$out" || exit 2
[ -x "$llmc" ] || { echo "$llmc: not an executable llmc" >&2; exit 2; }
[ -f "$ctcheck" ] || { echo "$ctcheck: no ctcheck.py there (copy ../shared/tools/ctcheck into the project)" >&2; exit 2; }
text_args=()
[ -n "$text" ] && text_args=(--text "$text")

# The largest of 16 and 8 that divides every 2-D Linear weight's in_features of MODEL (safetensors headers only).
group_for() {
  python3 - "$1" <<'PY'
import json, struct, sys, glob
ins = set()
for f in glob.glob(sys.argv[1] + "/*.safetensors"):
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    for k, v in header.items():
        if k != "__metadata__" and len(v["shape"]) == 2 and k.endswith(".weight") and "embed" not in k:
            ins.add(v["shape"][1])
print(next((g for g in (16, 8) if all(i % g == 0 for i in ins)), 1))
PY
}

w4_recipe() {  # GROUP
  cat <<Y
QuantizationModifier:
  ignore: [lm_head, 're:.*mlp\\.gate\$', 're:.*block_sparse_moe\\.gate\$', 're:.*shared_expert_gate\$', 're:.*mlp\\.router\$', 're:.*feed_forward\\.router\$']
  config_groups:
    group_0:
      targets: [Linear]
      weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: $1}
Y
}

passed=0; failed=0; refused=0; failures=()
report() {  # FAMILY SCHEME STATUS DETAIL
  printf '%-22s %-13s %-7s %s\n' "$1" "$2" "$3" "$4"
  case "$3" in
    ok) passed=$((passed + 1)) ;;
    refused) refused=$((refused + 1)) ;;
    *) failed=$((failed + 1)); failures+=("$1 $2") ;;
  esac
}

printf '%-22s %-13s %-7s %s\n' family scheme ok detail
for model in engine/model/testdata/tiny-*; do
  [ -f "$model/config.json" ] || continue
  family=$(basename "$model")
  group=$(group_for "$model")
  for scheme in FP8_DYNAMIC W4A16_G16; do
    label="$scheme"
    [ "$scheme" = W4A16_G16 ] && [ "$group" != 16 ] && label="W4A16_G$group"
    dest="$out/$family-$label"
    log="$dest.log"
    if [ "$scheme" = FP8_DYNAMIC ]; then
      "$llmc" compress "$model" "$dest" --scheme FP8_DYNAMIC --overwrite --json > "$dest.compress.json" 2> "$log"
    else
      w4_recipe "$group" > "$dest.recipe.yaml"
      "$llmc" compress "$model" "$dest" --recipe "$dest.recipe.yaml" --overwrite --json > "$dest.compress.json" 2> "$log"
    fi
    rc=$?
    if [ $rc -ne 0 ]; then
      last=$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-200)
      if grep -q "GptOss" "$model/config.json" && grep -q "fused 3-D expert weights" "$log"; then
        report "$family" "$label" refused "as designed: $last"
      else
        report "$family" "$label" FAIL "compress (exit $rc): $last"
      fi
      continue
    fi
    python3 "$ctcheck" load --ckpt "$dest" --orig "$model" "${text_args[@]}" --json-out "$dest.load.json" \
      > "$dest.load.log" 2>&1
    rc=$?
    summary=$(grep -v '^\s*$' "$dest.load.log" | tail -n 1 | cut -c1-300)
    if [ $rc -eq 0 ]; then
      report "$family" "$label" ok "$summary"
    else
      report "$family" "$label" FAIL "load (exit $rc): $summary"
    fi
  done
done
echo
echo "summary: $passed passed, $failed failed, $refused refused by design (logs and ctcheck reports in $out)"
for f in "${failures[@]+"${failures[@]}"}"; do echo "  failed: $f"; done
[ "$failed" -eq 0 ]
