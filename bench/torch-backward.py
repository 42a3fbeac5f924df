#!/usr/bin/env python3
"""Long-lived PyTorch CPU worker for the backward benchmarks (bench/backward-gpt2.ts,
bench/attribution-gpt2.ts, bench/seeds-gpt2.ts): HF transformers + torch hooks + autograd.

Usage: python3 bench/torch-backward.py MODEL_DIR --mode backward|attribution|seeds
           [--seq 128] [--batch 1] [--threads 2] [--seeds 64] [--layer 6] [--seed 0]

Loads the GPT-2 model at MODEL_DIR in f32 with every parameter frozen (requires_grad False:
no weight gradients, as neurotap computes none), draws fixed random inputs, prints
{"ready": ...} with the inputs, then answers one stdin command per line with one JSON line.
Timing replies are {"seconds": wall, "cpu": this process's CPU seconds}. Commands:

backward mode (one [batch, seq] input, metric logitDiff at the last position):
  fwd_all     forward under inference_mode, logits at every position
  fwd_last    forward under inference_mode, logits at the last position (logits_to_keep=1)
  bwd         forward (logits_to_keep=1) with every block's input (hook_resid_pre) made a
              graph node with retain_grad(), metric.backward(): the 12 gradients
  check       the metric and the bwd gradients (row 0: first 32 values at the first and the
              last position, max |g| and the sum of squares per layer)
attribution mode (clean and corrupted [batch, seq] inputs, per-row logitDiff at the last position):
  attr        clean forward (no_grad) caching hook_resid_pre, attn.hook_z, hook_mlp_out of every
              layer; corrupted forward with those tensors retained, metric.backward(); scores
              (clean - corrupted) * grad summed over the last axis (per head for hook_z)
  check       the scores of every hook and both metrics
seeds mode (one [1, seq] input, S random seeds at blocks.LAYER.hook_resid_mid, gradient at
blocks.0.hook_resid_pre; the forward stops after block LAYER as stop_at_layer would):
  loop        one forward, S torch.autograd.grad calls with retain_graph=True
  batched     one forward, one torch.autograd.grad with is_grads_batched=True
  check       gradients of seeds 0 and S-1 (first 32 values at the first and last position, max |g|)
"quit" or EOF ends the worker. It does nothing between commands, so the driver alternates it
with neurotap without the two computing at the same time.
"""
import argparse
import json
import sys
import time


class Stop(Exception):
    """Raised by a hook to end the forward early (TransformerLens's stop_at_layer)."""


