#!/usr/bin/env python3
"""Regenerates the model-runtime test references with Hugging Face transformers (5.17) and PyTorch.

Run where transformers is installed (the GPU machine), with DATA holding a copy of the fixture and texts:
  DATA/fixture/            ../shared/models/llmc-fixture-llama
  DATA/eval.txt            ../shared/data/eval.txt
  DATA/wikitext2-test.txt  ../shared/data/wikitext2-test.txt
  python3 make_reference.py DATA OUT

Writes to OUT:
  fixture_reference.json   (and a _full variant) fp32 forward of the fixture on goldens.json's 128-token input (weights bf16 as stored,
                           math in fp32, eager attention, no TF32), its bf16 forward (checks goldens.json), and the
                           per-window NLL sums of the eval protocol (512-token windows, first 200) on both texts in
                           fp32 and bf16, plus the token ids of the first 4 windows of each text.
  eval_ids.bin, wikitext_ids.bin   the whole texts tokenized (int32 little-endian, no special tokens).
  tiny_models.tar          random small checkpoints (bf16) of each supported architecture with a reference.json:
                           fp32 CPU forward of two sequences (next-token log-probs, last-position logits).
"""
import io
import json
import math
import os
import sys
import tarfile
import tempfile

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")

data, out = sys.argv[1], sys.argv[2]
dev = "cuda" if torch.cuda.is_available() else "cpu"
print("transformers", transformers.__version__, "torch", torch.__version__, "device", dev, flush=True)
fixture = os.path.join(data, "fixture")
goldens = json.load(open(os.path.join(fixture, "goldens.json")))


def load(path, dtype, device):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    return m.to(device).eval()


@torch.no_grad()
def forward_ref(model, ids):
    x = torch.tensor([ids], device=model.device)
    o = model(x, output_hidden_states=True)
    logits = o.logits.float()[0]
    lp = torch.log_softmax(logits, dim=-1)
    nxt = lp[:-1].gather(1, x[0, 1:, None])[:, 0]
    rms = [h[0].float().pow(2).mean(-1).sqrt().tolist() for h in o.hidden_states]
    return {"next_token_logprobs": nxt.tolist(), "last_logits": logits[-1].tolist(), "hidden_state_rms": rms}


