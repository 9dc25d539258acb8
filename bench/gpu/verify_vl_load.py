#!/usr/bin/env python3
"""Loads llmc outputs of vision-language checkpoints with Hugging Face transformers (compressed-tensors) and checks
what llmc promises (docs/formats.md, "Vision-language checkpoints"): the model class of architectures[0] loads the
output; every vision / projector parameter equals the original's; the text decoder's Linears carry a quantization
scheme and the vision parts and lm_head none; the text-only forward stays close to the original's.

usage: verify_vl_load.py ORIGINAL OUT_DIR... [--device cuda]
e.g. for the tiny checkpoints, after
  llmc compress engine/model/testdata/tiny-qwen25vl /tmp/qwen-w8a8 --scheme W8A8
Prints one JSON object; exits 1 if a check fails.
Where compressed-tensors is not installed, point CTCHECK_DIR at a copy of the ctcheck tool (../shared/tools/ctcheck):
its environment (compressed-tensors' source and stand-ins) is set up before transformers is imported."""
import argparse, json, os, sys, traceback

if os.environ.get("CTCHECK_DIR"):
    sys.path.insert(0, os.environ["CTCHECK_DIR"])
    import ctenv  # noqa: E402
    ctenv.setup()

import torch
import transformers


def load(path, arch, device):
    return getattr(transformers, arch).from_pretrained(path, dtype=torch.bfloat16).to(device).eval()


def vision_params(model):
    keys = ("visual", "vision_tower", "multi_modal_projector")
    return {n: p for n, p in model.named_parameters() if any(k in n for k in keys)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("outs", nargs="+")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    arch = json.load(open(f"{a.original}/config.json"))["architectures"][0]
    report = {"transformers": transformers.__version__, "architecture": arch, "outputs": {}}
    base = load(a.original, arch, a.device)
    ids = torch.arange(3, 3 + 24, device=a.device).unsqueeze(0) % 100
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits.float()
    base_vision = {n: p.detach().clone() for n, p in vision_params(base).items()}
    del base
    ok = True
    for out in a.outs:
        r = {}
        try:
            m = load(out, arch, a.device)
            vis = vision_params(m)
            r["vision_params"] = len(vis)
            r["vision_equal"] = all(n in vis and torch.equal(vis[n], p) for n, p in base_vision.items())
            schemes = {n: getattr(mod, "quantization_scheme", None) is not None for n, mod in m.named_modules()
                       if isinstance(mod, torch.nn.Linear) or hasattr(mod, "quantization_scheme")}
            r["quantized_text_linears"] = sum(v for n, v in schemes.items() if "language_model" in n or ".layers." in n)
            r["quantized_vision_or_lm_head"] = [n for n, v in schemes.items()
                                                if v and (n.endswith("lm_head") or any(
                                                    k in n for k in ("visual", "vision_tower", "multi_modal_projector")))]
            with torch.no_grad():
                logits = m(input_ids=ids).logits.float()
            r["relative_logits_change"] = ((logits - base_logits).norm() / base_logits.norm()).item()
            r["ok"] = (r["vision_equal"] and r["quantized_text_linears"] > 0 and not r["quantized_vision_or_lm_head"]
                       and r["relative_logits_change"] < 0.6)
        except Exception:  # noqa: BLE001 - reported, not raised
            r["error"] = traceback.format_exc(limit=3)
            r["ok"] = False
        ok &= r["ok"]
        report["outputs"][out] = r
    print(json.dumps(report, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
