#!/usr/bin/env python3
"""Long-lived PyTorch CPU worker for bench/sae-overhead.ts: GPT-2 forwards with a dense SAE at a hook.

Usage: python3 bench/torch-sae.py MODEL_DIR SAE_DIR [--seq 1024] [--batch 1] [--threads 2] [--seed 0]

Loads MODEL_DIR with transformers (GPT2LMHeadModel, f32, eval, inference_mode) and the SAEs that
bench/make-sae-gpt2.py wrote under SAE_DIR (standard/, jumprelu/, topk/: SAELens v6 directories,
read with safetensors), sets torch to --threads intra-op threads, and registers a forward
pre-hook on transformer.h[6] (its input is TransformerLens's blocks.6.hook_resid_pre). The hook
runs the SAELens inference math densely in torch (docs/SAE-MATH.md):

  s    = x - b_dec                              (apply_b_dec_to_input)
  pre  = s @ W_enc + b_enc
  acts = relu(pre)                              standard
         relu(pre) * (pre > threshold)          jumprelu
         scatter(topk(pre, k), relu)            topk (torch.topk(sorted=False), as SAELens)
  out  = acts @ W_dec + b_dec                   (dense decode, as SAELens)

and, per config, replaces the block's input with:

  plain          nothing (no hook work)
  standard       out (spliced, no error term)
  error          out + (x - out): the error term from this pass's reconstruction (what an
                 implementation that knows nothing was edited can do; == x up to rounding)
  error_saelens  out + (x - out_clean) with out_clean from a second encode/decode of x, as
                 SAELens does for use_error_term=True (it re-runs the SAE with hooks disabled)
  jumprelu, topk out with that SAE (spliced)
  features       standard, plus torch.topk(acts, 32) per token (the k largest features)

Prints {"ready": ...} (input ids, versions) after one warm-up forward. Then each stdin line
"run CONFIG" times one full forward, model(input_ids, use_cache=False).logits (LM head
included), and prints {"seconds": s}; "check CONFIG" runs one untimed forward and prints the
first 16 logits of row 0's last position, the SAE's L0 per token (mean/median/min/max of
count(acts > 0)), and with "features" the top-32 indices of row 0's last position. It does
nothing between commands, so the driver alternates it with neurotap. EOF or "quit" ends it.
"""
import argparse
import json
import os
import sys
import time

CONFIGS = ("plain", "standard", "error", "error_saelens", "jumprelu", "topk", "features")
LAYER = 6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("sae_dir")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    import transformers
    from safetensors.torch import load_file
    from torch_common import load_causal_lm

    model = load_causal_lm(args.model_dir, args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen)

    saes = {}
    for name in ("standard", "jumprelu", "topk"):
        with open(os.path.join(args.sae_dir, name, "cfg.json")) as f:
            cfg = json.load(f)
        w = load_file(os.path.join(args.sae_dir, name, "sae_weights.safetensors"))
        assert cfg["architecture"] == name and cfg["apply_b_dec_to_input"] is True
        assert cfg["metadata"]["hook_name"] == f"blocks.{LAYER}.hook_resid_pre"
        saes[name] = {"cfg": cfg, **{k: v.to(torch.float32).contiguous() for k, v in w.items()}}

    state = {"config": "plain", "check": None}

    def encode(sae, x):
        pre = (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
        arch = sae["cfg"]["architecture"]
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > sae["threshold"])
        vals, idx = pre.topk(sae["cfg"]["k"], dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def decode(sae, acts):
        return acts @ sae["W_dec"] + sae["b_dec"]

    def hook(_module, hook_args):
        config = state["config"]
        if config == "plain":
            return None
        x = hook_args[0]
        sae = saes["jumprelu" if config == "jumprelu" else "topk" if config == "topk" else "standard"]
        acts = encode(sae, x)
        out = decode(sae, acts)
        if config == "error":
            out = out + (x - out)
        elif config == "error_saelens":
            clean = decode(sae, encode(sae, x))
            out = out + (x - clean)
        feats = acts.topk(32, dim=-1) if config == "features" else None
        if state["check"] is not None:
            l0 = (acts > 0).sum(-1).flatten().to(torch.float64)
            state["check"] = {
                "l0_mean": l0.mean().item(),
                "l0_median": l0.median().item(),
                "l0_min": l0.min().item(),
                "l0_max": l0.max().item(),
                **({"top32_last": feats.indices[0, -1].tolist()} if feats is not None else {}),
            }
        return (out,) + tuple(hook_args[1:])

    model.transformer.h[LAYER].register_forward_pre_hook(hook)

    def forward() -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        logits = model(input_ids, use_cache=False).logits
        dt = time.perf_counter() - t0
        assert logits.shape == (args.batch, args.seq, model.config.vocab_size)
        return dt, logits

    with torch.inference_mode():
        warm, _ = forward()
        print(
            json.dumps(
                {
                    "ready": True,
                    "warmup_seconds": warm,
                    "input_ids": input_ids.tolist(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "threads": torch.get_num_threads(),
                    "attn_implementation": getattr(model.config, "_attn_implementation", None),
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "quit":
                break
            if parts[0] not in ("run", "check") or len(parts) != 2 or parts[1] not in CONFIGS:
                print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
                continue
            state["config"] = parts[1]
            if parts[0] == "run":
                print(json.dumps({"seconds": forward()[0]}), flush=True)
            else:
                state["check"] = {}
                _, logits = forward()
                info = {"logits_last_row_head": logits[0, -1, :16].tolist(), **state["check"]}
                state["check"] = None
                print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
