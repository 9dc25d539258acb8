#!/usr/bin/env python3
"""PyTorch/transformers reference for llmc-bench-block: tokens/s of one Llama-3-8B-shaped LlamaDecoderLayer.

  python3 bench/gpu/block_bench.py [--batch 4] [--seq-len 2048] [--dtypes fp32,bf16] [--iters 10] [--warmup 3] [--json]
  python3 bench/gpu/block_bench.py --save-model DIR [--layers 4] [--tokenizer-from FIXTURE_DIR]

The second form writes a Llama-3-8B-shaped LlamaForCausalLM checkpoint (bf16, transformers' random init, --layers
decoder blocks, vocab 128256) to DIR instead, with the tokenizer files of FIXTURE_DIR (ids < 8192, valid here), for
timing `llmc eval DIR --text FILE --device cuda` end to end (host loading included).

The layer is transformers' own LlamaDecoderLayer (hidden 4096, 32 heads / 8 kv heads of 128, intermediate 14336,
llama3 rope scaling, theta 500000) with random weights, on CUDA, in eval mode under torch.inference_mode, with the
SDPA attention implementation and no attention mask (causal SDPA: flash attention in bf16, the memory-efficient
kernel in fp32). fp32 runs with TF32 off (torch's default for matmuls), as llmc's fp32 mode.

tokens/s = batch * seq_len / median time of one layer forward over the whole batch (CUDA events, after --warmup
untimed forwards), the same definition as llmc-bench-block. The rotary cos/sin are computed once outside the timed
region (llmc precomputes its table too).
"""
import argparse
import json
import statistics
import sys

import torch
import transformers
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama


def make_config(layers=1):
    cfg = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, rms_norm_eps=1e-5, max_position_embeddings=131072,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    try:
        cfg._attn_implementation = "sdpa"
    except Exception:  # older config classes take it only at construction
        pass
    return cfg


def layer_forward(layer, x, pos_emb, pos_ids, mask=None):
    out = layer(x, attention_mask=mask, position_ids=pos_ids, position_embeddings=pos_emb)
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def bench(dtype_name, batch, seq_len, iters, warmup):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    cfg = make_config()
    torch.manual_seed(0)
    layer = modeling_llama.LlamaDecoderLayer(cfg, layer_idx=0).to(device="cuda", dtype=dtype).eval()
    rope = modeling_llama.LlamaRotaryEmbedding(config=cfg).to("cuda")
    x = torch.randn(batch, seq_len, cfg.hidden_size, device="cuda", dtype=dtype)
    pos_ids = torch.arange(seq_len, device="cuda").unsqueeze(0).expand(batch, -1)
    pos_emb = rope(x, pos_ids)

    # Causality check on a short prefix: the unmasked SDPA call must equal an explicit causal mask.
    t = 64
    xs = x[:1, :t]
    pe = tuple(p[:1, :t] for p in pos_emb)
    mask = torch.full((t, t), float("-inf"), device="cuda", dtype=dtype).triu(1)[None, None]
    a = layer_forward(layer, xs, pe, pos_ids[:1, :t]).float()
    b = layer_forward(layer, xs, pe, pos_ids[:1, :t], mask).float()
    causal_diff = (a - b).abs().max().item()
    full_mask = None
    if causal_diff > (1e-4 if dtype == torch.float32 else 5e-2):
        # This transformers does not make an unmasked call causal: time it with an explicit mask instead.
        print(f"block_bench.py: {dtype_name}: no-mask call is not causal (max diff {causal_diff}); "
              "timing with an explicit causal mask", file=sys.stderr)
        full_mask = torch.full((seq_len, seq_len), float("-inf"), device="cuda", dtype=dtype).triu(1)[None, None]

    for _ in range(warmup):
        layer_forward(layer, x, pos_emb, pos_ids, full_mask)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y = layer_forward(layer, x, pos_emb, pos_ids, full_mask)
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    med = statistics.median(times)
    rms = y.float().pow(2).mean().sqrt().item()
    peak = torch.cuda.max_memory_allocated()
    del layer, x, y
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return {"dtype": dtype_name, "median_ms": med, "min_ms": min(times), "max_ms": max(times),
            "tokens_per_second": batch * seq_len / (med / 1e3), "output_rms": rms, "causal_check_max_diff": causal_diff,
            "mask": "explicit" if full_mask is not None else "none (causal SDPA)",
            "peak_bytes": peak}


def save_model(out_dir, layers, tokenizer_from):
    import os
    import shutil
    from transformers import AutoModelForCausalLM
    cfg = make_config(layers)
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.save_pretrained(out_dir)
    if tokenizer_from:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if os.path.exists(os.path.join(tokenizer_from, f)):
                shutil.copy(os.path.join(tokenizer_from, f), out_dir)
    n = sum(p.numel() for p in m.parameters())
    print(f"{out_dir}: Llama-3-8B shape, {layers} layers, {n / 1e9:.2f}B parameters (bf16)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--save-model", help="write a Llama-3-8B-shaped checkpoint here instead of benchmarking")
    ap.add_argument("--layers", type=int, default=4, help="decoder blocks of --save-model")
    ap.add_argument("--tokenizer-from", help="copy tokenizer.json / tokenizer_config.json from this directory")
    a = ap.parse_args()
    if a.save_model:
        save_model(a.save_model, a.layers, a.tokenizer_from)
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = [bench(d, a.batch, a.seq_len, a.iters, a.warmup) for d in a.dtypes.split(",")]
    info = {"bench": "block_bench.py", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "transformers": transformers.__version__, "shape": "llama3-8b", "batch": a.batch, "seq_len": a.seq_len,
            "tokens": a.batch * a.seq_len, "iters": a.iters, "results": results}
    if a.json:
        print(json.dumps(info))
    else:
        for r in results:
            print(f"PyTorch LlamaDecoderLayer {r['dtype']:5s} {r['tokens_per_second']:9.0f} tokens/s "
                  f"(median {r['median_ms']:.2f} ms, min {r['min_ms']:.2f}, max {r['max_ms']:.2f}; "
                  f"output rms {r['output_rms']:.4f})")
        print(f"device {info['device']}, torch {info['torch']}, transformers {info['transformers']}, "
              f"batch {a.batch} x {a.seq_len} tokens")


if __name__ == "__main__":
    main()
