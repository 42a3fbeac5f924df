// Command line of the API fuzz harness:
//   npx tsx test/fuzz/main.ts [--cases N] [--from N] [--kinds config,npz] [--workers N]   (--kinds backward: backward passes)
//                             [--timeout-ms N] [--memory-mb N] [--root DIR] [--json FILE]
//   npx tsx test/fuzz/main.ts --case config:17 [--case ...]   rerun cases, print their outcome
//   npx tsx test/fuzz/main.ts --keep DIR --case config:17      write a case's files to DIR
// Exits 1 when a case fails. test/fuzz.test.ts runs the same cases under vitest.
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

import { buildCase, EXTRA_KINDS, KINDS, parseCaseId, type Kind } from './cases.js';
import { FIXTURES, targetRoot } from './protocol.js';
import { caseIds, failures, label, summarize } from './summary.js';
import { runFuzz } from './supervisor.js';

function parseArgs(argv: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument '${a}'`);
    const [k, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
    const v = inline ?? argv[++i];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    out.set(k, [...(out.get(k) ?? []), v]);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const num = (k: string, fallback: number) => {
  const v = args.get(k)?.at(-1);
  const n = v === undefined ? fallback : Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${k} must be a non-negative integer`);
  return n;
};
if (args.has('root')) process.env.NEUROTAP_FUZZ_ROOT = resolve(args.get('root')!.at(-1)!);

const explicit = args.get('case') ?? [];
explicit.forEach(parseCaseId);
if (args.has('keep')) {
  const dir = resolve(args.get('keep')!.at(-1)!);
  for (const id of explicit) {
    const work = resolve(dir, id.replace(':', '-'));
    mkdirSync(work, { recursive: true });
    const c = buildCase(id, FIXTURES, work);
    console.log(`${id}: ${c.what}\n  ${JSON.stringify(c.target)}`);
  }
  process.exit(0);
}

const kinds = (args.get('kinds')?.at(-1)?.split(',') ?? [...KINDS]) as Kind[];
const allKinds: readonly string[] = [...KINDS, ...EXTRA_KINDS];
for (const k of kinds) if (!allKinds.includes(k)) throw new Error(`unknown kind '${k}' (${allKinds.join(', ')})`);
const ids = explicit.length ? explicit : caseIds(num('cases', Number(process.env.NEUROTAP_FUZZ_CASES ?? 900)), num('from', 0), kinds);
console.log(`fuzzing ${targetRoot()} with ${ids.length} case(s)`);
const t0 = performance.now();
let lastPrint = t0;
const results = await runFuzz(ids, {
  workers: num('workers', explicit.length ? 1 : 2),
  timeoutMs: num('timeout-ms', 5000),
  memoryBytes: num('memory-mb', 1536) * 2 ** 20,
  onResult: (r, done, total) => {
    if (explicit.length) console.log(`${r.id}: ${label(r)} in ${r.ms} ms\n  mutation: ${r.what}\n  ${'message' in r.outcome ? r.outcome.message : ''}`);
    else if (performance.now() - lastPrint > 10_000) {
      lastPrint = performance.now();
      console.log(`  ${done}/${total} cases`);
    }
  },
});
console.log(summarize(results, (performance.now() - t0) / 1000));
if (args.has('json')) writeFileSync(args.get('json')!.at(-1)!, JSON.stringify(results, null, 1));
process.exit(failures(results).length ? 1 : 0);
