#!/usr/bin/env python3
"""Benchmark D1 (decode), baseline: HF transformers generate, batch 1, greedy, with and
without a steering vector added to one decoder layer's output.

Usage: python3 bench/gpu/hf_decode.py [--model DIR] [--dtype bf16] [--attn eager|sdpa]
           [--prompt-len 32] [--new-tokens 128] [--reps 3] [--layer 8] [--scale 4]
           [--max-seconds 120] [--device cuda]

The prompt is the benchmark stream's first ids ((i * 2654435761 + 12345) mod 2^32 mod vocab), as
in bench/gpu/decode.ts. generate runs with do_sample=False and min_new_tokens = max_new_tokens
(no early stop), HF's default dynamic KV cache, attn_implementation eager by default (the
issue's baseline; --attn sdpa for HF's default kernel). A streamer records the time of every
token (after a device synchronize); decode tokens/s = (new tokens - 1) / (t_last - t_first),
without the prefill. Steering: a forward hook on model.model.layers[L] adds scale * a unit vector
to the layer's output (= neurotap's blocks.L.hook_resid_post). Plain and steered runs
alternate. Prints a JSON line {"bench": "D1-decode", "engine": "hf", ...}.
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
    p.add_argument("--model", default=os.path.join(ROOT, "bench", "out", "llama-1b-bf16"))
    p.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    p.add_argument("--attn", default="eager")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--layer", type=int, default=8)
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda")
    a = p.parse_args(argv)
    if a.new_tokens < 2:
        p.error("--new-tokens must be at least 2")
    if a.prompt_len < 1 or a.reps < 1:
        p.error("--prompt-len and --reps must be positive")
    return a


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    transformers.logging.set_verbosity_error()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"bench": "D1-decode", "engine": "hf", "error": "torch.cuda.is_available() is False"}))
        return 1
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]

    t_load = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation=args.attn).to(dev).eval()
    load_s = time.perf_counter() - t_load
    cfg = model.config
    layers = model.model.layers
    layer = args.layer if 0 <= args.layer < len(layers) else len(layers) // 2
    vocab, d = cfg.vocab_size, cfg.hidden_size
    prompt = [((i * 2654435761 + 12345) & 0xFFFFFFFF) % vocab for i in range(args.prompt_len)]
    ids = torch.tensor([prompt], dtype=torch.long, device=dev)
    g = torch.Generator().manual_seed(7)
    v = torch.randn(d, generator=g)
    v = (v / v.norm() * args.scale).to(dev, dtype)

    def steer_hook(_mod, _inp, out):
        if isinstance(out, tuple):
            return (out[0] + v,) + tuple(out[1:])
        return out + v

    class Clock(BaseStreamer):
        def __init__(self):
            self.times = []
            self.tokens = []

        def put(self, value):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            self.tokens.append(value.reshape(-1).tolist())

        def end(self):
            pass

    def run(n, steered):
        handle = layers[layer].register_forward_hook(steer_hook) if steered else None
        clock = Clock()
        try:
            with torch.inference_mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=cfg.eos_token_id if isinstance(cfg.eos_token_id, int) else 0, streamer=clock)
        finally:
            if handle is not None:
                handle.remove()
        # times[0]: the prompt handed to the streamer; times[1]: first new token; times[-1]: last.
        new = [t for row in clock.tokens[1:] for t in row]
        if len(new) != n:
            raise RuntimeError(f"generated {len(new)} tokens, expected {n}")
        return {"prefill": clock.times[1] - clock.times[0], "decode": clock.times[-1] - clock.times[1], "tokens": new}

    for _ in range(args.warmup):
        run(min(8, args.new_tokens), False)
        run(min(8, args.new_tokens), True)
    plain, steered = [], []
    t0 = time.perf_counter()
    for r in range(args.reps):
        if time.perf_counter() - t0 > args.max_seconds and plain and steered:
            break
        order = (False, True) if r % 2 == 0 else (True, False)
        for s in order:
            (steered if s else plain).append(run(args.new_tokens, s))
        p, s = plain[-1], steered[-1]
        print(f"rep {r + 1}: plain {(args.new_tokens - 1) / p['decode']:.1f} tok/s (prefill {p['prefill'] * 1000:.1f} ms), "
              f"steered {(args.new_tokens - 1) / s['decode']:.1f} tok/s", flush=True)

    def med(xs):
        xs = sorted(xs)
        m = len(xs) // 2
        return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2

    per = [x["decode"] / (args.new_tokens - 1) for x in plain]
    sper = [x["decode"] / (args.new_tokens - 1) for x in steered]
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights counted once
    result = {
        "bench": "D1-decode", "engine": "hf", "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "weights_dtype": args.dtype, "attn_implementation": args.attn, "model": os.path.abspath(args.model),
        "layers": cfg.num_hidden_layers, "d_model": d, "vocab": vocab, "batch": 1,
        "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "reps": len(plain),
        "steer_layer": layer, "steer_scale": args.scale,
        "decode_tokens_per_s": 1 / med(per), "steered_decode_tokens_per_s": 1 / med(sper),
        "steering_overhead": med(sper) / med(per) - 1,
        "decode_seconds_per_token": per, "steered_seconds_per_token": sper,
        "prefill_seconds_median": med([x["prefill"] for x in plain]),
        "weight_bytes_per_token": n_bytes, "load_seconds": load_s,
        "greedy_head": plain[0]["tokens"][:16] if plain else [],
        "steered_differs": plain[0]["tokens"] != steered[0]["tokens"] if plain and steered else None,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"hf ({args.attn}): {result['decode_tokens_per_s']:.1f} tokens/s plain, {result['steered_decode_tokens_per_s']:.1f} steered "
          f"(overhead {result['steering_overhead'] * 100:.2f}%)", flush=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
