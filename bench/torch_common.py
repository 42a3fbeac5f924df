"""Setup shared by the PyTorch baseline workers (torch-forward.py, torch-backward.py, torch-sae.py,
extract/hf_extract.py): torch on the requested threads and the model in float32 (or bfloat16)."""


def load_causal_lm(model_dir, threads, dtype="f32"):
    """Sets torch to `threads` intra-op threads (one inter-op thread) and returns the HF causal
    LM at `model_dir` in eval mode, its parameters in float32 (`dtype` "f32") or bfloat16 ("bf16",
    so that PyTorch computes in bf16: oneDNN's bf16 GEMMs, AMX where the CPU has it)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(torch_dtype).eval()
