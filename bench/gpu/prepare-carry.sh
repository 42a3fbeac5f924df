#!/usr/bin/env bash
# Prepares .device/ HERE (no GPU needed) for a GPU device run of bench/gpu/run.sh: run it right
# before every `run` call, then pass carry [".device"]. It writes, all git-ignored:
#
#   .device/node.xz               this machine's Node binary (xz)
#   .device/node_modules.tar.xz   the packages the run needs (bench/gpu/pack-deps.mjs): cmake-js and
#                                 its dependencies, node-addon-api, node-api-headers,
#                                 node-gyp-build, @huggingface/tokenizers (+ vitest and tsx
#                                 with WITH_VITEST=1, about 13 MiB more)
#   .device/nodedir/include/node  Node-API headers where cmake-js looks (npm_config_nodedir), so
#                                 it never downloads Node's headers (the GPU machine is offline)
#   .device/js/                   src/, test/gpu/, test/helpers.ts and bench/gpu/ compiled to
#                                 JavaScript (bench/gpu/tsconfig.device.json), with a .stamp of
#                                 the sources so run.sh can warn when they changed since
#
# and prints the sizes: the working tree plus .device must stay under the tool's 64 MiB.
#   bash bench/gpu/prepare-carry.sh            prepare
#   bash bench/gpu/prepare-carry.sh --stamp    print the sources' hash (run.sh uses it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

stamp() {
  # Works without git (the device machine's copy has no .git).
  find src test/gpu bench/gpu test/helpers.ts -name '*.ts' -type f 2>/dev/null | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1
}
if [[ "${1:-}" == --stamp ]]; then
  stamp
  exit 0
fi

mkdir -p .device
rm -rf .device/node .device/bin   # unpacked copies would travel too: 94 MiB
# .device/ is in .gitignore (the device copy carries only what `carry` names). A linked worktree
# has no .git/info/exclude to add it to.

# 1. Node.
node_bin="$(readlink -f "$(command -v node)")"
[[ -f .device/node.xz && ! "$node_bin" -nt .device/node.xz ]] || xz -T0 -6 -c "$node_bin" > .device/node.xz
ldd "$(readlink -f "$(command -v node)")" | grep -q 'libnode' && echo "WARNING: this node links libnode.so: the carried binary will not run alone"

# 2. Packages.
extra=()
[[ "${WITH_VITEST:-0}" == 1 ]] && extra=(vitest tsx)
node bench/gpu/pack-deps.mjs .device/node_modules.tar.xz "${extra[@]}"

# 3. Node-API headers for cmake-js (it only checks that include/node/node.h exists; the addon
# includes Node-API headers only).
rm -rf .device/nodedir
mkdir -p .device/nodedir/include/node
cp node_modules/node-api-headers/include/*.h .device/nodedir/include/node/
printf '/* Placeholder: cmake-js checks that node.h exists; neurotap uses Node-API headers only. */\n#include "node_api.h"\n' > .device/nodedir/include/node/node.h

# 4. The TypeScript, compiled.
rm -rf .device/js
if ! npx --no-install tsc -p bench/gpu/tsconfig.device.json; then
  echo "WARNING: tsc reported errors (the JavaScript was still emitted; see above)"
fi
stamp > .device/js/.stamp
[[ -f .device/js/test/gpu/run-parity.js && -f .device/js/bench/gpu/extract.js && -f .device/js/bench/gpu/decode.js ]] || { echo "ERROR: compiled files missing under .device/js"; exit 1; }

# 5. Sizes.
tree_bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
dev_bytes=$(du -sb .device | cut -f1)
for p in .device/node.xz .device/node_modules.tar.xz .device/nodedir .device/js; do
  printf '  %-30s %8.1f MiB\n' "$p" "$(echo "$(du -sb "$p" | cut -f1) / 1048576" | bc -l)"
done
printf '  working tree (tracked + untracked, not ignored) %.1f MiB; .device %.1f MiB; total %.1f MiB of 64\n' \
  "$(echo "$tree_bytes / 1048576" | bc -l)" "$(echo "$dev_bytes / 1048576" | bc -l)" "$(echo "($tree_bytes + $dev_bytes) / 1048576" | bc -l)"
if (( tree_bytes + dev_bytes > 60 * 1048576 )); then echo "WARNING: over 60 MiB: the run tool refuses more than 64 MiB"; fi
