#!/usr/bin/env python3
"""Writes a GPT-2-small-shaped model with random (seeded) weights for benchmarking.

Usage: python3 bench/make-gpt2-small.py [OUTDIR]   (default: bench/out/gpt2-small)

The shape is GPT-2 small (12 layers, d_model 768, 12 heads, vocab 50257, 1024 positions,
124M parameters with tied embeddings). Weights come from the Hugging Face default init with
torch.manual_seed(0): the values do not matter for speed. Saved as f32 safetensors with
save_pretrained. Does nothing if OUTDIR already holds config.json and model.safetensors.
"""
import os
import sys


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(here, "out", "gpt2-small")
    if os.path.isfile(os.path.join(out, "config.json")) and os.path.isfile(os.path.join(out, "model.safetensors")):
        print(f"exists: {out}", file=sys.stderr)
        return

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, n_ctx=1024)
    model = GPT2LMHeadModel(config).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out} ({n_params / 1e6:.1f}M parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
