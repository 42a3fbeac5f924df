#!/usr/bin/env python3
"""Collects the device harness's JSON result lines into one results.json and a short summary.

Usage: python3 bench/gpu/collect.py LOGDIR OUTDIR

Reads every LOGDIR/*.log (each step of bench/gpu/run.sh writes one), takes each line that is a
JSON object with a "bench" key, and LOGDIR/steps.tsv (step, status, exit code, seconds). Writes
OUTDIR/results.json:

    {"date", "steps": [...], "machine": {...}, "results": [every JSON line, with its log],
     "derived": {"E1": {...}, "D1": {...}, "parity": {...}}}

and OUTDIR/summary.txt (also printed): the step table, parity counts, and the benchmark figures
set against their baselines and rooflines:

  E1 roofline (tokens/s) = pinned device-to-host GB/s / captured bytes per token, for the f32
     captures the API makes today (n_layers * d_model * 4 B) and for bf16 captures (the issue's
     target, * 2 B).
  D1 roofline (tokens/s) = device-to-device copy GB/s (read + written) / weight bytes read per
     decode step (every weight; the tied embedding is the LM head).

Uses only the standard library (runs without torch).
"""
import glob
import json
import os
import sys
import time


def load_lines(logdir):
    out = []
    for path in sorted(glob.glob(os.path.join(logdir, "*.log"))):
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not (line.startswith("{") and line.endswith("}")):
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "bench" in obj:
                    obj["_log"] = os.path.basename(path)
                    out.append(obj)
    return out


