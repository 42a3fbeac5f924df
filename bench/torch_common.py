"""Setup shared by the PyTorch baseline workers (torch-forward.py, torch-sae.py,
extract/hf_extract.py): torch on the requested threads and the model in float32."""


def load_causal_lm(model_dir, threads):
    """Sets torch to `threads` intra-op threads (one inter-op thread) and returns the HF causal
    LM at `model_dir` in float32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