@torch.no_grad()
def window_nll(model, ids, seq_len=512, max_windows=200, batch=25):
    n = min(len(ids) // seq_len, max_windows)
    t = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    sums = []
    for b in range(0, n, batch):
        x = t[b : b + batch].to(model.device)
        logits = model(x).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -lp.gather(2, x[:, 1:, None])[..., 0]
        sums += nll.double().sum(1).tolist()
    return sums


tok = AutoTokenizer.from_pretrained(fixture)
ids = {}
for name, fn in (("eval", "eval.txt"), ("wikitext", "wikitext2-test.txt")):
    text = open(os.path.join(data, fn), encoding="utf-8").read()  # text mode: CRLF -> LF, as the fixture report
    ids[name] = tok(text, add_special_tokens=False)["input_ids"]
    torch.tensor(ids[name], dtype=torch.int32).numpy().tofile(os.path.join(out, f"{name}_ids.bin"))
    print(name, "tokens", len(ids[name]), flush=True)
for case in goldens["tokenizer"]:
    got = tok(case["text"])["input_ids"]
    print("tokenizer golden", "ok" if got == case["ids"] else f"MISMATCH {got} vs {case['ids']}", flush=True)

ref = {"transformers": transformers.__version__, "torch": torch.__version__, "device": dev}
fwd_ids = goldens["forward"]["input_ids"]
for dtype, key in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
    m = load(fixture, dtype, dev)
    f = forward_ref(m, fwd_ids)
    ref[f"forward_{key}"] = f
    g = goldens["forward"]["next_token_logprobs"]
    d = max(abs(a - b) for a, b in zip(f["next_token_logprobs"], g))
    print(key, "forward: max |logprob - golden| =", d, flush=True)
    for name in ("eval", "wikitext"):
        s = window_nll(m, ids[name])
        ref[f"window_nll_sum_{key}_{name}"] = s
        print(key, name, "windows", len(s), "ppl", math.exp(sum(s) / (511 * len(s))), flush=True)
    del m
    torch.cuda.empty_cache()
ref["eval_first_windows_ids"] = ids["eval"][: 4 * 512]
ref["wikitext_first_windows_ids"] = ids["wikitext"][: 4 * 512]
json.dump(ref, open(os.path.join(out, "fixture_reference_full.json"), "w"))
# The trimmed form kept in engine/model/testdata/.
f = ref["forward_fp32"]
small = {
    "source": "engine/model/testdata/make_reference.py: HF transformers %s, torch %s, %s; fp32 = bf16 weights "
              "computed in float32 (eager attention, no TF32)" % (transformers.__version__, torch.__version__, dev),
    "forward_fp32": {"next_token_logprobs": f["next_token_logprobs"], "last_logits_first512": f["last_logits"][:512],
                     "hidden_state_rms": f["hidden_state_rms"]},
    "eval_first_windows_ids": ref["eval_first_windows_ids"],
    "eval_first_windows_nll_sum_fp32": ref["window_nll_sum_fp32_eval"][:4],
    "eval_first_windows_nll_sum_bf16": ref["window_nll_sum_bf16_eval"][:4],
    "wikitext_first_windows_ids": ref["wikitext_first_windows_ids"],
    "wikitext_first_windows_nll_sum_fp32": ref["window_nll_sum_fp32_wikitext"][:4],
    "wikitext_first_windows_nll_sum_bf16": ref["window_nll_sum_bf16_wikitext"][:4],
    "ppl_200_windows": {k.replace("window_nll_sum_", ""): math.exp(sum(v) / (511 * len(v)))
                        for k, v in ref.items() if k.startswith("window")},
}
json.dump(small, open(os.path.join(out, "fixture_reference.json"), "w"), separators=(",", ":"))


# ---- tiny random models of every architecture ----
def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[-1])))


common = dict(vocab_size=128, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=512, rms_norm_eps=1e-5)
tiny = {
    "tiny-llama3": transformers.LlamaConfig(
        **common, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "tiny-mistral": transformers.MistralConfig(**common, num_key_value_heads=1, head_dim=16, sliding_window=8,
                                               tie_word_embeddings=False),
    "tiny-qwen2": transformers.Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=False,
                                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    "tiny-qwen3": transformers.Qwen3Config(**common, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
}
g = torch.Generator().manual_seed(7)
seqs = [torch.randint(0, 128, (40,), generator=g).tolist(), torch.randint(0, 128, (40,), generator=g).tolist()]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tar, tempfile.TemporaryDirectory() as tmp:
    for i, (name, cfg) in enumerate(tiny.items()):
        cfg.architectures = [type(cfg).__name__.replace("Config", "ForCausalLM")]
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        randomize(m, 100 + i)
        m = m.to(torch.bfloat16)
        d = os.path.join(tmp, name)
        m.save_pretrained(d)
        os.remove(os.path.join(d, "generation_config.json"))
        r = load(d, torch.float32, "cpu")
        res = {"input_ids": seqs, "next_token_logprobs": [], "last_logits": [], "hidden_state_rms": []}
        for s in seqs:
            f = forward_ref(r, s)
            res["next_token_logprobs"].append(f["next_token_logprobs"])
            res["last_logits"].append(f["last_logits"])
            res["hidden_state_rms"].append(f["hidden_state_rms"])
        if name == "tiny-mistral":  # the window must matter for the test to mean anything
            nw = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                      sliding_window=None).eval()
            f = forward_ref(nw, seqs[0])
            print(name, "max effect of the sliding window on log-probs:",
                  max(abs(a - b) for a, b in zip(f["next_token_logprobs"], res["next_token_logprobs"][0])))
        json.dump(res, open(os.path.join(d, "reference.json"), "w"))
        for fn in sorted(os.listdir(d)):
            tar.add(os.path.join(d, fn), arcname=f"{name}/{fn}")
        print(name, "saved", sorted(os.listdir(d)), flush=True)
open(os.path.join(out, "tiny_models.tar"), "wb").write(buf.getvalue())
print("done")
