// Runs the CUDA parity cases (./parity-cases.ts) with plain node, for the GPU machine, which
// has no vitest: bench/gpu/run.sh runs the compiled copy, .device/js/test/gpu/run-parity.js.
// Prints PASS/FAIL/SKIP per case, then one JSON line {"bench":"gpu-parity", ...}. Exit status:
// 0 all passed (or CUDA unavailable: the JSON says why), 1 a case failed.
//
//   node .device/js/test/gpu/run-parity.js [--filter REGEX]
//   npx tsx test/gpu/run-parity.ts [--filter REGEX]      (where tsx is installed)
import { parseArgs } from 'node:util';

import { buildCases, cudaStatus, disposeAll, SkipCase } from './parity-cases.js';

const { values } = parseArgs({ options: { filter: { type: 'string' } } });
const filter = values.filter ? new RegExp(values.filter) : null;

const status = cudaStatus();
if (!status.available) {
  console.log(`SKIP all: no usable CUDA backend: ${status.reason}`);
  console.log(JSON.stringify({ bench: 'gpu-parity', available: false, reason: status.reason }));
  process.exit(0);
}
console.log(`CUDA parity on ${status.device}`);

interface Outcome {
  name: string;
  status: 'pass' | 'fail' | 'skip';
  seconds: number;
  info?: string;
  error?: string;
}
const outcomes: Outcome[] = [];
for (const c of buildCases()) {
  if (filter && !filter.test(c.name)) continue;
  const t0 = performance.now();
  let o: Outcome;
  try {
    const info = await c.run();
    o = { name: c.name, status: 'pass', seconds: 0, ...(info ? { info } : {}) };
  } catch (err) {
    const e = err as Error;
    const code = (e as { code?: unknown }).code;
    o = err instanceof SkipCase ? { name: c.name, status: 'skip', seconds: 0, info: e.message } : { name: c.name, status: 'fail', seconds: 0, error: `${code ? `[${String(code)}] ` : ''}${e.message}` };
  }
  o.seconds = Number(((performance.now() - t0) / 1000).toFixed(3));
  outcomes.push(o);
  const tag = o.status.toUpperCase();
  console.log(`${tag} ${o.name} (${o.seconds.toFixed(2)} s)${o.info ? `: ${o.info}` : ''}${o.error ? `\n  ${o.error.split('\n').join('\n  ')}` : ''}`);
}
await disposeAll();
const count = (s: Outcome['status']) => outcomes.filter((o) => o.status === s).length;
const summary = { passed: count('pass'), failed: count('fail'), skipped: count('skip') };
console.log(`\n${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped`);
console.log(
  JSON.stringify({
    bench: 'gpu-parity',
    available: true,
    device: status.device,
    ...summary,
    cases: outcomes.map((o) => ({ ...o, ...(o.error ? { error: o.error.slice(0, 1500) } : {}) })),
  }),
);
process.exit(summary.failed ? 1 : 0);
