#!/usr/bin/env python3
"""Writes a Llama-architecture model of GPT-2-small size with random (seeded) weights for benchmarking.

Usage: python3 bench/make-llama-small.py [OUTDIR]   (default: bench/out/llama-small)

Shape: 12 layers, d_model 768, 12 query heads and 4 key/value heads (GQA, head_dim 64), SwiGLU
MLP of width 2048, RoPE (theta 10000), RMSNorm, vocab 32000, untied LM head: 124M parameters,
like GPT-2 small. Weights from the HF default init with torch.manual_seed(0) (values do not
matter for speed), saved as f32 safetensors. Does nothing if OUTDIR already holds the model.
"""
import os
import sys


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(here, "out", "llama-small")
    if os.path.isfile(os.path.join(out, "config.json")) and os.path.isfile(os.path.join(out, "model.safetensors")):
        print(f"exists: {out}", file=sys.stderr)
        return

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out} ({n_params / 1e6:.1f}M parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
