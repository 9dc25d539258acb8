#!/usr/bin/env python3
"""Regenerates the tiny random checkpoints of the model families beyond Llama (Gemma, Phi, sliding-window
Qwen2, MoE, fused-expert MoE and vision-language) with Hugging Face transformers (5.17) and PyTorch, each with
the reference forward that the runtime parity tests compare against.

Run where transformers is installed (the GPU machine):
  python3 make_family_reference.py OUT [NAME...]

Writes OUT/<name>/ (config.json, model.safetensors, any processor files, reference.json) for every family and
OUT/family_models.tar holding them all. reference.json: the input ids of a few sequences and, per sequence, the
fp32 CPU forward (weights bf16 as stored, math in float32, eager attention): next-token log-probs, last-position
logits and the RMS of each hidden state transformers returns. A family that fails to build is reported and
skipped; the others are still written.
"""
import io
import json
import math
import os
import sys
import tarfile
import traceback

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

torch.set_float32_matmul_precision("highest")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
print("transformers", transformers.__version__, "torch", torch.__version__, flush=True)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 0:
                continue
            if "norm" in name and name.endswith("weight"):
                # Gemma norms scale by (1 + w): both forms get a weight near 1 with some spread.
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") or name.endswith("sinks"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                # Fused 3-D experts store [experts, in, out] or [experts, out, in] by family: the geometric mean
                # of the two gives a similar scale either way.
                fan_in = math.sqrt(p.shape[-1] * p.shape[-2]) if p.dim() == 3 else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(fan_in)))


common = dict(vocab_size=128, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=512, rms_norm_eps=1e-5)


def text(**kw):
    d = dict(common)
    d.update(kw)
    return d


# name -> (model_type, kwargs, architecture, extra)
families = {
    "tiny-gemma2": ("gemma2", text(num_key_value_heads=2, head_dim=16, num_hidden_layers=3, sliding_window=8,
                                   query_pre_attn_scalar=24, attn_logit_softcapping=50.0,
                                   final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh",
                                   rms_norm_eps=1e-6), "Gemma2ForCausalLM"),
    "tiny-gemma3": ("gemma3_text", text(num_key_value_heads=2, head_dim=16, num_hidden_layers=3, sliding_window=8,
                                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                        query_pre_attn_scalar=24, hidden_activation="gelu_pytorch_tanh",
                                        rope_parameters={
                                            "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0,
                                                               "factor": 8.0},
                                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                                        rms_norm_eps=1e-6), "Gemma3ForCausalLM"),
    "tiny-phi3": ("phi3", text(num_key_value_heads=4, pad_token_id=0, tie_word_embeddings=False,
                               original_max_position_embeddings=32,
                               rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                "short_factor": [1.0 + 0.1 * i for i in range(8)],
                                                "long_factor": [1.0 + 0.5 * i for i in range(8)],
                                                "original_max_position_embeddings": 32}), "Phi3ForCausalLM"),
    "tiny-phi4mini": ("phi3", text(num_key_value_heads=2, pad_token_id=0, tie_word_embeddings=True, partial_rotary_factor=0.75,
                                   original_max_position_embeddings=32,
                                   rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                    "partial_rotary_factor": 0.75,
                                                    "short_factor": [1.0 + 0.1 * i for i in range(6)],
                                                    "long_factor": [1.0 + 0.5 * i for i in range(6)],
                                                    "original_max_position_embeddings": 32}), "Phi3ForCausalLM"),
    "tiny-qwen2-swa": ("qwen2", text(num_key_value_heads=2, num_hidden_layers=3, use_sliding_window=True,
                                     sliding_window=8, max_window_layers=1, tie_word_embeddings=False),
                       "Qwen2ForCausalLM"),
    "tiny-qwen3moe": ("qwen3_moe", text(num_key_value_heads=2, head_dim=16, num_hidden_layers=3, num_experts=4,
                                        num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                                        decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=False),
                      "Qwen3MoeForCausalLM"),
    "tiny-qwen3moe-nonorm": ("qwen3_moe", text(num_key_value_heads=2, head_dim=16, num_experts=8,
                                               num_experts_per_tok=2, moe_intermediate_size=24,
                                               norm_topk_prob=False, decoder_sparse_step=2,
                                               num_hidden_layers=3, tie_word_embeddings=True),
                             "Qwen3MoeForCausalLM"),
    "tiny-mixtral": ("mixtral", text(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                                     tie_word_embeddings=False), "MixtralForCausalLM"),
    "tiny-qwen2moe": ("qwen2_moe", text(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                                        moe_intermediate_size=32, shared_expert_intermediate_size=48,
                                        norm_topk_prob=False, decoder_sparse_step=1, tie_word_embeddings=False),
                      "Qwen2MoeForCausalLM"),
    "tiny-gptoss": ("gpt_oss", text(num_key_value_heads=2, head_dim=16, num_local_experts=4,
                                    num_experts_per_tok=2, intermediate_size=32, sliding_window=8,
                                    layer_types=["sliding_attention", "full_attention"],
                                    tie_word_embeddings=False), "GptOssForCausalLM"),
    "tiny-llama4text": ("llama4_text", text(num_key_value_heads=2, head_dim=16, num_local_experts=4,
                                            num_experts_per_tok=1, intermediate_size=32,
                                            intermediate_size_mlp=80, interleave_moe_layer_step=1,
                                            tie_word_embeddings=False), "Llama4ForCausalLM"),
}

