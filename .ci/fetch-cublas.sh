#!/usr/bin/env bash
# Best-effort fetch of cuBLAS (headers and libcublasLt.so.13) from the pip index into
# ~/.cache/neurotap/cublas-<version>/, reused on later runs, for `npm run check:cuda`'s linked build.
# Prints `export NEUROTAP_CUBLAS_INCLUDE=... NEUROTAP_CUBLAS_LIB=...` lines on success, nothing
# otherwise (the reason goes to stderr). Usage: eval "$(bash .ci/fetch-cublas.sh)"
set -uo pipefail
cache="${NEUROTAP_CACHE:-$HOME/.cache/neurotap}"
export_dirs() { echo "export NEUROTAP_CUBLAS_INCLUDE='$1/nvidia/cu13/include' NEUROTAP_CUBLAS_LIB='$1/nvidia/cu13/lib'"; }

for dir in "$cache"/cublas-*/; do
  if [ -f "$dir/nvidia/cu13/lib/libcublasLt.so.13" ] && [ -f "$dir/nvidia/cu13/include/cublasLt.h" ]; then
    echo "cuBLAS: reusing ${dir%/}" >&2
    export_dirs "${dir%/}"
    exit 0
  fi
done

mkdir -p "$cache/wheels" || exit 0
start=$(date +%s)
# --retries 0: where only a local index answers, do not wait on the unreachable default one.
if ! python3 -m pip download --quiet --no-deps --retries 0 --timeout 60 nvidia-cublas -d "$cache/wheels" >"$cache/pip-download.log" 2>&1; then
  echo "cuBLAS: not fetched (pip download nvidia-cublas failed: $(tail -n 1 "$cache/pip-download.log")); check:cuda will skip the link" >&2
  exit 0
fi
wheel=$(ls -t "$cache"/wheels/nvidia_cublas-*.whl 2>/dev/null | head -n 1)
version=$(basename "$wheel" | cut -d- -f2)
dest="$cache/cublas-$version"
# Only the headers and libcublasLt (~520 MB of the wheel's ~600 MB unpacked are libcublasLt alone).
if ! python3 - "$wheel" "$dest.part" <<'PY' >&2; then
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith('nvidia/cu13/include/') or n.startswith('nvidia/cu13/lib/libcublasLt.so')]
    if not any(n.endswith('libcublasLt.so.13') for n in names):
        sys.exit('no nvidia/cu13/lib/libcublasLt.so.13 in ' + wheel)
    z.extractall(dest, names)
PY
  echo "cuBLAS: could not unpack $wheel; check:cuda will skip the link" >&2
  rm -rf "$dest.part"
  exit 0
fi
rm -rf "$dest" && mv "$dest.part" "$dest" && rm -f "$wheel"
echo "cuBLAS: fetched nvidia-cublas $version into $dest in $(( $(date +%s) - start )) s" >&2
export_dirs "$dest"
