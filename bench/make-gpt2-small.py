#!/usr/bin/env python3
"""Writes a GPT-2-small-shaped model with random (seeded) weights for benchmarking.

Usage: python3 bench/make-gpt2-small.py [OUTDIR]   (default: bench/out/gpt2-small)

The shape is GPT-2 small (12 layers, d_model 768, 12 heads, vocab 50257, 1024 positions,
124M parameters with tied embeddings). Weights come from the Hugging Face default init with
torch.manual_seed(0): the values do not matter for speed. Saved as f32 safetensors with
save_pretrained. Does nothing if OUTDIR already holds config.json and model.safetensors.
"""
from make_small_common import write_random_model


def spec():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, n_ctx=1024)
    return GPT2LMHeadModel, config


if __name__ == "__main__":
    write_random_model("gpt2-small", spec)
