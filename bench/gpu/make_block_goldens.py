#!/usr/bin/env python3
"""Writes Hugging Face transformers goldens of the fixture model for tests/gpu/block_goldens_test.cc.

  python3 bench/gpu/make_block_goldens.py MODEL_DIR [OUT_DIR]      (OUT_DIR: tests/testdata/block_goldens)

MODEL_DIR is a copy of ../shared/models/llmc-fixture-llama. The input is the first 64 tokens of a fixed English
text (below; the model's tokenizer, no special tokens). For each of fp32 (the stored bf16 weights computed in
float32, eager attention, TF32 off) and bf16 (weights and activations in bfloat16, eager attention), on CUDA when
present, writes OUT_DIR/fixture_{fp32,bf16}.json (~0.35 MB each) with:
  input_ids [64], hidden_size, vocab_size, versions and device;
  block0: rows {"0","1","31","63"} -> the hidden state after decoder block 0 (HF hidden_states[1]) of that
          position, [hidden]; row_rms [64]; mean, std, max_abs over all 64 x hidden values;
  logits: rows {"0","31","63"} -> logits of that position [vocab]; row_logsumexp [64]; row_argmax [64];
          row_rms [64]; next_token_logprobs [63] (log softmax at t of token t + 1).
Values are float32 results written with 8 significant digits.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT = (
    "The history of the lighthouse begins with fires lit on hilltops to guide ships into harbor. Over the centuries "
    "these beacons became towers of stone, and their keepers tended oil lamps through long winter nights. In 1822 "
    "Augustin Fresnel designed a lens of concentric glass rings that could throw a beam more than twenty miles, and "
    "within a few decades his lenses stood on coasts around the world."
)
ROWS_BLOCK0 = (0, 1, 31, 63)
ROWS_LOGITS = (0, 31, 63)


def r8(v):
    return float(f"{v:.8g}")


def main():
    model_dir = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "testdata", "block_goldens")
    os.makedirs(out_dir, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"][:64]
    assert len(ids) == 64, f"the text gives only {len(ids)} tokens"
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager").to(dev).eval()
        with torch.inference_mode():
            x = torch.tensor([ids], device=dev)
            o = m(x, output_hidden_states=True)
            h = o.hidden_states[1][0].float()  # [64, hidden], after block 0 (no norm: the model has 6 blocks)
            logits = o.logits[0].float()  # [64, vocab]
            lp = torch.log_softmax(logits.double(), dim=-1)
            nxt = lp[:-1].gather(1, x[0, 1:, None])[:, 0]
            g = {
                "source": "bench/gpu/make_block_goldens.py: HF transformers %s, torch %s, %s, %s (eager attention, "
                          "TF32 off)" % (transformers.__version__, torch.__version__,
                                         torch.cuda.get_device_name() if dev == "cuda" else "cpu", name),
                "model": os.path.basename(os.path.normpath(model_dir)),
                "dtype": name,
                "input_ids": ids,
                "hidden_size": int(h.shape[1]),
                "vocab_size": int(logits.shape[1]),
                "block0": {
                    "rows": {str(t): [r8(v) for v in h[t].tolist()] for t in ROWS_BLOCK0},
                    "row_rms": [r8(v) for v in h.pow(2).mean(-1).sqrt().tolist()],
                    "mean": r8(h.mean().item()),
                    "std": r8(h.std().item()),
                    "max_abs": r8(h.abs().max().item()),
                },
                "logits": {
                    "rows": {str(t): [r8(v) for v in logits[t].tolist()] for t in ROWS_LOGITS},
                    "row_logsumexp": [r8(v) for v in torch.logsumexp(logits.double(), -1).tolist()],
                    "row_argmax": logits.argmax(-1).tolist(),
                    "row_rms": [r8(v) for v in logits.pow(2).mean(-1).sqrt().tolist()],
                    "next_token_logprobs": [r8(v) for v in nxt.tolist()],
                },
            }
        path = os.path.join(out_dir, f"fixture_{name}.json")
        with open(path, "w") as f:
            json.dump(g, f, separators=(",", ":"))
        print(f"{path}: {os.path.getsize(path)} bytes; mean next-token log-prob {nxt.mean().item():.6f}", flush=True)
        del m
        if dev == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