def summary(g):
    """A gradient [b, p, w]: row 0's first 32 values at the first and last position, max |g|, sum of squares."""
    g = g.detach()
    return {
        "first": g[0, 0, :32].tolist(),
        "last": g[0, -1, :32].tolist(),
        "max_abs": g.abs().max().item(),
        "sumsq": float((g.double() ** 2).sum().item()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--mode", required=True, choices=["backward", "attribution", "seeds"])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    import transformers
    from torch_common import load_causal_lm

    model = load_causal_lm(args.model_dir, args.threads)
    model.requires_grad_(False)
    cfg = model.config
    blocks = model.transformer.h
    L = len(blocks)
    gen = torch.Generator().manual_seed(args.seed)
    B, T, V = args.batch, args.seq, cfg.vocab_size
    ids = torch.randint(0, V, (B, T), generator=gen)
    a_tok = torch.randint(0, V, (B,), generator=gen)
    c_tok = (a_tok + 1 + torch.randint(0, V - 1, (B,), generator=gen)) % V
    rows = torch.arange(B)

    # Hooks: state["mode"] says what they do. "grad": block inputs become graph nodes that keep
    # their gradient; "cache": tensors are stored; None: nothing.
    state = {"mode": None, "acts": {}, "stop": None}

    def keep(name, x):
        if state["mode"] == "grad":
            if not x.requires_grad:  # block 0's input: the frozen embeddings give a plain tensor
                x = x.detach().requires_grad_()
            else:
                x.retain_grad()
        if state["mode"] is not None:
            state["acts"][name] = x
        return x

    def pre_block(i):
        def hook(module, a):
            if state["stop"] == i:
                raise Stop()
            return (keep(f"blocks.{i}.hook_resid_pre", a[0]),) + tuple(a[1:])
        return hook

    def pre_z(i):
        def hook(module, a):
            return (keep(f"blocks.{i}.attn.hook_z", a[0]),) + tuple(a[1:])
        return hook

    def post_mlp(i):
        def hook(module, a, out):
            return keep(f"blocks.{i}.hook_mlp_out", out)
        return hook

    def pre_ln2(i):  # ln_2's input is the residual stream between attention and MLP
        def hook(module, a):
            return (keep(f"blocks.{i}.hook_resid_mid", a[0]),) + tuple(a[1:])
        return hook

    for i, blk in enumerate(blocks):
        blk.register_forward_pre_hook(pre_block(i))
        if args.mode == "attribution":
            blk.attn.c_proj.register_forward_pre_hook(pre_z(i))
            blk.mlp.register_forward_hook(post_mlp(i))
        if args.mode == "seeds" and i == args.layer:
            blk.ln_2.register_forward_pre_hook(pre_ln2(i))

    def timed(fn):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}, out

    def metric_rows(logits):  # logits [B, P, V]: logitDiff at the last position, per row
        return logits[rows, -1, a_tok] - logits[rows, -1, c_tok]

    info = {"ready": True, "input_ids": ids.tolist(), "correct": a_tok.tolist(), "wrong": c_tok.tolist()}

    if args.mode == "backward":
        def fwd(keep_last):
            with torch.inference_mode():
                state["mode"] = None
                return model(ids, use_cache=False, logits_to_keep=1 if keep_last else 0).logits

        def bwd():
            state["mode"], state["acts"] = "grad", {}
            logits = model(ids, use_cache=False, logits_to_keep=1).logits
            m = metric_rows(logits).sum()
            m.backward()
            state["mode"] = None
            return m.item(), [state["acts"][f"blocks.{i}.hook_resid_pre"].grad for i in range(L)]

        commands = {
            "fwd_all": lambda: timed(lambda: fwd(False))[0],
            "fwd_last": lambda: timed(lambda: fwd(True))[0],
            "bwd": lambda: timed(bwd)[0],
            "check": lambda: (lambda r: {"metric": r[0], "grads": [summary(g) for g in r[1]]})(bwd()),
        }
    elif args.mode == "attribution":
        corrupted = ids.clone()
        # The corrupted input: the clean one with a random token at a third of the positions.
        flip = torch.rand((B, T), generator=gen) < 1 / 3
        corrupted[flip] = torch.randint(0, V, (int(flip.sum()),), generator=gen)
        info["corrupted_ids"] = corrupted.tolist()
        names = [f"blocks.{i}.{h}" for i in range(L) for h in ("hook_resid_pre", "attn.hook_z", "hook_mlp_out")]

        def attr():
            with torch.no_grad():
                state["mode"], state["acts"] = "cache", {}
                m_clean = metric_rows(model(ids, use_cache=False, logits_to_keep=1).logits)
                clean = state["acts"]
            state["mode"], state["acts"] = "grad", {}
            m_corr = metric_rows(model(corrupted, use_cache=False, logits_to_keep=1).logits)
            m_corr.sum().backward()
            acts = state["acts"]
            state["mode"] = None
            scores = {}
            with torch.no_grad():
                for n in names:
                    s = (clean[n] - acts[n]) * acts[n].grad
                    if n.endswith("hook_z"):  # [b, p, H * d_head] -> per head
                        s = s.view(B, T, cfg.n_head, -1)
                    scores[n] = s.sum(-1)
            return m_clean, m_corr, scores

        def check():
            mc, mk, scores = attr()
            return {"metric_clean": mc.tolist(), "metric_corrupted": mk.tolist(), "scores": {n: s.flatten().tolist() for n, s in scores.items()}}

        commands = {"attr": lambda: timed(attr)[0], "check": check}
    else:
        S, layer = args.seeds, args.layer
        seeds = torch.randn((S, B, T, cfg.n_embd), generator=gen)
        # The seeds go to the driver as raw float32 (little-endian) in a file: too many for JSON.
        import os
        import tempfile
        fd, path = tempfile.mkstemp(prefix="neurotap-seeds-", suffix=".f32")
        with os.fdopen(fd, "wb") as f:
            f.write(seeds.numpy().astype("<f4").tobytes())
        info["seeds_file"] = path

        def forward():
            state["mode"], state["acts"], state["stop"] = "grad", {}, layer + 1
            try:
                model(ids, use_cache=False)
            except Stop:
                pass
            state["mode"], state["stop"] = None, None
            return state["acts"]["blocks.0.hook_resid_pre"], state["acts"][f"blocks.{layer}.hook_resid_mid"]

        def loop():
            x, y = forward()
            return torch.stack([torch.autograd.grad(y, x, grad_outputs=seeds[s], retain_graph=s < S - 1)[0] for s in range(S)])

        def batched():
            x, y = forward()
            return torch.autograd.grad(y, x, grad_outputs=seeds, is_grads_batched=True)[0]

        def check():
            g = loop()
            out = {"loop": [summary(g[0]), summary(g[-1])]}
            try:
                gb = batched()
                out["batched"] = [summary(gb[0]), summary(gb[-1])]
                out["batched_vs_loop_max_abs_diff"] = (gb - g).abs().max().item()
            except Exception as e:  # noqa: BLE001: reported to the driver
                out["batched_error"] = f"{type(e).__name__}: {e}"[:400]
            return out

        commands = {"loop": lambda: timed(loop)[0], "batched": lambda: timed(batched)[0], "check": check}

    info.update({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
    })
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if not cmd:
            continue
        try:
            reply = commands[cmd]() if cmd in commands else {"error": f"unknown command {cmd!r}"}
        except Exception as e:  # noqa: BLE001: reported to the driver
            reply = {"error": f"{cmd}: {type(e).__name__}: {e}"[:2000]}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
