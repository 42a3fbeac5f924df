#!/usr/bin/env bash
# CPU profile of neurotap's forward and backward pass on the GPT-2-small-shaped model: one
# process per mode loads the model, warms up, then `perf record` is attached for REPS calls only.
#
#   bash bench/backward-profile.sh [OUTDIR]      (default bench/out/backward-profile)
#
# Modes: fwd (run, logits at the last position), bwd (backward, logitDiff at the last position,
# gradients at every blocks.*.hook_resid_pre). Writes OUTDIR/<mode>.perf.data and OUTDIR/<mode>.txt
# (`perf report --no-children --sort sym`, self samples) and prints the wall time per call.
# Env: SEQ (128), REPS (5), FREQ (499), THREADS (2), MODEL (bench/out/gpt2-small).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/out/backward-profile}
mkdir -p "$out"
for mode in fwd bwd; do
  log="$out/$mode.log"
  MODE=$mode npx tsx -e "(async () => {
    const { loadModel } = await import('./src/index.js');
    const T = Number(process.env.SEQ ?? 128), reps = Number(process.env.REPS ?? 5);
    const model = await loadModel(process.env.MODEL ?? 'bench/out/gpt2-small', { threads: Number(process.env.THREADS ?? 2) });
    const tokens = [Array.from({ length: T }, (_, i) => (i * 7919 + 13) % model.config.dVocab)];
    const grads = Array.from({ length: model.config.nLayers }, (_, i) => 'blocks.' + i + '.hook_resid_pre');
    const call = process.env.MODE === 'fwd'
      ? () => model.run(tokens, { returnLogits: 'last' })
      : () => model.backward(tokens, { metric: { logitDiff: { correct: 1, wrong: 2 } }, grads });
    await call();
    const keep = setInterval(() => {}, 1000);  // a signal listener alone does not keep node alive
    const go = new Promise((r) => process.once('SIGUSR1', r));
    console.log('profile-ready ' + process.pid);
    await go;
    clearInterval(keep);
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) await call();
    console.log('profile-done ' + ((performance.now() - t0) / reps / 1000).toFixed(3) + ' s per call');
    model.dispose();
  })();" >"$log" 2>&1 &
  drv=$!
  pid=
  for _ in $(seq 1200); do
    pid=$(sed -n 's/^profile-ready \([0-9]*\)$/\1/p' "$log")
    [[ -n "$pid" ]] && break
    sleep 0.5
  done
  [[ -n "$pid" ]] || { echo "no profile-ready line in $log" >&2; cat "$log" >&2; exit 1; }
  perf record -F "${FREQ:-499}" -p "$pid" -o "$out/$mode.perf.data" 2>"$out/$mode.perf.err" &
  rec=$!
  sleep 1
  kill -USR1 "$pid"
  wait "$drv"
  wait "$rec" || true
  perf report -i "$out/$mode.perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -v '^$' >"$out/$mode.txt"
  echo "$mode: $(sed -n 's/^profile-done //p' "$log"), $(grep -m1 'Samples' "$out/$mode.txt")"
done
