#!/usr/bin/env python3
"""Loads llmc outputs with Hugging Face transformers (compressed-tensors) and, if installed, vLLM, and compares
them with the original model: perplexity on the first windows of a text file and logits agreement.

usage: verify_load.py ORIGINAL TEXT OUT_DIR... [--windows 20] [--vllm]
Prints one JSON object. Used on the GPU machine (see docs/benchmarks.md)."""
import argparse, json, math, sys, time, traceback

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def ppl(model, ids, seq, windows):
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            x = ids[w * seq:(w + 1) * seq].unsqueeze(0).to(model.device)
            if x.shape[1] < seq:
                break
            logits = model(x).logits.float()
            lp = torch.log_softmax(logits[0, :-1], dim=-1)
            nll -= lp.gather(1, x[0, 1:].unsqueeze(1)).sum().item()
            n += seq - 1
    return math.exp(nll / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("text")
    ap.add_argument("outs", nargs="+")
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--vllm", action="store_true")
    a = ap.parse_args()
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
    try:
        import compressed_tensors
        report["compressed_tensors"] = compressed_tensors.__version__
    except Exception as e:  # noqa
        report["compressed_tensors"] = f"not importable: {e}"
    import transformers
    report["transformers"] = transformers.__version__
    tok = AutoTokenizer.from_pretrained(a.original)
    ids = torch.tensor(tok(open(a.text).read(), add_special_tokens=False)["input_ids"])
    base = AutoModelForCausalLM.from_pretrained(a.original, dtype=torch.bfloat16).cuda().eval()
    report["original_ppl"] = ppl(base, ids, a.seq, a.windows)
    probe = ids[: a.seq].unsqueeze(0).cuda()
    with torch.no_grad():
        base_logits = base(probe).logits.float()
    del base
    results = {}
    for out in a.outs:
        r = {}
        try:
            t0 = time.time()
            m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).cuda().eval()
            r["load_s"] = round(time.time() - t0, 2)
            r["quantizer"] = type(getattr(m, "hf_quantizer", None)).__name__
            r["ppl"] = ppl(m, ids, a.seq, a.windows)
            with torch.no_grad():
                lg = m(probe).logits.float()
            r["logits_cos"] = torch.nn.functional.cosine_similarity(lg.flatten(), base_logits.flatten(), dim=0).item()
            r["top1_agree"] = (lg.argmax(-1) == base_logits.argmax(-1)).float().mean().item()
            r["ok"] = True
            del m
        except Exception as e:  # noqa
            r["ok"] = False
            r["error"] = f"{type(e).__name__}: {e}"[:500]
            r["trace"] = traceback.format_exc()[-1500:]
        results[out] = r
        torch.cuda.empty_cache()
    report["transformers_results"] = results
    if a.vllm:
        vr = {}
        try:
            from vllm import LLM, SamplingParams
            for out in a.outs:
                try:
                    llm = LLM(model=out, gpu_memory_utilization=0.3, max_model_len=1024, enforce_eager=True)
                    o = llm.generate(["The history of the"], SamplingParams(max_tokens=16, temperature=0))
                    vr[out] = {"ok": True, "text": o[0].outputs[0].text}
                    del llm
                except Exception as e:  # noqa
                    vr[out] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        except Exception as e:  # noqa
            vr = {"error": f"vllm not importable: {e}"[:300]}
        report["vllm_results"] = vr
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
