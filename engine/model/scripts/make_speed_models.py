#!/usr/bin/env python3
"""Random-weight checkpoints for timing the CPU runtime, plus a Hugging Face parity check at a real model size.

  python3 make_speed_models.py FIXTURE_CONFIG_JSON WORKDIR OUT

Writes to WORKDIR:
  fixture-shape/   a LlamaForCausalLM with llmc-fixture-llama's config.json (15.7M parameters, bf16): same shapes,
                   so the same speed as the fixture
  llama-1b/        a Llama-3.2-1B-shaped LlamaForCausalLM (hidden 2048, 16 layers, 32/8 heads, vocab 128256, tied
                   embeddings, llama3 rope scaling), bf16, weights scaled so its logits are far from uniform
  ids.bin          int32 token ids (random below 8192, so valid for both vocabularies)
and to OUT/llama1b_reference.json: HF fp32 (eager attention, no TF32) NLL sums of the first 4 windows of 512 ids
of the 1B model, for comparison with `llmc_ppl_ids WORKDIR/llama-1b WORKDIR/ids.bin --max-windows 4`.
"""
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
cfg_path, work, out = sys.argv[1:4]
os.makedirs(work, exist_ok=True)

# Fixture shape.
cfg = transformers.LlamaConfig.from_pretrained(os.path.dirname(cfg_path))
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
m.save_pretrained(os.path.join(work, "fixture-shape"))
del m

# Llama-3.2-1B shape.
cfg = transformers.LlamaConfig(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
cfg.architectures = ["LlamaForCausalLM"]
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1])))
m = m.to(torch.bfloat16)
d1b = os.path.join(work, "llama-1b")
m.save_pretrained(d1b)
del m

ids = torch.randint(0, 8192, (200 * 512 + 1,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
ids.numpy().tofile(os.path.join(work, "ids.bin"))

dev = "cuda" if torch.cuda.is_available() else "cpu"
m = AutoModelForCausalLM.from_pretrained(d1b, dtype=torch.float32, attn_implementation="eager").to(dev).eval()
sums = []
with torch.no_grad():
    for w in range(4):
        x = ids[w * 512:(w + 1) * 512].long()[None].to(dev)
        lp = torch.log_softmax(m(x).logits.float()[0, :-1], dim=-1)
        sums.append(float(-lp.gather(1, x[0, 1:, None]).double().sum()))
ppl = math.exp(sum(sums) / (4 * 511))
json.dump({"window_nll_sum_fp32": sums, "ppl_fp32": ppl, "transformers": transformers.__version__},
          open(os.path.join(out, "llama1b_reference.json"), "w"))
print("llama-1b HF fp32 ppl over 4 windows:", ppl, sums, flush=True)
