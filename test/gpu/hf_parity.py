#!/usr/bin/env python3
"""HF transformers on the GPU for every fixture model: references for test/gpu/parity-cases.ts.

Usage (from the repository root, on the GPU machine; bench/gpu/run.sh runs it):

    python3 test/gpu/hf_parity.py [--out bench/out/hf-gpu-ref] [--device cuda] [--fixtures a,b]

For each fixture in test/fixtures/models it loads the checkpoint with from_pretrained
(attn_implementation="eager", as test/fixtures/generate.py), runs the fixture's input_ids
(from reference.safetensors) and writes OUT/<fixture>.safetensors with:

    input_ids                            int32 [2, 8]
    logits.f32                           HF in float32 on the device (TF32 off)
    hidden.f32.blocks.L.hook_resid_pre   output_hidden_states[L] (L < n_layers)
    logits.bf16, logits.f16              HF run wholly in that dtype (weights and activations)
    logits.bf16_emulated, ...f16_emulated
                                         float32 HF with the weights and every Linear/Conv1D input
                                         rounded to the dtype: what the CUDA backend computes
                                         with bf16/f16 weights (activations in float32)

The TS test compares CUDA f32 with logits.f32 and the hidden states at 1e-4, and prints how far
the bf16/f16 runs are from the f32 reference. It also prints one JSON line per fixture with the
errors of these runs against the CPU reference in reference.safetensors. --device cpu works too
(to check the script without a GPU).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(ROOT, "test", "fixtures", "models")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "hf-gpu-ref"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--fixtures", default="", help="comma-separated fixture names (default: all)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    transformers.logging.set_verbosity_error()
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(json.dumps({"bench": "hf-parity", "error": "torch.cuda.is_available() is False"}))
            return 1
        # Plain IEEE float32 matmuls: the reference must not use TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    names = [n for n in sorted(os.listdir(FIXTURES)) if os.path.isfile(os.path.join(FIXTURES, n, "reference.safetensors"))]
    if args.fixtures:
        wanted = set(args.fixtures.split(","))
        names = [n for n in names if n in wanted]

    def rel(a, b):
        a = a.double().cpu()
        b = b.double().cpu()
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    def load(d, dtype):
        m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager")
        return m.to(dev).eval()

    status = 0
    for name in names:
        t0 = time.time()
        d = os.path.join(FIXTURES, name)
        ref = load_file(os.path.join(d, "reference.safetensors"))
        ids = ref["input_ids"].long().to(dev)
        out = {"input_ids": ref["input_ids"].to(torch.int32).contiguous()}
        try:
            with torch.inference_mode():
                m = load(d, torch.float32)
                o = m(input_ids=ids, output_hidden_states=True, use_cache=False)
                out["logits.f32"] = o.logits.float().cpu().contiguous()
                n_layers = m.config.num_hidden_layers
                for L in range(n_layers):
                    out[f"hidden.f32.blocks.{L}.hook_resid_pre"] = o.hidden_states[L].float().cpu().contiguous()
                del m
                for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
                    m = load(d, dtype)
                    out[f"logits.{tag}"] = m(input_ids=ids, use_cache=False).logits.float().cpu().contiguous()
                    del m
                    # The CUDA backend's arithmetic: weights and GEMM inputs rounded, f32 elsewhere.
                    m = load(d, torch.float32)
                    for mod in m.modules():
                        if isinstance(mod, (torch.nn.Linear, Conv1D, torch.nn.Embedding)):
                            mod.weight.copy_(mod.weight.to(dtype).float())
                    for mod in m.modules():
                        if isinstance(mod, (torch.nn.Linear, Conv1D)):
                            mod.register_forward_pre_hook(lambda _m, a, dt=dtype: (a[0].to(dt).float(),) + tuple(a[1:]))
                    out[f"logits.{tag}_emulated"] = m(input_ids=ids, use_cache=False).logits.float().cpu().contiguous()
                    del m
            save_file(out, os.path.join(args.out, f"{name}.safetensors"), metadata={"format": "pt"})
            cpu_ref = ref["logits"]
            line = {
                "bench": "hf-parity",
                "fixture": name,
                "device": str(dev),
                "seconds": round(time.time() - t0, 3),
                "f32_gpu_vs_cpu_ref": rel(out["logits.f32"], cpu_ref),
                "bf16_vs_cpu_ref": rel(out["logits.bf16"], cpu_ref),
                "f16_vs_cpu_ref": rel(out["logits.f16"], cpu_ref),
                "bf16_emulated_vs_cpu_ref": rel(out["logits.bf16_emulated"], cpu_ref),
                "f16_emulated_vs_cpu_ref": rel(out["logits.f16_emulated"], cpu_ref),
            }
        except Exception as e:  # keep going: one fixture's failure should not hide the others
            line = {"bench": "hf-parity", "fixture": name, "error": f"{type(e).__name__}: {e}"}
            status = 1
        print(json.dumps(line), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
