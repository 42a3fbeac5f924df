#!/usr/bin/env python3
"""PyTorch / HF transformers baseline for bench/extract/run.ts: extract the 12 block outputs
(TransformerLens `blocks.L.hook_resid_post`) of a GPT-2 model over a pre-tokenized corpus and
write them as safetensors shards, as neurotap's `extract` CLI does.

Usage: python3 bench/extract/hf_extract.py MODEL_DIR [--seq-len 1024] [--batch 8] [--threads 2]
                                           [--shard-size 8] [--no-fsync]

A long-lived worker: it imports torch, loads MODEL_DIR (f32, eval) and prints one JSON line
{"ready": true, ...}. Then each stdin line is a JSON command:

  {"cmd": "run", "corpus": FILE.jsonl, "out": DIR, "max_tokens": N}

which runs one timed extraction and answers with one JSON line (seconds, tokens, bytes, and
where the time went). "quit" or EOF ends it. Nothing runs between commands, so the driver can
alternate this with neurotap without the two computing at once.

One extraction, all of it inside the timed span:
- reads FILE.jsonl (one JSON array of token ids per line), concatenates the documents with no
  separator and cuts the stream into seq-len windows, dropping the partial tail, and keeps the
  first ceil(max_tokens / seq_len) windows (neurotap's packing and --max-tokens);
- groups the windows into shards of --shard-size sequences and each shard into batches of
  --batch (batches never straddle a shard, as in neurotap);
- per batch, under torch.inference_mode(): model.transformer(ids, output_hidden_states=True,
  use_cache=False) (GPT2Model: no LM head, as neurotap skips it), then .numpy() views of the
  hidden states;
- per shard, safetensors.numpy.save_file({"tokens": int32 [n, seq], "blocks.L.hook_resid_post":
  f32 [n, seq, d_model] ...}) to DIR/shard-NNNNN.safetensors, then (unless --no-fsync) an fsync
  of the file and of DIR, since neurotap fsyncs every shard and its directory.

HF's hidden_states[L + 1] is the output of block L for L < 11, but hidden_states[12] has the
final LayerNorm applied (it is last_hidden_state). To store the same 12 tensors as neurotap,
the output of the last block is taken from a forward hook on transformer.h[-1]; that costs
nothing extra. The cost of HF's extra ln_f (one LayerNorm) is left in.
"""
import argparse
import json
import math
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=8, help="sequences per output file (a multiple of --batch, as neurotap's)")
    ap.add_argument("--no-fsync", action="store_true", help="skip the fsync of each file and of the output directory")
    args = ap.parse_args()

    import numpy as np
    import safetensors
    import torch
    import transformers
    from safetensors.numpy import save_file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/
    from torch_common import load_causal_lm

    lm = load_causal_lm(args.model_dir, args.threads)
    body = lm.transformer  # GPT2Model: embeddings, blocks, ln_f; no LM head
    n_layers = len(body.h)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
    last_block: dict = {}

    def keep_last(_module, _inputs, output):
        last_block["out"] = output[0] if isinstance(output, tuple) else output

    body.h[-1].register_forward_hook(keep_last)
    seq, batch, per_shard = args.seq_len, args.batch, args.shard_size

    def extract(corpus: str, out: str, max_tokens: int) -> dict:
        t0 = time.perf_counter()
        c0 = time.process_time()
        max_seqs = math.ceil(max_tokens / seq)
        # Read and pack (the corpus here is small; neurotap streams it line by line).
        stream: list[int] = []
        with open(corpus, "r", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    stream.extend(json.loads(line))
                if len(stream) >= max_seqs * seq:
                    break
        n_seqs = min(max_seqs, len(stream) // seq)
        ids = np.asarray(stream[: n_seqs * seq], dtype=np.int32).reshape(n_seqs, seq)
        t_read = time.perf_counter() - t0
        os.makedirs(out, exist_ok=True)
        t_forward = t_numpy = t_save = t_sync = 0.0
        total_bytes = 0
        files = 0
        with torch.inference_mode():
            for s0 in range(0, n_seqs, per_shard):
                shard_ids = ids[s0 : s0 + per_shard]
                parts: list[list[np.ndarray]] = [[] for _ in names]
                for b0 in range(0, len(shard_ids), batch):
                    a = time.perf_counter()
                    x = torch.from_numpy(shard_ids[b0 : b0 + batch].astype(np.int64))
                    hs = body(x, output_hidden_states=True, use_cache=False).hidden_states
                    b = time.perf_counter()
                    layers = list(hs[1:n_layers]) + [last_block.pop("out")]
                    for layer, h in enumerate(layers):
                        parts[layer].append(h.numpy())  # a view, no copy
                    t_forward += b - a
                    t_numpy += time.perf_counter() - b
                a = time.perf_counter()
                tensors = {"tokens": np.ascontiguousarray(shard_ids)}
                for name, p in zip(names, parts):
                    tensors[name] = p[0] if len(p) == 1 else np.concatenate(p, axis=0)
                path = os.path.join(out, f"shard-{s0 // per_shard:05d}.safetensors")
                save_file(tensors, path, metadata={"format": "pt", "producer": "hf_extract.py"})
                b = time.perf_counter()
                if not args.no_fsync:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    dfd = os.open(out, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
                c = time.perf_counter()
                t_save += b - a
                t_sync += c - b
                total_bytes += os.path.getsize(path)
                files += 1
        seconds = time.perf_counter() - t0
        return {
            "seconds": seconds,
            "cpu_seconds": time.process_time() - c0,
            "tokens": n_seqs * seq,
            "sequences": n_seqs,
            "bytes": total_bytes,
            "files": files,
            "read_seconds": t_read,
            "forward_seconds": t_forward,
            "numpy_seconds": t_numpy,
            "save_seconds": t_save,
            "fsync_seconds": t_sync,
        }

    print(
        json.dumps(
            {
                "ready": True,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "safetensors": safetensors.__version__,
                "numpy": np.__version__,
                "threads": torch.get_num_threads(),
                "attn_implementation": getattr(lm.config, "_attn_implementation", None),
                "fsync": not args.no_fsync,
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line == "quit":
            break
        try:
            cmd = json.loads(line)
            if cmd.get("cmd") != "run":
                raise ValueError(f"unknown command {line!r}")
            reply = extract(cmd["corpus"], cmd["out"], int(cmd["max_tokens"]))
        except Exception as err:  # reported to the driver, which stops
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
