#!/usr/bin/env bash
# The GPU device harness: ONE call on the lent GPU machine builds the addon and the CUDA backend,
# records what the machine is, runs the cross-backend op test, the CUDA parity tests and the E1
# and D1 benchmarks against their HF baselines, and leaves everything under $OUT.
# docs/gpu.md says how to call it (the `run` tool's command and carry list) and what to prepare
# here first (bash bench/gpu/prepare-carry.sh).
#
#   bash bench/gpu/run.sh                  on the GPU machine, from the repository root
#   DRY_RUN=1 bash bench/gpu/run.sh        here, without a GPU: the same steps on the CPU with tiny
#                                          models (build into /tmp, parity self-test, CPU benches)
#
# Steps run in order of value, each under `timeout` with its own budget, capped by what is left of
# BUDGET_S (default 540 s, so the call ends inside the tool's 600 s). A step that fails does not
# stop the others. Two jobs run in the background during the build (HF references on the GPU and
# the benchmark models: GPU work, little CPU). Output in $OUT (at most 8 files come back):
#   run.log       everything this script printed
#   summary.txt   the step table, parity counts, benchmark figures vs baselines and rooflines
#   results.json  every JSON result line of every step, the machine facts, derived figures
#   logs.tar.gz   one log per step (tar -xzf logs.tar.gz -C /tmp/gpu-logs)
# These are refreshed after every step, so a run cut short still returns what it did.
#
# Environment (all optional): OUT, BUDGET_S, DRY_RUN, SKIP (space-separated step names),
# ONLY (run only these steps), CUDA_ARCHS (e.g. "90a"; default: CMakeLists.txt decides),
# NEUROTAP_CUBLAS_INCLUDE / NEUROTAP_CUBLAS_LIB (cuBLAS folders, used where the toolkit has none),
# E1_TOKENS (1048576), E1_SEQ (1024), E1_BATCH (8), E1_MAX_S (40), D1_NEW (128), D1_PROMPT (32),
# D1_REPS (3), D1_LAYER (8), D1_MAX_S (60), JOBS (nproc).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export NEUROTAP_ROOT="$ROOT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false

DRY_RUN="${DRY_RUN:-0}"
BUDGET_S="${BUDGET_S:-540}"
RESERVE_S=15
JOBS="${JOBS:-$(nproc)}"
E1_TOKENS="${E1_TOKENS:-1048576}" E1_SEQ="${E1_SEQ:-1024}" E1_BATCH="${E1_BATCH:-8}" E1_MAX_S="${E1_MAX_S:-40}"
D1_NEW="${D1_NEW:-128}" D1_PROMPT="${D1_PROMPT:-32}" D1_REPS="${D1_REPS:-3}" D1_LAYER="${D1_LAYER:-8}" D1_MAX_S="${D1_MAX_S:-60}"
if [[ "$DRY_RUN" == 1 ]]; then
  : "${OUT:=/tmp/nt-gpu-dry-out}"
  BUILD_DIR="${BUILD_DIR:-/tmp/nt-gpu-dry-build}"
  MODELS="${MODELS:-/tmp/nt-gpu-dry-models}"
  DEV=cpu DT=f32 PYDEV=cpu E1_SHAPE=tiny-gpt2 D1_SHAPE=tiny-llama
  E1_TOKENS=4096 E1_SEQ=256 E1_BATCH=2 D1_NEW=16 D1_REPS=2 D1_LAYER=1
else
  : "${OUT:=$ROOT/bench/out/gpu-run}"
  BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
  MODELS="${MODELS:-$ROOT/bench/out}"
  DEV=cuda DT=bf16 PYDEV=cuda E1_SHAPE=gpt2-small D1_SHAPE=llama-1b