vl = {
    "tiny-qwen25vl": ("qwen2_5_vl", dict(
        text_config=text(num_key_value_heads=2, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0]),
        image_token_id=120, video_token_id=121, vision_start_token_id=122, vision_end_token_id=123),
        "Qwen2_5_VLForConditionalGeneration"),
    "tiny-gemma3vl": ("gemma3", dict(
        text_config=text(num_key_value_heads=2, head_dim=16, num_hidden_layers=2, sliding_window=8,
                         query_pre_attn_scalar=24, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=120, boi_token_index=121, eoi_token_index=122),
        "Gemma3ForConditionalGeneration"),
    "tiny-mistral3": ("mistral3", dict(
        text_config=dict(model_type="mistral", **text(num_key_value_heads=2, head_dim=16)),
        vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=16, image_size=56, patch_size=14),
        image_token_index=120, spatial_merge_size=2), "Mistral3ForConditionalGeneration"),
}

g = torch.Generator().manual_seed(11)
seqs = [torch.randint(0, 118, (40,), generator=g).tolist(), torch.randint(0, 118, (24,), generator=g).tolist()]


def model_class(arch):
    return getattr(transformers, arch)


@torch.no_grad()
def forward_ref(model, ids):
    x = torch.tensor([ids])
    o = model(input_ids=x, output_hidden_states=True)
    logits = o.logits.float()[0]
    lp = torch.log_softmax(logits, dim=-1)
    nxt = lp[:-1].gather(1, x[0, 1:, None])[:, 0]
    hs = o.hidden_states if o.hidden_states is not None else ()
    rms = [h[0].float().pow(2).mean(-1).sqrt().tolist() for h in hs]
    return {"next_token_logprobs": nxt.tolist(), "last_logits": logits[-1].tolist(), "hidden_state_rms": rms}


def build(name, model_type, kwargs, arch, seed):
    cfg = AutoConfig.for_model(model_type, **kwargs)
    cfg.architectures = [arch]
    torch.manual_seed(seed)
    m = model_class(arch)._from_config(cfg, dtype=torch.float32)
    randomize(m, seed)
    m = m.to(torch.bfloat16)
    d = os.path.join(out, name)
    m.save_pretrained(d)
    gc = os.path.join(d, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    r = model_class(arch).from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    res = {"source": "engine/model/testdata/make_family_reference.py: transformers %s, torch %s; fp32 CPU forward of "
                     "bf16 weights, eager attention" % (transformers.__version__, torch.__version__),
           "input_ids": seqs, "next_token_logprobs": [], "last_logits": [], "hidden_state_rms": []}
    for s in seqs:
        f = forward_ref(r, s)
        for k in ("next_token_logprobs", "last_logits", "hidden_state_rms"):
            res[k].append(f[k])
    # What the parity tests must see the family's features matter for.
    if "sliding_window" in json.dumps(json.load(open(os.path.join(d, "config.json")))):
        try:
            nw = model_class(arch).from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
            tc = nw.config.get_text_config()
            if getattr(tc, "layer_types", None):
                tc.layer_types = ["full_attention"] * len(tc.layer_types)
            else:
                tc.sliding_window = None
            f = forward_ref(nw.eval(), seqs[0])
            res["effect_of_sliding_window"] = max(abs(a - b) for a, b in
                                                  zip(f["next_token_logprobs"], res["next_token_logprobs"][0]))
        except Exception as e:  # informative only
            res["effect_of_sliding_window"] = "not measured: %s" % e
    res["state_dict"] = {k: list(v.shape) for k, v in r.state_dict().items()}
    json.dump(res, open(os.path.join(d, "reference.json"), "w"))
    print(name, "saved", sorted(os.listdir(d)), "window effect", res.get("effect_of_sliding_window"), flush=True)
    return d


ok = []
only = set(sys.argv[2:])
for i, (name, (mt, kw, arch)) in enumerate(list(families.items()) + list(vl.items())):
    if only and name not in only:
        continue
    try:
        ok.append((name, build(name, mt, kw, arch, 200 + i)))
    except Exception:
        print(name, "FAILED", flush=True)
        traceback.print_exc()
        sys.stdout.flush()

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tar:
    for name, d in ok:
        for fn in sorted(os.listdir(d)):
            tar.add(os.path.join(d, fn), arcname=f"{name}/{fn}")
open(os.path.join(out, "family_models.tar"), "wb").write(buf.getvalue())
print("done", [n for n, _ in ok])
