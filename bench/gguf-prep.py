#!/usr/bin/env python3
"""Converts a random HF Llama benchmark model to GGUF for llama.cpp and writes HF reference logits.

Usage: python3 bench/gguf-prep.py MODEL_DIR OUT_DIR --convert DIR [--outtypes f32,bf16] [--check-len 64]

DIR holds llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/ (bench/llama-cpp.ts extracts
them from node-llama-cpp's bundled llama.cpp source); sentencepiece must be importable. The converter
needs a tokenizer, which a random model lacks: OUT_DIR/hf gets MODEL_DIR's config and weights (linked)
and a throwaway SentencePiece model with one piece per id (<unk>, <s>, </s>, the 256 byte pieces <0x00>..<0xFF>, then "▁t259" ...), written
as protobuf by hand. It is never used to tokenize: the benchmark feeds token ids. Writes
OUT_DIR/model-<type>.gguf per outtype (skipped when present), then (unless present) OUT_DIR/reference.json: a seeded
random prompt of --check-len ids, and the HF logits at every position, f32 and bf16, as
reference-f32.bin / reference-bf16.bin (float32, [len, vocab]).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    return varint((num << 3) | wire) + payload


def length_delimited(num, data):
    return field(num, 2, varint(len(data)) + data)


def sentencepiece_model(vocab):
    """A ModelProto: pieces (field 1: piece, score, type), a unigram trainer spec (field 2), an identity normalizer (3)."""
    NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
    pieces = bytearray()
    for i in range(vocab):
        if i < 3:
            name, kind = [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)][i]
        elif i < 3 + 256:  # byte fallback pieces, as Llama's tokenizer has (llama.cpp looks up <0x0A>)
            name, kind = f"<0x{i - 3:02X}>", BYTE
        else:
            name, kind = f"\u2581t{i}", NORMAL
        body = length_delimited(1, name.encode()) + field(2, 5, struct.pack("<f", -float(i))) + field(3, 0, varint(kind))
        pieces += length_delimited(1, body)
    trainer = field(3, 0, varint(1)) + field(4, 0, varint(vocab)) + field(35, 0, varint(1))  # UNIGRAM, vocab_size, byte_fallback
    normalizer = length_delimited(1, b"identity")
    return bytes(pieces) + length_delimited(2, trainer) + length_delimited(3, normalizer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--convert", required=True)
    ap.add_argument("--outtypes", default="f32,bf16")
    ap.add_argument("--check-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model_dir, out = os.path.abspath(args.model_dir), os.path.abspath(args.out_dir)
    hf = os.path.join(out, "hf")
    os.makedirs(hf, exist_ok=True)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "llama":
        sys.exit(f"gguf-prep: expected a llama model, got {config.get('model_type')!r}")
    shutil.copy(os.path.join(model_dir, "config.json"), hf)
    link, target = os.path.join(hf, "model.safetensors"), os.path.join(model_dir, "model.safetensors")
    if os.path.lexists(link) and os.path.realpath(link) != os.path.realpath(target):
        os.remove(link)  # left by a run from another checkout
    if not os.path.lexists(link):
        os.symlink(target, link)
    with open(os.path.join(hf, "tokenizer.model"), "wb") as f:
        f.write(sentencepiece_model(config["vocab_size"]))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(args.convert, "gguf-py"), os.environ.get("PYTHONPATH", "")]))
    for t in args.outtypes.split(","):
        dest = os.path.join(out, f"model-{t}.gguf")
        if os.path.exists(dest):
            continue
        print(f"gguf-prep: converting to {dest}", file=sys.stderr)
        cmd = [sys.executable, os.path.join(args.convert, "convert_hf_to_gguf.py"), hf, "--outtype", t, "--outfile", dest + ".part"]
        log = os.path.join(out, f"convert-{t}.log")
        with open(log, "w") as f:
            r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            sys.exit(f"gguf-prep: convert_hf_to_gguf.py --outtype {t} failed (status {r.returncode}); see {log}")
        os.replace(dest + ".part", dest)

    if all(os.path.exists(os.path.join(out, f)) for f in ("reference.json", "reference-f32.bin", "reference-bf16.bin")):
        return
    import torch
    from transformers import AutoModelForCausalLM

    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(3, config["vocab_size"], (1, args.check_len), generator=gen)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        model(ids).logits[0].float().numpy().tofile(os.path.join(out, "reference-f32.bin"))
        model.to(torch.bfloat16)(ids).logits[0].float().numpy().tofile(os.path.join(out, "reference-bf16.bin"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"tokens": ids[0].tolist(), "vocab": config["vocab_size"]}, f)


if __name__ == "__main__":
    main()