def load_steps(logdir):
    steps = []
    path = os.path.join(logdir, "steps.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 4:
                    steps.append({"step": parts[0], "status": parts[1], "rc": parts[2], "seconds": parts[3],
                                  "note": parts[4] if len(parts) > 4 else ""})
    return steps


def ratio(a, b):
    try:
        return a / b if a is not None and b else None
    except TypeError:
        return None


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def derive(results):
    machine = next((r for r in results if r["bench"] == "machine" and r.get("cuda")), None) or \
        next((r for r in results if r["bench"] == "machine"), {})
    d2h = machine.get("d2h_pinned_GBps")
    d2d = machine.get("d2d_GBps_rw")
    derived = {}

    e1 = [r for r in results if r["bench"] == "E1-extract" and "tokens_per_s" in r]
    if e1:
        ours = [r for r in e1 if r["engine"] == "neurotap"]
        hf = [r for r in e1 if r["engine"] == "hf"]
        main = next((r for r in ours if r.get("weights_dtype") == "bf16"), ours[0] if ours else None)
        hf_main = next((r for r in hf if r.get("weights_dtype") == "bf16"), hf[0] if hf else None)
        d = {"neurotap": main, "hf": hf_main, "all": [{k: r.get(k) for k in ("engine", "weights_dtype", "capture_dtype", "attn_implementation",
                                                                            "tokens", "tokens_per_s", "forward_only_tokens_per_s", "capture_GBps")} for r in e1]}
        ref = main or hf_main
        if ref and d2h:
            per_f32 = ref["layers"] * ref["d_model"] * 4
            d["roofline_f32_tokens_per_s"] = d2h * 1e9 / per_f32
            d["roofline_bf16_tokens_per_s"] = d2h * 1e9 / (per_f32 / 2)
        if main:
            d["speedup_vs_hf"] = ratio(main["tokens_per_s"], hf_main and hf_main["tokens_per_s"])
            d["fraction_of_f32_roofline"] = ratio(main["tokens_per_s"], d.get("roofline_f32_tokens_per_s"))
            d["fraction_of_bf16_roofline"] = ratio(main["tokens_per_s"], d.get("roofline_bf16_tokens_per_s"))
            if hf_main and main.get("check") and hf_main.get("check"):
                a, b = main["check"]["rms_seq0"], hf_main["check"]["rms_seq0"]
                d["check_rms_rel_diff"] = abs(a - b) / max(abs(b), 1e-30)
        derived["E1"] = d

    d1 = [r for r in results if r["bench"] == "D1-decode" and "decode_tokens_per_s" in r]
    if d1:
        ours = next((r for r in d1 if r["engine"] == "neurotap"), None)
        hf_eager = next((r for r in d1 if r["engine"] == "hf" and r.get("attn_implementation") == "eager"), None)
        hf_sdpa = next((r for r in d1 if r["engine"] == "hf" and r.get("attn_implementation") == "sdpa"), None)
        d = {"neurotap": ours, "hf_eager": hf_eager, "hf_sdpa": hf_sdpa}
        wb = (ours or hf_eager or hf_sdpa or {}).get("weight_bytes_per_token")
        if wb and d2d:
            d["roofline_tokens_per_s"] = d2d * 1e9 / wb
        if ours:
            d["speedup_vs_hf_eager"] = ratio(ours["decode_tokens_per_s"], hf_eager and hf_eager["decode_tokens_per_s"])
            d["speedup_vs_hf_sdpa"] = ratio(ours["decode_tokens_per_s"], hf_sdpa and hf_sdpa["decode_tokens_per_s"])
            d["fraction_of_roofline"] = ratio(ours["decode_tokens_per_s"], d.get("roofline_tokens_per_s"))
            d["steering_overhead"] = ours.get("steering_overhead")
            if hf_eager:
                a, b = ours.get("greedy_head") or [], hf_eager.get("greedy_head") or []
                n = 0
                while n < min(len(a), len(b)) and a[n] == b[n]:
                    n += 1
                d["greedy_prefix_agreement_with_hf"] = f"{n}/{min(len(a), len(b))}"
        derived["D1"] = d

    pars = [r for r in results if r["bench"] == "gpu-parity"]
    if pars:
        # run.sh runs the cases in several processes (groups): add them up.
        par = {"available": any(r.get("available") for r in pars), "reason": next((r.get("reason") for r in pars if r.get("reason")), None),
               "device": next((r.get("device") for r in pars if r.get("device")), None), "groups": len(pars)}
        for k in ("passed", "failed", "skipped"):
            par[k] = sum(r.get(k) or 0 for r in pars)
        par["failing"] = [c["name"] for r in pars for c in r.get("cases", []) if c.get("status") == "fail"]
        derived["parity"] = par
    hfp = [r for r in results if r["bench"] == "hf-parity"]
    if hfp:
        derived["hf_parity"] = {r["fixture"]: {k: v for k, v in r.items() if k.endswith("_ref") or k == "error"} for r in hfp}
    return machine, derived


def summary_text(steps, machine, derived):
    L = []
    L.append(f"neurotap GPU harness summary ({time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())})")
    if machine:
        L.append(f"machine: {machine.get('device_name', machine.get('nvidia_smi', '?'))}; torch {machine.get('torch')}, "
                 f"transformers {machine.get('transformers')}; d2d {fmt(machine.get('d2d_GBps_rw'))} GB/s (r+w), "
                 f"D2H pinned {fmt(machine.get('d2h_pinned_GBps'))} GB/s, pageable {fmt(machine.get('d2h_pageable_GBps'))} GB/s, "
                 f"H2D pinned {fmt(machine.get('h2d_pinned_GBps'))} GB/s")
        L.append(f"cuBLASLt: headers {machine.get('cublasLt_headers')}; libraries {machine.get('cublasLt_libraries')}")
    L.append("")
    L.append("step                 status    rc   seconds  note")
    for s in steps:
        L.append(f"{s['step']:<20} {s['status']:<9} {s['rc']:<4} {s['seconds']:>7}  {s['note']}")
    p = derived.get("parity")
    if p:
        L.append("")
        if p.get("available"):
            L.append(f"parity on {p.get('device')}: {p.get('passed')} passed, {p.get('failed')} failed, {p.get('skipped')} skipped")
            for n in p.get("failing", [])[:20]:
                L.append(f"  FAIL {n}")
        else:
            L.append(f"parity: not run: {p.get('reason')}")
    e1 = derived.get("E1")
    if e1:
        L.append("")
        L.append("E1 extraction (tokens/s; captures of every resid_post to host):")
        for r in e1["all"]:
            L.append(f"  {r['engine']:<9} weights {r['weights_dtype']:<5} capture {r['capture_dtype']:<5} {r.get('attn_implementation') or '':<6} "
                     f"{fmt(r['tokens_per_s'], 0):>12}  (forward only {fmt(r.get('forward_only_tokens_per_s'), 0)}; {fmt(r.get('capture_GBps'), 2)} GB/s captured; {r['tokens']} tokens)")
        L.append(f"  D2H roofline: {fmt(e1.get('roofline_f32_tokens_per_s'), 0)} tokens/s with f32 captures, {fmt(e1.get('roofline_bf16_tokens_per_s'), 0)} with bf16")
        L.append(f"  neurotap / HF: {fmt(e1.get('speedup_vs_hf'), 2)}x (goal 2.5x); of the f32 roofline {fmt(e1.get('fraction_of_f32_roofline'), 3)}, "
                 f"of the bf16 roofline {fmt(e1.get('fraction_of_bf16_roofline'), 3)} (goal 0.70); check RMS rel diff vs HF {fmt(e1.get('check_rms_rel_diff'), 4)}")
    d1 = derived.get("D1")
    if d1:
        L.append("")
        L.append("D1 decode (batch 1, tokens/s after the prompt):")
        for k in ("neurotap", "hf_eager", "hf_sdpa"):
            r = d1.get(k)
            if r:
                L.append(f"  {k:<9} {fmt(r['decode_tokens_per_s'])} plain, {fmt(r['steered_decode_tokens_per_s'])} steered "
                         f"(overhead {fmt(100 * r['steering_overhead'], 2)}%), prefill {fmt(1000 * r['prefill_seconds_median'], 1)} ms")
        L.append(f"  HBM roofline {fmt(d1.get('roofline_tokens_per_s'))} tokens/s; neurotap / HF eager {fmt(d1.get('speedup_vs_hf_eager'), 2)}x (goal 5x), "
                 f"/ HF sdpa {fmt(d1.get('speedup_vs_hf_sdpa'), 2)}x; of the roofline {fmt(d1.get('fraction_of_roofline'), 3)} (goal 0.80); "
                 f"steering overhead {fmt(100 * d1['steering_overhead'], 2) if d1.get('steering_overhead') is not None else '-'}% (goal < 2%); "
                 f"greedy agreement with HF {d1.get('greedy_prefix_agreement_with_hf', '-')}")
    return "\n".join(L) + "\n"


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    logdir, outdir = argv[1], argv[2]
    results = load_lines(logdir)
    steps = load_steps(logdir)
    machine, derived = derive(results)
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": steps, "machine": machine,
           "derived": derived, "results": results}
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    text = summary_text(steps, machine, derived)
    with open(os.path.join(outdir, "summary.txt"), "w") as f:
        f.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
