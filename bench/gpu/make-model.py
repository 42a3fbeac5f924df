#!/usr/bin/env python3
"""Writes a random-weight HF checkpoint of a benchmark shape, in bf16 (fast to write and load).

Usage: python3 bench/gpu/make-model.py SHAPE OUTDIR [--dtype bf16|f16|f32] [--seed 0] [--device auto]

Shapes:
  gpt2-small  GPT2LMHeadModel: 12 layers, d_model 768, 12 heads, vocab 50257, 1024 positions,
              tied embeddings (124M parameters). Benchmark E1 (extraction).
  llama-1b    LlamaForCausalLM shaped as Llama-3.2-1B: 16 layers, d_model 2048, 32 query / 8 kv
              heads (head_dim 64), d_mlp 8192, vocab 128256, tied embeddings, rope theta 500000
              with llama3 scaling (factor 32, original 8192), rms eps 1e-5 (1.24B parameters,
              2.47 GB in bf16). Benchmark D1 (decode).
  tiny-gpt2, tiny-llama
              2 layers, d_model 64: the same code paths in a second, to check the scripts
              without a GPU.

The parameter names and shapes come from the transformers model class itself (built on the
meta device, so nothing is allocated); the values are seeded normals with std 0.02 for
matrices and embeddings, ones for norm weights and zeros for biases. They are drawn on the GPU
when there is one (--device auto), so even the 1B model takes seconds. Values do not matter
for speed. Writes OUTDIR/config.json and OUTDIR/model.safetensors; does nothing if both exist
with the same shape and dtype (delete OUTDIR to rebuild). Prints one JSON line describing the
model (parameters, bytes).
"""
import argparse
import json
import os
import sys
import time

SHAPES = ("gpt2-small", "llama-1b", "tiny-gpt2", "tiny-llama")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shape", choices=SHAPES)
    p.add_argument("out")
    p.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="where to draw the random values: auto, cpu, cuda")
    return p.parse_args(argv)


def make_config(shape):
    from transformers import GPT2Config, LlamaConfig

    if shape in ("gpt2-small", "tiny-gpt2"):
        big = shape == "gpt2-small"
        return GPT2Config(
            n_layer=12 if big else 2,
            n_embd=768 if big else 64,
            n_head=12 if big else 4,
            vocab_size=50257 if big else 512,
            n_positions=1024 if big else 256,
            n_ctx=1024 if big else 256,
            tie_word_embeddings=True,
            bos_token_id=50256 if big else 0,
            eos_token_id=50256 if big else 0,
        )
    big = shape == "llama-1b"
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192 if big else 64, "rope_theta": 500000.0}
    return LlamaConfig(
        vocab_size=128256 if big else 512,
        hidden_size=2048 if big else 64,
        intermediate_size=8192 if big else 128,
        num_hidden_layers=16 if big else 2,
        num_attention_heads=32 if big else 4,
        num_key_value_heads=8 if big else 2,
        head_dim=64 if big else 16,
        max_position_embeddings=131072 if big else 1024,
        rms_norm_eps=1e-5,
        rope_parameters=rope,
        tie_word_embeddings=True,
        bos_token_id=128000 if big else 1,
        eos_token_id=128001 if big else 2,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )


def main(argv=None):
    args = parse_args(argv)
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    st_dtype = {"bf16": "BF16", "f16": "F16", "f32": "F32"}[args.dtype]
    out = os.path.abspath(args.out)
    cfg_path = os.path.join(out, "config.json")
    st_path = os.path.join(out, "model.safetensors")
    stamp = {"shape": args.shape, "dtype": args.dtype, "seed": args.seed}
    stamp_path = os.path.join(out, "neurotap-bench-model.json")
    if os.path.isfile(cfg_path) and os.path.isfile(st_path) and os.path.isfile(stamp_path):
        with open(stamp_path) as f:
            if json.load(f) == stamp:
                print(json.dumps({"bench": "make-model", "exists": out, **stamp}))
                return 0

    t0 = time.time()
    config = make_config(args.shape)
    config.dtype = dtype
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(args.seed)
    tensors = {}
    n_params = 0
    for name, p in meta.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # save_pretrained drops the tied head too
        if not p.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(k in name for k in ("ln_", "norm", "layernorm")) and p.dim() == 1
        if leaf == "bias":
            t = torch.zeros(p.shape, dtype=dtype, device=device)
        elif is_norm:
            t = torch.ones(p.shape, dtype=dtype, device=device)
        else:
            t = (torch.randn(p.shape, generator=gen, dtype=torch.float32, device=device) * 0.02).to(dtype)
        tensors[name] = t.cpu().contiguous()
        n_params += t.numel()
    del meta
    os.makedirs(out, exist_ok=True)
    arch = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[config.model_type]
    config.architectures = [arch]
    config.save_pretrained(out)
    gen_cfg = os.path.join(out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    save_file(tensors, st_path, metadata={"format": "pt"})
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    n_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"bench": "make-model", "out": out, **stamp, "architecture": arch, "parameters": n_params,
                      "bytes": n_bytes, "safetensors_dtype": st_dtype, "tied": tied, "drawn_on": device,
                      "seconds": round(time.time() - t0, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
