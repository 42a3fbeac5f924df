#!/usr/bin/env python3
"""Long-lived PyTorch CPU worker for bench/forward-gpt2.ts.

Usage: python3 bench/torch-forward.py MODEL_DIR [--seq 1024] [--batch 1] [--threads 2] [--dtype f32|bf16] [--seed 0]

Loads MODEL_DIR with transformers (eval, inference_mode; parameters in float32, or with --dtype
bf16 in bfloat16, so that PyTorch computes in bf16), sets torch to --threads
intra-op threads, runs one warm-up forward, then prints {"ready": ...} on stdout (with the
input ids and the first 16 logits of the last position, for a cross-check). After that,
every stdin line "run" times one full forward, model(input_ids, use_cache=False).logits
(LM head included; no KV cache is built, as neurotap builds none),
on a fixed random [batch, seq] input and prints {"seconds": s, "cpu": this process's CPU s} as
one JSON line (the driver subtracts the CPU time from the machine's to see other processes' load). It does
nothing between commands, so the driver can alternate it with another engine without the
two computing at the same time. EOF or "quit" on stdin ends it.
"""
import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=0, help="ignored (the driver sends one 'run' per rep)")
    args = ap.parse_args()

    import torch
    import transformers
    from torch_common import load_causal_lm

    model = load_causal_lm(args.model_dir, args.threads, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen)

    def forward() -> tuple[float, float, torch.Tensor]:
        c0 = time.process_time()
        t0 = time.perf_counter()
        logits = model(input_ids, use_cache=False).logits
        dt = time.perf_counter() - t0
        assert logits.shape == (args.batch, args.seq, model.config.vocab_size)
        return dt, time.process_time() - c0, logits

    with torch.inference_mode():
        warm, _, logits = forward()
        info = {
            "ready": True,
            "warmup_seconds": warm,
            # The input and a few logits, so the driver can run the same tokens and check agreement.
            "input_ids": input_ids.tolist(),
            "logits_last_row_head": logits[0, -1, :16].float().tolist(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "dtype": str(next(model.parameters()).dtype),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "pid": os.getpid(),
        }
        print(json.dumps(info), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "run":
                seconds, cpu, _ = forward()
                print(json.dumps({"seconds": seconds, "cpu": cpu}), flush=True)
            elif cmd == "quit":
                break
            elif cmd:
                print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)


if __name__ == "__main__":
    main()