fi
export OUT BUILD_DIR MODELS DEV DT PYDEV DRY_RUN JOBS E1_TOKENS E1_SEQ E1_BATCH E1_MAX_S D1_NEW D1_PROMPT D1_REPS D1_LAYER D1_MAX_S
E1_MODEL="$MODELS/$E1_SHAPE-bf16" D1_MODEL="$MODELS/$D1_SHAPE-bf16"
JS="$ROOT/.device/js"                    # the TypeScript, compiled here by prepare-carry.sh
HFREF="$ROOT/bench/out/hf-gpu-ref"       # test/gpu/hf_parity.py's output, read by the parity cases
[[ "$DRY_RUN" == 1 ]] && HFREF=/tmp/nt-gpu-dry-hfref
TB="$BUILD_DIR/native-tests"             # the cross-backend op test binary
export E1_MODEL D1_MODEL JS HFREF TB NEUROTAP_GPU_REF_DIR="$HFREF"

say() { printf '[%s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - ${START:-$(date +%s)} ))" "$*"; }

# ------------------------------------------------------------------------------------------
# Steps. Each runs in its own bash (`run.sh --step NAME`) under timeout; stdout+stderr go to its log.

step_facts() {
  echo "== machine"; uname -a; (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); nproc; free -g; df -h "$ROOT" /tmp
  echo "== nvidia-smi"; nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,persistence_mode,compute_mode,mig.mode.current --format=csv 2>/dev/null
  echo "== toolchain"; nvcc --version || echo "no nvcc"; cmake --version | head -1; ninja --version; g++ --version | head -1
  command -v compute-sanitizer ncu cuobjdump || true
  echo "node (carried) $(node --version 2>/dev/null || echo missing); the machine's own node: $(PATH="${PATH#/tmp/nt-node/bin:}" command -v node || echo none)"
  echo "python3 $(command -v python3) $(python3 --version 2>&1)"
  python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|safetensors|numpy|nvidia-cublas|nvidia-cuda-runtime|cuda-toolkit) ' || true
  echo "== cuBLAS"; echo "NT_CUBLAS_SOURCE=${NT_CUBLAS_SOURCE:-none} header=${NT_CUBLASLT_H:-} lib=${NT_CUBLASLT_SO:-}"
  ldconfig -p 2>/dev/null | grep -i cublas || echo "ldconfig knows no cublas"
  echo "== bandwidths (bench/gpu/machine.py)"
  python3 bench/gpu/machine.py
}

step_hfparity() {
  python3 test/gpu/hf_parity.py --out "$HFREF" --device "$PYDEV"
}

step_models() {
  python3 bench/gpu/make-model.py "$E1_SHAPE" "$E1_MODEL" --dtype bf16 && python3 bench/gpu/make-model.py "$D1_SHAPE" "$D1_MODEL" --dtype bf16
}

step_build() {
  local nodedir="$ROOT/.device/nodedir"
  [[ -f "$nodedir/include/node/node_api.h" ]] && export npm_config_nodedir="$nodedir"
  local defs=()
  [[ -n "${CUDA_ARCHS:-}" ]] && defs+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS")
  command -v nvcc >/dev/null && defs+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc)")
  if [[ -n "${NT_CUBLASLT_SO:-}" ]]; then
    defs+=("-DCUDA_cublasLt_LIBRARY=$NT_CUBLASLT_SO" "-DCUBLASLT_LIBRARY=$NT_CUBLASLT_SO" "-DCUBLASLT_INCLUDE_DIR=$(dirname "$NT_CUBLASLT_H")")
    [[ -n "${NT_CUBLAS_SO:-}" ]] && defs+=("-DCUDA_cublas_LIBRARY=$NT_CUBLAS_SO")
  fi
  echo "build dir $BUILD_DIR; npm_config_nodedir=${npm_config_nodedir:-unset}; defines: ${defs[*]:-none}"
  local ok=0
  if [[ -f node_modules/cmake-js/bin/cmake-js ]]; then
    local cd_args=()
    for d in "${defs[@]}"; do cd_args+=("--CD${d#-D}"); done
    # `build`, not `compile`: compile retries a failed build from scratch, doubling the time.
    if node node_modules/cmake-js/bin/cmake-js build --out "$BUILD_DIR" --parallel "$JOBS" "${cd_args[@]}"; then ok=1; else echo "cmake-js failed (rc $?); trying plain cmake"; fi
  else
    echo "no node_modules/cmake-js: plain cmake"
  fi
  if [[ $ok == 0 ]]; then
    # The same configuration cmake-js makes: Node-API headers only, the addon in Release/.
    local inc="${npm_config_nodedir:-/usr}/include/node"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_JS_INC=$inc" -DCMAKE_JS_SRC= -DCMAKE_JS_LIB= \
      "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$BUILD_DIR/Release" "-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=$BUILD_DIR/Release" \
      -DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION "${defs[@]}" && cmake --build "$BUILD_DIR" -j "$JOBS" && ok=1
  fi
  echo "== outputs"
  find "$BUILD_DIR" -maxdepth 3 \( -name '*.node' -o -name 'libneurotap_*.so*' -o -name 'libneurotap_engine.a' \) -exec ls -la {} \;
  local cuda_lib; cuda_lib="$(find "$BUILD_DIR" -maxdepth 3 -name 'libneurotap_cuda.so' | head -1)"
  if [[ -n "$cuda_lib" ]]; then
    # The addon looks for backends next to itself (build/Release) first.
    [[ "$(dirname "$cuda_lib")" != "$BUILD_DIR/Release" ]] && cp -f "$cuda_lib" "$BUILD_DIR/Release/"
    echo "== ldd $cuda_lib"; ldd "$cuda_lib"
    echo "== RUNPATH"; readelf -d "$cuda_lib" 2>/dev/null | grep -E 'RUNPATH|RPATH' || echo "none"
    # cuobjdump is not in every toolkit: without it, the architectures are the configured ones
    # (and the backend refuses a GPU it has no code for when it loads).
    if command -v cuobjdump >/dev/null; then
      echo "== architectures in it"; cuobjdump --list-elf "$cuda_lib" 2>&1 | head -20; cuobjdump --list-ptx "$cuda_lib" 2>&1 | head -5
    else
      echo "== architectures: ${CUDA_ARCHS:-the CMakeLists.txt default} (no cuobjdump here to list them)"
    fi
  else
    echo "NO libneurotap_cuda.so was built (see the configure output above: nvcc, cuBLASLt?)"
    [[ "$DRY_RUN" != 1 ]] && ok=0
  fi
  [[ $ok == 1 ]]
}

