#!/usr/bin/env python3
"""Writes random 32x SAEs (d_sae 24576) for the GPT-2-small bench model, with realistic sparsity.

Usage: python3 bench/make-sae-gpt2.py [MODEL_DIR] [OUTDIR] [--threads 2]
       (defaults: bench/out/gpt2-small, bench/out/sae-gpt2-small-32x)

Writes three SAELens (v6 layout) directories at blocks.6.hook_resid_pre, sharing one encoder
and decoder, and a file of alternative encoder biases:

  OUTDIR/standard/   ReLU SAE,   b_enc = -t64         (L0 about 64 on random tokens)
  OUTDIR/jumprelu/   JumpReLU,   b_enc = 0, threshold = t64
  OUTDIR/topk/       TopK k=64,  b_enc = 0
  OUTDIR/l0-sweep.safetensors    b_enc_l0_{16,64,256,1024} = -t16, -t64, ... for a standard SAE
  OUTDIR/meta.json               the calibration figures

Weights (torch.manual_seed(0)): W_dec rows are random unit vectors (entries ~ 1/sqrt(768)) and
W_enc = W_dec^T, as SAELens initializes. b_dec is the mean of the calibration activations.
t_L[j] is a per-feature threshold on (x - b_dec) @ W_enc[:, j], put where feature j fires on a
fraction L / d_sae of the calibration tokens, so a token has about L features firing. The
calibration tokens are 8 x 1024 random ids (seed 12345), not the benchmark's (seed 0); their
hook activation is hidden_states[6] of the HF model (the input to block 6 = hook_resid_pre).
Does nothing if OUTDIR/meta.json exists.
"""
import argparse
import json
import os
import sys

D_SAE = 24576
HOOK = "blocks.6.hook_resid_pre"
LAYER = 6
L0_TARGETS = (16, 64, 256, 1024)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", nargs="?", default=os.path.join(here, "out", "gpt2-small"))
    ap.add_argument("out", nargs="?", default=os.path.join(here, "out", "sae-gpt2-small-32x"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if os.path.isfile(os.path.join(out, "meta.json")):
        print(f"exists: {out}", file=sys.stderr)
        return

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    d = model.config.n_embd

    # Calibration activations at the hook.
    gen = torch.Generator().manual_seed(12345)
    ids = torch.randint(0, model.config.vocab_size, (8, 1024), generator=gen)
    xs = []
    with torch.inference_mode():
        for row in ids:
            hs = model(row[None], use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states
            xs.append(hs[LAYER][0].clone())
    x = torch.cat(xs)  # [N, d]
    n = x.shape[0]

    torch.manual_seed(0)
    W_dec = torch.randn(D_SAE, d)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.T.contiguous()  # [d, d_sae]
    b_dec = x.mean(0)
    u = x - b_dec

    # Per-feature thresholds: feature j fires on r = round(n * L / d_sae) calibration tokens.
    ranks = {L: round(n * L / D_SAE) for L in L0_TARGETS}
    kmax = max(ranks.values()) + 1
    thr = {L: torch.empty(D_SAE) for L in L0_TARGETS}
    hstd = []
    with torch.inference_mode():
        for j0 in range(0, D_SAE, 4096):
            h = u @ W_enc[:, j0 : j0 + 4096]  # [n, 4096]
            hstd.append(h.std().item())
            top = h.topk(kmax, dim=0).values  # [kmax, 4096], descending
            for L, r in ranks.items():
                thr[L][j0 : j0 + 4096] = 0.5 * (top[r - 1] + top[r])
        l0_cal = {}
        for L in L0_TARGETS:
            fired = 0
            for j0 in range(0, D_SAE, 4096):
                fired += ((u @ W_enc[:, j0 : j0 + 4096]) > thr[L][j0 : j0 + 4096]).sum().item()
            l0_cal[L] = fired / n

    t64 = thr[64]
    zeros = torch.zeros(D_SAE)
    base = {"W_enc": W_enc, "W_dec": W_dec.contiguous(), "b_dec": b_dec.contiguous()}
    variants = {
        "standard": ({"architecture": "standard"}, {"b_enc": (-t64).contiguous()}),
        "jumprelu": ({"architecture": "jumprelu"}, {"b_enc": zeros, "threshold": t64.contiguous()}),
        "topk": ({"architecture": "topk", "k": 64}, {"b_enc": zeros}),
    }
    for name, (arch, extra) in variants.items():
        sub = os.path.join(out, name)
        os.makedirs(sub, exist_ok=True)
        cfg = {
            **arch,
            "d_in": d,
            "d_sae": D_SAE,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {"hook_name": HOOK, "model_name": "gpt2-small-random (bench/make-gpt2-small.py)"},
        }
        with open(os.path.join(sub, "cfg.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        save_file({**base, **extra}, os.path.join(sub, "sae_weights.safetensors"))
    save_file({f"b_enc_l0_{L}": (-thr[L]).contiguous() for L in L0_TARGETS}, os.path.join(out, "l0-sweep.safetensors"))
    meta = {
        "hook": HOOK,
        "d_in": d,
        "d_sae": D_SAE,
        "calibration_tokens": n,
        "calibration_seed": 12345,
        "weight_seed": 0,
        "x_norm_mean": x.norm(dim=1).mean().item(),
        "u_norm_mean": u.norm(dim=1).mean().item(),
        "preact_std": sum(hstd) / len(hstd),
        "threshold_mean": {str(L): thr[L].mean().item() for L in L0_TARGETS},
        "l0_on_calibration": {str(L): l0_cal[L] for L in L0_TARGETS},
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta), file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
