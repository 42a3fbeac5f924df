#!/usr/bin/env python3
"""Benchmark E1 (extraction), baseline: HF transformers with output_hidden_states + .cpu().

Usage: python3 bench/gpu/hf_extract.py [--model DIR] [--dtype bf16|f32] [--attn sdpa|eager]
           [--tokens 1048576] [--seq 1024] [--batch 8] [--max-seconds 60] [--device cuda]

The same stream of token ids as bench/gpu/extract.ts ((i * 2654435761 + 12345) mod 2^32 mod
vocab), the same batches. Each batch runs the base model (GPT2Model: no LM head, as neurotap runs
with returnLogits: false) with output_hidden_states=True, then copies hidden_states[1:] (one
tensor per block: blocks 0..n-2's resid_post and, for GPT-2, ln_f of the last block's, the
same byte count as n resid_post) to the host with .cpu(), in the model's dtype. Times the whole
stream (stops early after --max-seconds), then a forward-only rate (no hidden states, no copy).
Prints a JSON line {"bench": "E1-extract", "engine": "hf", ...} including the RMS and first
values of block 10's resid_post of the first sequence (hidden_states[11]), which
bench/gpu/collect.py compares with neurotap's.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "bench", "out", "gpt2-small-bf16"))
    p.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa is HF's default; eager)")
    p.add_argument("--tokens", type=int, default=1 << 20)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--forward-only-batches", type=int, default=4)
    p.add_argument("--device", default="cuda")
    a = p.parse_args(argv)
    for k in ("tokens", "seq", "batch"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be positive")
    return a


def bench_tokens(start, batch, seq, vocab):
    return [[(((start + b * seq + t) * 2654435761 + 12345) & 0xFFFFFFFF) % vocab for t in range(seq)] for b in range(batch)]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"bench": "E1-extract", "engine": "hf", "error": "torch.cuda.is_available() is False"}))
        return 1
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t_load = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation=args.attn).to(dev).eval()
    base = model.base_model
    load_s = time.perf_counter() - t_load
    cfg = model.config
    vocab, n_layers, d = cfg.vocab_size, cfg.num_hidden_layers, cfg.hidden_size
    per_batch = args.batch * args.seq
    elem = torch.finfo(dtype).bits // 8
    bytes_per_token = n_layers * d * elem

    def ids_for(start):
        return torch.tensor(bench_tokens(start, args.batch, args.seq, vocab), dtype=torch.long).to(dev)

    def extract(ids):
        out = base(input_ids=ids, output_hidden_states=True, use_cache=False)
        return [h.cpu() for h in out.hidden_states[1:]]

    with torch.inference_mode():
        first = ids_for(0)
        sync()
        t = time.perf_counter()
        hs = extract(first)
        first_s = time.perf_counter() - t
        check_layer = max(0, min(10, n_layers - 2))
        h = hs[check_layer][0].float()  # hidden_states[check_layer + 1] = resid_post of block check_layer
        check = {"layer": check_layer, "rms_seq0": h.pow(2).mean().sqrt().item(),
                 "first4_pos0": h[0, :4].tolist(), "first4_last": h[-1, :4].tolist()}
        del hs
        times = []
        done = 0
        t0 = time.perf_counter()
        while done < args.tokens and time.perf_counter() - t0 < args.max_seconds:
            ids = ids_for(done)
            s = time.perf_counter()
            extract(ids)  # .cpu() synchronizes
            times.append(time.perf_counter() - s)
            done += per_batch
        seconds = time.perf_counter() - t0
        fwd = []
        for _ in range(args.forward_only_batches):
            sync()
            s = time.perf_counter()
            base(input_ids=first, use_cache=False)
            sync()
            fwd.append(time.perf_counter() - s)
    times.sort()
    fwd.sort()
    result = {
        "bench": "E1-extract", "engine": "hf", "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "weights_dtype": args.dtype, "capture_dtype": args.dtype, "attn_implementation": args.attn,
        "model": os.path.abspath(args.model), "layers": n_layers, "d_model": d, "seq": args.seq, "batch": args.batch,
        "tokens_requested": args.tokens, "tokens": done, "complete": done >= args.tokens, "seconds": seconds,
        "tokens_per_s": done / seconds if seconds > 0 else None,
        "captured_bytes_per_token": bytes_per_token, "capture_GBps": done * bytes_per_token / seconds / 1e9,
        "batch_seconds_median": times[len(times) // 2] if times else None,
        "batch_seconds_min": times[0] if times else None, "batch_seconds_max": times[-1] if times else None,
        "first_batch_seconds": first_s,
        "forward_only_tokens_per_s": per_batch / fwd[len(fwd) // 2] if fwd else None,
        "load_seconds": load_s, "check": check,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"hf ({args.dtype}, {args.attn}): {done} tokens in {seconds:.2f} s = {result['tokens_per_s']:.0f} tokens/s "
          f"({result['capture_GBps']:.2f} GB/s of captures); forward only {result['forward_only_tokens_per_s'] or 0:.0f} tokens/s", flush=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