step_backend_ops() {
  # test/native/test-backend-ops.cc and its case files backend-ops-*.cc, as test/native/run.mjs
  # builds it, but linked with the engine library the build just made (seconds instead of
  # recompiling the engine); falls back to the engine sources.
  mkdir -p "$TB"
  local eng; eng="$(find "$BUILD_DIR" -maxdepth 3 -name libneurotap_engine.a | head -1)"
  local flags=(-std=c++17 -O2 -Wall -Wno-uninitialized -Wno-format-zero-length -I native)
  if [[ -n "$eng" ]]; then
    g++ "${flags[@]}" test/native/test-backend-ops.cc test/native/backend-ops-*.cc "$eng" -o "$TB/test-backend-ops" -lpthread -ldl || eng=""
  fi
  if [[ -z "$eng" ]]; then
    g++ "${flags[@]}" test/native/test-backend-ops.cc test/native/backend-ops-*.cc native/engine/*.cc native/io/*.cc native/ops/*.cc -o "$TB/test-backend-ops" -lpthread -ldl || return 1
  fi
  NEUROTAP_BACKEND_DIR="$BUILD_DIR/Release" "$TB/test-backend-ops"
}

step_backward_ops() {
  # bench/gpu/backward-ops.cc: the backward ops at seq 1024 next to the forward ops they mirror.
  mkdir -p "$TB"
  local eng; eng="$(find "$BUILD_DIR" -maxdepth 3 -name libneurotap_engine.a | head -1)"
  local srcs=("$eng"); [[ -n "$eng" ]] || srcs=(native/engine/*.cc native/io/*.cc native/ops/*.cc)
  g++ -std=c++17 -O2 -I native bench/gpu/backward-ops.cc "${srcs[@]}" -o "$TB/backward-ops" -lpthread -ldl || return 1
  NEUROTAP_BACKEND_DIR="$BUILD_DIR/Release" "$TB/backward-ops"
}

step_parity() {
  [[ "$DRY_RUN" == 1 ]] && export NEUROTAP_GPU_TEST_DEVICE=cpu NEUROTAP_TEST_THREADS=2
  # In groups, one process each: a crash (a kernel fault taking the process down) loses one group only.
  local rc=0 g
  for g in '^device|^gpt2' '^llama' '^mistral|^qwen2' '^edits' '^js hooks' '^generate'; do
    echo "== parity cases matching /$g/"
    node "$JS/test/gpu/run-parity.js" --filter "$g" || { local r=$?; echo "(group /$g/ exited with $r)"; rc=1; }
  done
  return $rc
}

step_vitest() {
  # Only where prepare-carry.sh packed vitest (WITH_VITEST=1): the real test file.
  [[ -f node_modules/vitest/vitest.mjs ]] || { echo "vitest not carried (WITH_VITEST=1 bash bench/gpu/prepare-carry.sh)"; return 0; }
  node node_modules/vitest/vitest.mjs run test/gpu --reporter=verbose
}

step_e1_hf() { python3 bench/gpu/hf_extract.py --model "$E1_MODEL" --device "$PYDEV" --dtype "${1:-bf16}" --attn sdpa --tokens "$E1_TOKENS" --seq "$E1_SEQ" --batch "$E1_BATCH" --max-seconds "$E1_MAX_S"; }
step_e1_hf_f32() { step_e1_hf f32; }
step_e1() { node "$JS/bench/gpu/extract.js" --model "$E1_MODEL" --device "$DEV" --dtype "${1:-$DT}" --tokens "$E1_TOKENS" --seq "$E1_SEQ" --batch "$E1_BATCH" --max-seconds "$E1_MAX_S"; }
step_e1_f32() { step_e1 f32; }
step_d1_hf() { python3 bench/gpu/hf_decode.py --model "$D1_MODEL" --device "$PYDEV" --dtype bf16 --attn "${1:-eager}" --prompt-len "$D1_PROMPT" --new-tokens "$D1_NEW" --reps "$D1_REPS" --layer "$D1_LAYER" --max-seconds "$D1_MAX_S"; }
step_d1_hf_sdpa() { step_d1_hf sdpa; }
step_d1() { node "$JS/bench/gpu/decode.js" --model "$D1_MODEL" --device "$DEV" --dtype "$DT" --prompt-len "$D1_PROMPT" --new-tokens "$D1_NEW" --reps "$D1_REPS" --layer "$D1_LAYER" --max-seconds "$D1_MAX_S"; }

step_native_all() { NEUROTAP_BACKEND_DIR="$BUILD_DIR/Release" node test/native/run.mjs; }

step_sanitize() {
  command -v compute-sanitizer >/dev/null || { echo "no compute-sanitizer"; return 0; }
  [[ -x "$TB/test-backend-ops" ]] || { echo "no test-backend-ops binary"; return 1; }
  NEUROTAP_BACKEND_DIR="$BUILD_DIR/Release" compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 "$TB/test-backend-ops"
}

if [[ "${1:-}" == --step ]]; then
  name="$2"
  shift 2
  "step_$name" "$@"
  exit $?
fi

# ------------------------------------------------------------------------------------------
# The driver.

START=$(date +%s)
mkdir -p "$OUT"
LOGS="$(mktemp -d /tmp/nt-gpu-logs.XXXXXX)"
export LOGS START
exec > >(tee -a "$OUT/run.log") 2>&1
: > "$LOGS/steps.tsv"
N=0

wanted() {
  local s=" ${SKIP:-} " o=" ${ONLY:-} "
  [[ "$s" == *" $1 "* ]] && return 1
  [[ -n "${ONLY:-}" && "$o" != *" $1 "* ]] && return 1
  return 0
}

refresh_out() {
  tar -czf "$OUT/logs.tar.gz.tmp" -C "$LOGS" . 2>/dev/null && mv -f "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
  python3 bench/gpu/collect.py "$LOGS" "$OUT" > /dev/null 2>&1 || true
}

left() { echo $(( BUDGET_S - ($(date +%s) - START) - RESERVE_S )); }

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$LOGS/steps.tsv"; }

# run_step NAME BUDGET_S [args]: in the foreground, output to the terminal and its log.
run_step() {
  local name="$1" budget="$2"; shift 2
  wanted "$name" || { record "$name" skipped - 0 "not wanted"; return 0; }
  local t; t=$(left); (( t < budget )) && budget=$t
  if (( budget < 10 )); then say "SKIP $name: out of time"; record "$name" skipped - 0 "out of time"; return 0; fi
  N=$((N + 1)); local log; log="$LOGS/$(printf '%02d' $N)-$name.log"
  say "BEGIN $name (at most ${budget}s) -> $(basename "$log")"
  local t0=$SECONDS
  timeout -k 5 "$budget" bash "$0" --step "$name" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} status=ok
  (( rc == 124 || rc == 137 )) && status=timeout || { (( rc != 0 )) && status=failed; }
  say "END $name: $status (rc $rc, $((SECONDS - t0))s)"
  record "$name" "$status" "$rc" "$((SECONDS - t0))"
  refresh_out
  [[ $status == ok ]]
}

# bg_step NAME BUDGET_S: in the background, output to its log only; wait_step NAME collects it.
declare -A BG_PID BG_T0 BG_LOG
bg_step() {
  local name="$1" budget="$2"; shift 2
  wanted "$name" || { record "$name" skipped - 0 "not wanted"; return 0; }
  local t; t=$(left); (( t < budget )) && budget=$t
  (( budget < 10 )) && { record "$name" skipped - 0 "out of time"; return 0; }
  N=$((N + 1)); BG_LOG[$name]="$LOGS/$(printf '%02d' $N)-$name.log"
  say "BEGIN $name in the background (at most ${budget}s) -> $(basename "${BG_LOG[$name]}")"
  timeout -k 5 "$budget" bash "$0" --step "$name" "$@" > "${BG_LOG[$name]}" 2>&1 &
  BG_PID[$name]=$!
  BG_T0[$name]=$SECONDS
}
wait_step() {
  local name="$1"
  [[ -n "${BG_PID[$name]:-}" ]] || return 0
  wait "${BG_PID[$name]}"
  local rc=$? status=ok
  (( rc == 124 || rc == 137 )) && status=timeout || { (( rc != 0 )) && status=failed; }
  say "END $name (background): $status (rc $rc, $((SECONDS - BG_T0[$name]))s); last lines of its log:"
  tail -n 15 "${BG_LOG[$name]}" | cut -c1-400
  record "$name" "$status" "$rc" "$((SECONDS - BG_T0[$name]))" background
  unset "BG_PID[$name]"
  refresh_out
}

finish() {
  for n in "${!BG_PID[@]}"; do kill "${BG_PID[$n]}" 2>/dev/null; record "$n" killed - - "still running at the end"; done
  refresh_out
  echo
  python3 bench/gpu/collect.py "$LOGS" "$OUT" || echo "collect.py failed"
  say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
trap 'say "interrupted"; finish; exit 124' TERM INT

# -- Node, its packages, the compiled TypeScript --------------------------------------------
setup() {
  echo "== setup"
  # Unpacked outside the repository, so that nothing large lands in .device (which travels).
  if [[ -f .device/node.xz ]]; then
    local nb=/tmp/nt-node/bin
    if [[ ! -x $nb/node || .device/node.xz -nt $nb/node ]]; then
      mkdir -p $nb && xz -dc .device/node.xz > $nb/node.tmp && chmod +x $nb/node.tmp && mv -f $nb/node.tmp $nb/node
    fi
    export PATH="$nb:$PATH"
  fi
  command -v node >/dev/null && echo "node $(node --version) at $(command -v node)" || echo "NO NODE: run bench/gpu/prepare-carry.sh here and carry .device"
  if [[ -f .device/node_modules.tar.xz ]]; then
    if [[ ! -d node_modules ]] || [[ -f node_modules/.nt-carried && .device/node_modules.tar.xz -nt node_modules/.nt-carried ]]; then
      tar -xJf .device/node_modules.tar.xz && touch node_modules/.nt-carried && echo "unpacked .device/node_modules.tar.xz"
    else
      echo "node_modules present; not unpacking the carried packages"
    fi
  fi
  if [[ -d "$JS" ]]; then
    # The compiled code finds the addon under its own root (.device/js/build) and the fixtures via NEUROTAP_ROOT.
    if [[ "$BUILD_DIR" == "$ROOT/build" ]]; then ln -sfn ../../build "$JS/build"; else ln -sfn "$BUILD_DIR" "$JS/build"; fi
    local now; now="$(bash bench/gpu/prepare-carry.sh --stamp 2>/dev/null)"
    if [[ -f "$JS/.stamp" && "$now" != "$(cat "$JS/.stamp")" ]]; then
      echo "WARNING: src/, test/gpu/ or bench/gpu/ changed after .device/js was compiled: results run the OLD TypeScript (rerun prepare-carry.sh)"
    fi
  else
    echo "NO $JS: run bench/gpu/prepare-carry.sh here and carry .device"
  fi
}

# -- CUDA toolkit and cuBLASLt: the toolkit's, or PyTorch's pip copy through a shim --------------
detect_cuda() {
  echo "== CUDA"
  if ! command -v nvcc >/dev/null; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do [[ -x "$d/nvcc" ]] && { export PATH="$PATH:$d"; break; }; done
  fi
  local nvcc; nvcc="$(command -v nvcc || true)"
  [[ -z "$nvcc" ]] && { echo "no nvcc"; export NT_CUBLAS_SOURCE=none; return 0; }
  local cuda; cuda="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
  echo "nvcc $nvcc (CUDA at $cuda)"
  local roots=() r h="" so="" lib=""
  for r in "$cuda" /usr/local/cuda /usr/local/cuda-*; do [[ -d "$r" ]] && roots+=("$(readlink -f "$r")"); done
  for r in $(printf '%s\n' "${roots[@]}" | awk '!seen[$0]++'); do
    [[ -d "$r/lib64" ]] && export LD_LIBRARY_PATH="$r/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    [[ -z "$h" ]] && h="$(ls "$r"/include/cublasLt.h "$r"/targets/*/include/cublasLt.h 2>/dev/null | head -1)"
    [[ -z "$lib" ]] && lib="$(ls "$r"/lib64/libcublasLt.so* "$r"/targets/*/lib/libcublasLt.so* 2>/dev/null | sort | head -1)"
  done
  local source=toolkit
  if [[ (-z "$h" || -z "$lib") && -f "${NEUROTAP_CUBLAS_INCLUDE:-/nonexistent}/cublasLt.h" && -f "${NEUROTAP_CUBLAS_LIB:-/nonexistent}/libcublasLt.so.13" ]]; then
    # Folders given as check:cuda takes them (CI's cache of the nvidia-cublas wheel: .ci/fetch-cublas.sh).
    h="$NEUROTAP_CUBLAS_INCLUDE/cublasLt.h" lib="$NEUROTAP_CUBLAS_LIB/libcublasLt.so.13" source=env
  fi
  if [[ -z "$h" || -z "$lib" ]]; then
    local sp; sp="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)"
    h="$(ls "$sp"/nvidia/*/include/cublasLt.h 2>/dev/null | head -1)"
    lib="$(ls "$sp"/nvidia/*/lib/libcublasLt.so* 2>/dev/null | sort | head -1)"
    source=pip
    if [[ -z "$h" || -z "$lib" ]]; then
      echo "NO cuBLASLt found (toolkits: ${roots[*]:-none}; pip: $sp/nvidia): the CUDA backend cannot build"
      export NT_CUBLAS_SOURCE=none
      return 0
    fi
  fi
  local incdir libdir; incdir="$(dirname "$h")"; libdir="$(dirname "$lib")"
  if [[ $source == toolkit && -e "$libdir/libcublasLt.so" ]]; then
    export NT_CUBLAS_SOURCE=toolkit NT_CUBLASLT_H="$h" NT_CUBLASLT_SO="" NT_CUBLAS_SO=""
    echo "cuBLASLt in the toolkit: $h, $libdir/libcublasLt.so (CMake's FindCUDAToolkit finds it)"
    return 0
  fi
  # pip wheels (or a toolkit without the unversioned .so) have libcublasLt.so.13 only and keep
  # their headers apart: a shim prefix gives CMake and the compilers the usual layout.
  local shim=/tmp/nt-cublas f ltv bv
  rm -rf "$shim"; mkdir -p "$shim/include" "$shim/lib"
  for f in "$incdir"/cublas*.h; do ln -sf "$f" "$shim/include/"; done
  for f in "$libdir"/libcublas*.so*; do ln -sf "$f" "$shim/lib/"; done
  ltv="$(ls "$libdir"/libcublasLt.so.* 2>/dev/null | sort | head -1)"; ltv="${ltv:-$lib}"
  bv="$(ls "$libdir"/libcublas.so.* 2>/dev/null | sort | head -1)"
  ln -sf "$ltv" "$shim/lib/libcublasLt.so"
  [[ -n "$bv" ]] && ln -sf "$bv" "$shim/lib/libcublas.so"
  export NT_CUBLAS_SOURCE=$source NT_CUBLASLT_H="$shim/include/cublasLt.h" NT_CUBLASLT_SO="$shim/lib/libcublasLt.so" NT_CUBLAS_SO="${bv:+$shim/lib/libcublas.so}"
  export CPATH="$shim/include${CPATH:+:$CPATH}" LIBRARY_PATH="$shim/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export CMAKE_INCLUDE_PATH="$shim/include${CMAKE_INCLUDE_PATH:+:$CMAKE_INCLUDE_PATH}" CMAKE_LIBRARY_PATH="$shim/lib${CMAKE_LIBRARY_PATH:+:$CMAKE_LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "cuBLASLt from $source: $h, $ltv; shim $shim (CPATH, LIBRARY_PATH, CMAKE_INCLUDE_PATH, CMAKE_LIBRARY_PATH, LD_LIBRARY_PATH; -DCUDA_cublasLt_LIBRARY for FindCUDAToolkit)"
}

say "neurotap GPU harness: DRY_RUN=$DRY_RUN, budget ${BUDGET_S}s, OUT=$OUT, build $BUILD_DIR, logs $LOGS"
N=$((N + 1)); { setup; detect_cuda; } > >(tee "$LOGS/$(printf '%02d' $N)-setup.log") 2>&1   # in this shell: keeps the exports
sleep 0.2
record setup ok 0 "$(( $(date +%s) - START ))"

run_step facts 60
bg_step hfparity 150
bg_step models 180
run_step build 300
run_step backend_ops 120
wait_step hfparity
run_step parity 150
wait_step models
run_step e1_hf 90
run_step e1 90
run_step d1_hf 120
run_step d1 120
# Extras, while time lasts.
run_step d1_hf_sdpa 90
run_step backward_ops 60
run_step e1_f32 60
run_step e1_hf_f32 60
run_step vitest 120
run_step sanitize 120
if [[ "$DRY_RUN" != 1 || "${DRY_NATIVE:-0}" == 1 ]]; then run_step native_all 200; else record native_all skipped - 0 "dry run (DRY_NATIVE=1 runs it)"; fi
finish
