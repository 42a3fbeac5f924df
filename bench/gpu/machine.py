#!/usr/bin/env python3
"""Facts about the GPU machine and its copy bandwidths, as one JSON line {"bench": "machine", ...}.

Usage: python3 bench/gpu/machine.py [--mib 1024] [--reps 10]

Through PyTorch (the machine's python3 has it): the device's name, multiprocessors, memory and
L2; torch / CUDA / transformers versions; where cuBLASLt's header and library are (the CUDA
toolkit, or PyTorch's pip packages nvidia/cu13 or nvidia/cublas). Then, timed with CUDA events
(median of --reps after 2 warm-ups), on one buffer of --mib MiB and on a 32 MiB one:

  d2d_GBps_rw        device-to-device copy, counting bytes read plus bytes written (the HBM
                     figure the D1 roofline uses, like the 3.0 TB/s in ../shared/docs/gpu.md)
  d2h_pinned_GBps    device to page-locked host memory (the E1 roofline)
  h2d_pinned_GBps    page-locked host to device
  d2h_pageable_GBps  device to ordinary (pageable, pre-touched) host memory, as .cpu() does

Without a GPU it prints what it can with "cuda": false.
"""
import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--reps", type=int, default=10)
    return p.parse_args(argv)


def find_cublaslt():
    """Where cublasLt.h and libcublasLt.so* are: CUDA toolkit dirs first, then pip packages."""
    heads, libs = [], []
    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"))
    for r in [r for r in roots if r and os.path.isdir(r)]:
        heads += glob.glob(os.path.join(r, "include", "cublasLt.h")) + glob.glob(os.path.join(r, "targets", "*", "include", "cublasLt.h"))
        libs += glob.glob(os.path.join(r, "lib64", "libcublasLt.so*")) + glob.glob(os.path.join(r, "targets", "*", "lib", "libcublasLt.so*"))
    import site
    import sysconfig
    sp = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    try:
        sp |= set(site.getsitepackages())
    except Exception:
        pass
    for s in sp:
        heads += glob.glob(os.path.join(s, "nvidia", "*", "include", "cublasLt.h"))
        libs += glob.glob(os.path.join(s, "nvidia", "*", "lib", "libcublasLt.so*"))
    for d in ("/usr/include", "/usr/lib/x86_64-linux-gnu"):
        heads += glob.glob(os.path.join(d, "cublasLt.h"))
        libs += glob.glob(os.path.join(d, "libcublasLt.so*"))
    return sorted(set(heads)), sorted(set(libs))


def main(argv=None):
    args = parse_args(argv)
    out = {"bench": "machine", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/meminfo") as f:
            out["mem_total_kib"] = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    except Exception:
        pass
    heads, libs = find_cublaslt()
    out["cublasLt_headers"] = heads
    out["cublasLt_libraries"] = libs
    try:
        out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit",
                                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        out["nvidia_smi"] = f"unavailable: {e}"
    try:
        import torch
    except Exception as e:
        out["torch"] = f"unavailable: {e}"
        print(json.dumps(out))
        return 0
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    try:
        import transformers
        out["transformers"] = transformers.__version__
    except Exception as e:
        out["transformers"] = f"unavailable: {e}"
    out["cuda"] = torch.cuda.is_available()
    if not out["cuda"]:
        print(json.dumps(out))
        return 0
    dev = torch.device("cuda")
    p = torch.cuda.get_device_properties(dev)
    out.update({"device_name": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                "memory_bytes": p.total_memory, "l2_bytes": getattr(p, "L2_cache_size", None)})

    def timed(fn, reps):
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) / 1000)
        ts.sort()
        return ts[len(ts) // 2]

    for mib, tag in ((args.mib, ""), (32, "_32MiB")):
        n = mib << 20
        d1 = torch.empty(n, dtype=torch.uint8, device=dev)
        d2 = torch.empty(n, dtype=torch.uint8, device=dev)
        d1.random_(0, 255)
        pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        pageable = torch.empty(n, dtype=torch.uint8)
        pageable.fill_(1)  # touch the pages first
        out["d2d_GBps_rw" + tag] = 2 * n / timed(lambda: d2.copy_(d1), args.reps) / 1e9
        out["d2h_pinned_GBps" + tag] = n / timed(lambda: pinned.copy_(d1, non_blocking=True), args.reps) / 1e9
        out["h2d_pinned_GBps" + tag] = n / timed(lambda: d2.copy_(pinned, non_blocking=True), args.reps) / 1e9
        out["d2h_pageable_GBps" + tag] = n / timed(lambda: pageable.copy_(d1), max(3, args.reps // 2)) / 1e9
        del d1, d2, pinned, pageable
        torch.cuda.empty_cache()
    out["bandwidth_buffer_mib"] = args.mib
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
