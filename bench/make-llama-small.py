#!/usr/bin/env python3
"""Writes a Llama-architecture model of GPT-2-small size with random (seeded) weights for benchmarking.

Usage: python3 bench/make-llama-small.py [OUTDIR]   (default: bench/out/llama-small)

Shape: 12 layers, d_model 768, 12 query heads and 4 key/value heads (GQA, head_dim 64), SwiGLU
MLP of width 2048, RoPE (theta 10000), RMSNorm, vocab 32000, untied LM head: 124M parameters,
like GPT-2 small. Weights from the HF default init with torch.manual_seed(0) (values do not
matter for speed), saved as f32 safetensors. Does nothing if OUTDIR already holds the model.
"""
from make_small_common import write_random_model


def spec():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )
    return LlamaForCausalLM, config


if __name__ == "__main__":
    write_random_model("llama-small", spec)
