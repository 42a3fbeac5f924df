"""Shared skeleton of bench/make-gpt2-small.py and bench/make-llama-small.py.

write_random_model(default_name, spec): OUTDIR is argv[1] (default bench/out/<default_name>).
Does nothing if OUTDIR already holds config.json and model.safetensors. Otherwise calls spec(),
which imports transformers and returns (model class, config), builds the model with the HF
default init under torch.manual_seed(0), and saves it as f32 safetensors with save_pretrained.
torch and transformers are imported only when a model is written.
"""
import os
import sys


def write_random_model(default_name, spec) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(here, "out", default_name)
    if os.path.isfile(os.path.join(out, "config.json")) and os.path.isfile(os.path.join(out, "model.safetensors")):
        print(f"exists: {out}", file=sys.stderr)
        return

    import torch

    model_cls, config = spec()
    torch.manual_seed(0)
    model = model_cls(config).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out} ({n_params / 1e6:.1f}M parameters)", file=sys.stderr)
