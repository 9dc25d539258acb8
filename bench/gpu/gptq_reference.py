#!/usr/bin/env python3
"""Plain-PyTorch sequential GPTQ W4A16 for a Hugging Face Llama directory: the reference llmc's GPTQ is compared
with (accuracy and speed). Needs only torch + transformers (checked with torch 2.11, transformers 5.x), no
llm-compressor.

usage:
  gptq_reference.py MODEL_DIR --calib CALIB.txt --eval EVAL.txt [--num-samples 128] [--seq-len 512] [--seed 42]
                    [--actorder none|static] [--max-windows 200] [--save-dir DIR] [--skip-rtn] [--bos]
  gptq_reference.py --random-llama8b [--num-samples 512] [--seq-len 2048] [--actorder ...]   (timing only)

Prints one JSON object: {"ppl_bf16", "ppl_rtn", "ppl_gptq", "seconds", "peak_gpu_memory_bytes", ...}.

What it computes (the same definitions llmc uses):
  * Scheme: int4 symmetric, group 128 along the input dimension, every nn.Linear of the decoder layers; lm_head and
    embeddings stay bf16. Quantization arithmetic is compressed-tensors' in bf16 (FORMAT.md "Bit-exact with the
    library"): scale = bf16(amax_group / 7.5) (0 -> 2^-7), q = round_half_even(clamp(bf16(w / scale), -8, 7)),
    dequantized value = bf16(q * scale). RTN = that on the original weight.
  * GPTQ (llm-compressor's quantize_weight): scales from the unmodified weight, all groups up front; actorder
    "static" (= "weight") solves the columns in descending H_ii order (stable sort) with the original groups and
    unpermutes the result; dead columns (H_ii == 0) are zeroed; damp = 0.01 * mean(diag H) added to the diagonal;
    U = cholesky(cholesky_inverse(cholesky(H)), upper) (float64 by default, --inverse-dtype float32 for the
    library's precision; a failure falls back to U = I, i.e. RTN, with a warning); blocks of 128 columns with the
    lazy update; loss = sum (w - q)^2 / U_ii^2 / 2.
  * Hessian per Linear: H = 2/N sum_tokens x x^T (fp32, TF32 off), N = number of calibration samples (llm-compressor
    counts the batch dimension). Linears that read the same input tensor (q/k/v, gate/up) share one H.
  * Sequential pipeline: the first decoder layer's inputs (and its keyword arguments: rotary embeddings, mask,
    positions) are captured from the model's own forward, one sample (batch 1) at a time. Per layer: run the layer
    on every sample with hooks accumulating the Hessians (weights still unquantized), quantize every Linear of the
    layer, run the layer again with the quantized weights to produce the next layer's inputs.
  * Calibration samples (llmc's rule, so llmc and this script see the same tokens): the file is read as UTF-8;
    documents are the runs of lines between blank lines (a line that is empty after stripping ASCII whitespace);
    they are joined with "\\n\\n" and tokenized whole without special tokens (--raw-calib: the file text as is).
    The ids are cut into aligned non-overlapping windows ids[k*L:(k+1)*L] (L = seq_len, or seq_len - 1 with --bos,
    which then prepends the BOS id); a Fisher-Yates shuffle of the window indices driven by std::mt19937_64(seed)
    (unbiased draws by rejection, as engine/data/calibration_data.cc SeededPermutation) picks the first
    num_samples, which are used in increasing order.
  * Perplexity (llmc eval's protocol): the eval file tokenized whole without special tokens, non-overlapping
    windows of seq_len 512, the first --max-windows of them; perplexity = exp(mean negative log-likelihood of the
    511 predicted tokens of every window), log-softmax in fp32.
  * seconds: wall time of the sequential GPTQ (capture, calibration forwards, Hessians, solves, propagation),
    CUDA-synchronized; peak_gpu_memory_bytes: torch.cuda.max_memory_allocated() over that phase (the model
    included).
--random-llama8b builds Llama-3-8B's shape (hidden 4096, intermediate 14336, 32 layers, 32/8 heads, vocab 128256)
with random bf16 weights on the GPU and random calibration ids (seeded), and reports only seconds and memory.
--save-dir writes the GPTQ fake-quantized model (bf16 values on the int4 grid) in HF format for cross-checking.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

GROUP = 128
QMIN, QMAX = -8.0, 7.0
BF16_EPS = 2.0 ** -7


# --------------------------------------------------------------------------------------------------------------
# llmc's calibration sampling


class MT19937_64:
    """std::mt19937_64 (the C++ standard's parameters and seeding)."""

    N, M = 312, 156
    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [0] * self.N
        self.mt[0] = seed & self.MASK
        for i in range(1, self.N):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK
        self.index = self.N

    def _twist(self):
        mt, n, m = self.mt, self.N, self.M
        upper, lower = 0xFFFFFFFF80000000, 0x7FFFFFFF
        for i in range(n):
            x = (mt[i] & upper) | (mt[(i + 1) % n] & lower)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            mt[i] = mt[(i + m) % n] ^ xa
        self.index = 0

    def __call__(self):
        if self.index >= self.N:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK


def _check_mt():
    g = MT19937_64(5489)
    for _ in range(9999):
        g()
    assert g() == 9981545732273789042, "mt19937_64 self-check failed"


def seeded_permutation(n, seed):
    p = list(range(n))
    rng = MT19937_64(seed)
    umax = (1 << 64) - 1
    for i in range(n, 1, -1):
        limit = umax - umax % i
        r = rng()
        while r >= limit:
            r = rng()
        j = r % i
        p[i - 1], p[j] = p[j], p[i - 1]
    return p


def llmc_documents_text(text):
    docs, cur = [], []
    for line in text.split("\n"):
        if line.strip(" \t\n\v\f\r") == "":
            if cur:
                docs.append("\n".join(cur))
            cur = []
            continue
        cur.append(line)
    if cur:
        docs.append("\n".join(cur))
    return "\n\n".join(docs)


def calibration_ids(tok, path, num_samples, seq_len, seed, raw, bos):
    text = open(path, encoding="utf-8").read()
    if not raw:
        text = llmc_documents_text(text)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    body = seq_len - (1 if bos else 0)
    windows = len(ids) // body
    if windows == 0:
        raise SystemExit(f"{path}: {len(ids)} tokens, fewer than one sample of {seq_len}")
    pick = sorted(seeded_permutation(windows, seed)[: min(windows, num_samples)])
    if len(pick) < num_samples:
        print(f"warning: calibration data holds only {len(pick)} samples of {seq_len} tokens", file=sys.stderr)
    out = []
    for w in pick:
        s = ids[w * body:(w + 1) * body]
        if bos:
            s = [tok.bos_token_id] + s
        out.append(s)
    return torch.tensor(out, dtype=torch.long)


# --------------------------------------------------------------------------------------------------------------
# Quantization arithmetic (compressed-tensors int4 symmetric group 128, in bf16)


def group_scales(w_bf16):
    """[rows, cols] bf16 -> [rows, cols // 128] bf16 scales."""
    rows, cols = w_bf16.shape
    if cols % GROUP:
        raise SystemExit(f"in_features {cols} is not divisible by group size {GROUP}")
    amax = w_bf16.view(rows, cols // GROUP, GROUP).abs().amax(dim=-1)  # bf16, >= 0: range widened to include 0
    scale = amax / 7.5  # bf16 op: bf16(amax / 7.5)
    return torch.where(scale == 0, torch.full_like(scale, BF16_EPS), scale)


def fake_quant(x, scale_bf16):
    """x fp32 (any shape broadcasting with scale) -> fp32 values of bf16(q * scale)."""
    t = x.to(torch.bfloat16) / scale_bf16
    q = torch.round(torch.clamp(t, QMIN, QMAX))
    return (q * scale_bf16).float()


def rtn(w_bf16):
    rows, cols = w_bf16.shape
    s = group_scales(w_bf16)
    q = fake_quant(w_bf16.float().view(rows, cols // GROUP, GROUP), s.unsqueeze(-1))
    return q.view(rows, cols).to(torch.bfloat16)


def gptq(w_bf16, H, actorder, damp_frac=0.01, block=128, inverse_dtype=torch.float64):
    """Returns (fake-quantized bf16 weight, loss, fell_back)."""
    rows, cols = w_bf16.shape
    scale = group_scales(w_bf16)  # from the unmodified weight, original groups
    W = w_bf16.float().clone()
    H = H.clone()
    col_group = torch.arange(cols, device=W.device) // GROUP
    perm = None
    if actorder == "static":
        perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        col_group = col_group[perm]
    dead = torch.nonzero(torch.diagonal(H) == 0).flatten()
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = damp_frac * torch.mean(torch.diagonal(H))
    idx = torch.arange(cols, device=H.device)
    H[idx, idx] += damp
    fell_back = False
    try:
        L = torch.linalg.cholesky(H.to(inverse_dtype))
        U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()
        if not torch.isfinite(U).all():
            raise torch.linalg.LinAlgError("non-finite factor")
    except torch.linalg.LinAlgError:
        print("warning: Hessian not positive definite; falling back to round-to-nearest for this module",
              file=sys.stderr)
        U = torch.eye(cols, device=W.device, dtype=torch.float32)
        fell_back = True
    del H
    scale_cols = scale.t().contiguous()  # [groups, rows]: one row per group for column access
    loss = torch.zeros((), device=W.device, dtype=torch.float64)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        groups = col_group[i1:i2].tolist()
        for i in range(i2 - i1):
            w = W1[:, i]
            d = U1[i, i]
            q = fake_quant(w, scale_cols[groups[i]])
            Q1[:, i] = q
            loss += (((w - q) ** 2) / d ** 2).sum().double() / 2
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(U[i1:i2, i2:])
    if perm is not None:
        W = W[:, torch.argsort(perm)]
    return W.to(torch.bfloat16), loss.item(), fell_back


# --------------------------------------------------------------------------------------------------------------
# Model plumbing


class _Stop(Exception):
    pass


def decoder_layers(model):
    return model.model.layers


def capture_layer0_inputs(model, ids, device):
    """Runs the model on each sample until layer 0; returns (hidden states list, layer kwargs of sample 0)."""
    layer0 = decoder_layers(model)[0]
    states, kw = [], {}

    def pre_hook(module, args, kwargs):
        hs = args[0] if args else kwargs["hidden_states"]
        states.append(hs.detach())
        if not kw:
            for k, v in kwargs.items():
                if k != "hidden_states":
                    kw[k] = v
        raise _Stop

    h = layer0.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for s in range(ids.shape[0]):
                try:
                    model(input_ids=ids[s:s + 1].to(device), use_cache=False)
                except _Stop:
                    pass
    finally:
        h.remove()
    return states, kw


def run_layer(layer, hs, kw):
    out = layer(hs, **kw)
    return out[0] if isinstance(out, tuple) else out


def linears(layer):
    return [(n, m) for n, m in layer.named_modules() if isinstance(m, nn.Linear)]


def sequential_gptq(model, ids, device, actorder, inverse_dtype, log):
    states, kw = capture_layer0_inputs(model, ids, device)
    n_samples = len(states)
    total_loss, fallbacks = 0.0, 0
    for li, layer in enumerate(decoder_layers(model)):
        t0 = time.time()
        mods = linears(layer)
        captured = {}
        hooks = [m.register_forward_hook(lambda mod, args, out, name=n: captured.__setitem__(name, args[0].detach()))
                 for n, m in mods]
        sums, owner, counts = {}, {}, {}
        with torch.no_grad():
            for s in range(n_samples):
                run_layer(layer, states[s], kw)
                by_input = {}
                for name, x in captured.items():
                    by_input.setdefault((x.data_ptr(), tuple(x.shape)), []).append(name)
                for names in by_input.values():
                    key = names[0]
                    x = captured[key]
                    x2 = x.reshape(-1, x.shape[-1]).float()
                    if key not in sums:
                        sums[key] = torch.zeros(x2.shape[1], x2.shape[1], device=device, dtype=torch.float32)
                        counts[key] = 0
                    sums[key].addmm_(x2.t(), x2)
                    counts[key] += x.shape[0] if x.dim() == 3 else 1
                    for n in names:
                        owner[n] = key
                captured.clear()
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for name, m in mods:
                key = owner[name]
                H = sums[key] * (2.0 / counts[key])
                q, loss, fb = gptq(m.weight.data, H, actorder, inverse_dtype=inverse_dtype)
                m.weight.data.copy_(q)
                total_loss += loss
                fallbacks += fb
                del H
            del sums
            for s in range(n_samples):
                states[s] = run_layer(layer, states[s], kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        log(f"layer {li}: {len(mods)} linears, {time.time() - t0:.1f}s")
    return total_loss, fallbacks


def perplexity(model, eval_ids, seq_len, max_windows, device, batch):
    n = min(max_windows, len(eval_ids) // seq_len)
    if n == 0:
        raise SystemExit(f"eval text has {len(eval_ids)} tokens, fewer than one window of {seq_len}")
    ids = torch.tensor(eval_ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    nll, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, n, batch):
            x = ids[b:b + batch].to(device)
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                     reduction="sum").item()
            count += x.shape[0] * (seq_len - 1)
            del logits
    return math.exp(nll / count)


def apply_rtn(model):
    with torch.no_grad():
        for layer in decoder_layers(model):
            for _, m in linears(layer):
                m.weight.data.copy_(rtn(m.weight.data))


def linear_state(model):
    return {f"{li}.{n}": m.weight.detach().to("cpu", copy=True)
            for li, layer in enumerate(decoder_layers(model)) for n, m in linears(layer)}


def restore(model, saved):
    with torch.no_grad():
        for li, layer in enumerate(decoder_layers(model)):
            for n, m in linears(layer):
                m.weight.data.copy_(saved[f"{li}.{n}"].to(m.weight.device))


def random_llama8b(device, seed, layers=32):
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=128000,
                      eos_token_id=128001)
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # parameters are created (and initialized) in bf16 on the GPU
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.to(device=device, dtype=torch.bfloat16).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--calib", help="calibration text file")
    ap.add_argument("--eval", help="evaluation text file")
    ap.add_argument("--num-samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512, help="calibration sample length")
    ap.add_argument("--eval-seq-len", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=200)
    ap.add_argument("--eval-batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--actorder", choices=["none", "static", "weight"], default="static")
    ap.add_argument("--inverse-dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--raw-calib", action="store_true", help="tokenize the calibration file as is")
    ap.add_argument("--bos", action="store_true", help="prepend BOS to every calibration sample")
    ap.add_argument("--skip-rtn", action="store_true")
    ap.add_argument("--save-dir")
    ap.add_argument("--random-llama8b", action="store_true", help="timing only, random Llama-3-8B-shaped model")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--layers", type=int, default=32, help="--random-llama8b: decoder layers (timing per layer)")
    a = ap.parse_args()
    actorder = "static" if a.actorder == "weight" else a.actorder
    inverse_dtype = torch.float64 if a.inverse_dtype == "float64" else torch.float32
    log = (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {"torch": torch.__version__, "transformers": transformers.__version__,
              "device": torch.cuda.get_device_name(0), "actorder": actorder, "num_samples": a.num_samples,
              "seq_len": a.seq_len, "group_size": GROUP, "block_size": 128, "dampening_frac": 0.01,
              "inverse_dtype": a.inverse_dtype, "seed": a.seed}

    if a.random_llama8b:
        model = random_llama8b(device, a.seed, a.layers)
        gen = torch.Generator().manual_seed(a.seed)
        ids = torch.randint(0, model.config.vocab_size, (a.num_samples, a.seq_len), generator=gen)
        report["model"] = "random Llama-3-8B shape"
    else:
        if not (a.model and a.calib and a.eval):
            ap.error("MODEL_DIR, --calib and --eval are required (or --random-llama8b)")
        _check_mt()
        tok = AutoTokenizer.from_pretrained(a.model)
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).to(device).eval()
        ids = calibration_ids(tok, a.calib, a.num_samples, a.seq_len, a.seed, a.raw_calib, a.bos)
        eval_ids = tok(open(a.eval, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
        report["model"] = a.model
        report["calibration_samples"] = ids.shape[0]
        report["eval_windows"] = min(a.max_windows, len(eval_ids) // a.eval_seq_len)
        report["ppl_bf16"] = perplexity(model, eval_ids, a.eval_seq_len, a.max_windows, device, a.eval_batch)
        log(f"ppl_bf16 {report['ppl_bf16']:.4f}")
        if not a.skip_rtn:
            saved = linear_state(model)
            apply_rtn(model)
            report["ppl_rtn"] = perplexity(model, eval_ids, a.eval_seq_len, a.max_windows, device, a.eval_batch)
            log(f"ppl_rtn {report['ppl_rtn']:.4f}")
            restore(model, saved)
            del saved

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    loss, fallbacks = sequential_gptq(model, ids, device, actorder, inverse_dtype, log)
    torch.cuda.synchronize()
    report["seconds"] = time.time() - t0
    report["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    report["peak_gpu_memory_gib"] = round(report["peak_gpu_memory_bytes"] / 2 ** 30, 2)
    report["gptq_total_loss"] = loss
    report["rtn_fallbacks"] = fallbacks

    if not a.random_llama8b:
        report["ppl_gptq"] = perplexity(model, eval_ids, a.eval_seq_len, a.max_windows, device, a.eval_batch)
        log(f"ppl_gptq {report['ppl_gptq']:.4f}")
        if a.save_dir:
            model.save_pretrained(a.save_dir)
            tok.save_pretrained(a.save_dir)
            report["saved"] = a.save_dir
    print(json.dumps(report))


if __name__ == "__main__":
    main()
