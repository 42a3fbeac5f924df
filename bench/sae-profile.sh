#!/usr/bin/env bash
# CPU profile of the SAE configs of bench/sae-overhead.ts, one neurotap process per config:
# load, warm up, then `perf record` attached only for the timed reps (no load, no checks).
#
#   bash bench/sae-profile.sh [OUTDIR] [-- extra sae-overhead.ts flags]
#   (default OUTDIR bench/out/sae-profile; configs: plain standard error jumprelu topk features)
#
# Writes OUTDIR/<config>.log (the bench output), OUTDIR/<config>.perf.data and
# OUTDIR/<config>.txt (`perf report --no-children --sort dso,sym`, self samples). The SAE's own
# loops are their own symbols: AttachedSae::activate / decode / read_features (and the lambdas
# they hand the thread pool in later builds); TopK's nth_element is inlined into activate at
# 355a755 and shows as std::__introselect later; the top-k read-out's partial_sort adds
# std::__adjust_heap. The encoder GEMM shares the micro-kernel with the model, so it is the
# kernel's samples in a config minus those in `plain` (same number of forwards).
# Env: CONFIGS (list), REPS (5), FREQ (999).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/out/sae-profile}
shift || true
[[ "${1:-}" == "--" ]] && shift
mkdir -p "$out"
for cfg in ${CONFIGS:-plain standard error jumprelu topk features}; do
  log="$out/$cfg.log"
  npx tsx bench/sae-overhead.ts --engines neurotap --configs "$cfg" --reps "${REPS:-5}" --warmup 1 --profile-wait "$@" >"$log" 2>&1 &
  drv=$!
  pid=
  for _ in $(seq 600); do
    pid=$(sed -n 's/^profile-ready \([0-9]*\)$/\1/p' "$log")
    [[ -n "$pid" ]] && break
    sleep 0.5
  done
  [[ -n "$pid" ]] || { echo "no profile-ready line in $log" >&2; cat "$log" >&2; exit 1; }
  perf record -F "${FREQ:-999}" -p "$pid" -o "$out/$cfg.perf.data" 2>"$out/$cfg.perf.err" &
  rec=$!
  sleep 1
  kill -USR1 "$pid"
  wait "$drv"
  wait "$rec" || true
  perf report -i "$out/$cfg.perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -v '^$' >"$out/$cfg.txt"
  echo "$cfg: $(grep -c '^rep ' "$log") reps, $(sed -n 's/^profile-done after //p' "$log"), $(grep -m1 'Samples' "$out/$cfg.txt")"
done
