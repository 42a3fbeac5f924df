// API fuzz test: mutated config.json, safetensors weights and shard index, tokenizer.json, GGUF
// control vectors, SAE cfg.json / weights and Gemma Scope params.npz, each run in a worker
// process under a time and memory bound (harness: test/fuzz/, command line: test/fuzz/main.ts).
// NEUROTAP_FUZZ_CASES=N runs N cases instead of the default; NEUROTAP_FUZZ_FROM=K starts the
// case numbers at K (other cases); NEUROTAP_FUZZ_ROOT=DIR fuzzes another built checkout.
// Backward passes (Model.backward, attributionPatching, integratedGradients on the fixture models)
// run as their own share: NEUROTAP_FUZZ_BACKWARD_CASES=N (default 400, about 10-15 s on 2 cores).
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { loadModel } from '../src/index.js';
import * as api from '../src/index.js';
import { planBackward } from './fuzz/backward-calls.js';
import { buildCase } from './fuzz/cases.js';
import { FIXTURES } from './fuzz/protocol.js';
import { Rng } from './fuzz/rng.js';
import { caseIds, failures, label, reproducer, summarize } from './fuzz/summary.js';
import { runFuzz } from './fuzz/supervisor.js';

const CASES = Number(process.env.NEUROTAP_FUZZ_CASES ?? 3000);
const FROM = Number(process.env.NEUROTAP_FUZZ_FROM ?? 0);
const BACKWARD_CASES = Number(process.env.NEUROTAP_FUZZ_BACKWARD_CASES ?? 400);
const WORKERS = Number(process.env.NEUROTAP_FUZZ_WORKERS ?? 2);
const TIMEOUT_MS = 5000;

/** Every entry under `dir`: file contents hashed, links, folders and FIFOs by kind (paths relative to `dir`). */
function snapshot(dir: string, rel = ''): string[] {
  return readdirSync(join(dir, rel))
    .sort()
    .flatMap((name) => {
      const p = join(rel, name);
      const st = lstatSync(join(dir, p));
      if (st.isSymbolicLink()) return [`${p} -> ${readlinkSync(join(dir, p)).replace(dir, '<work>')}`];
      if (st.isDirectory()) return [`${p}/`, ...snapshot(dir, p)];
      if (st.isFIFO()) return [`${p} fifo`];
      return [`${p} ${createHash('sha256').update(readFileSync(join(dir, p))).digest('hex')}`];
    });
}

describe('API fuzzing', () => {
  it('a case id always builds the same files', () => {
    const root = mkdtempSync(join(tmpdir(), 'neurotap-fuzz-ids-'));
    try {
      for (const id of caseIds(45, 1000)) {
        const a = join(root, 'a'), b = join(root, 'b');
        const ca = buildCase(id, FIXTURES, a), cb = buildCase(id, FIXTURES, b);
        expect(ca.what).toBe(cb.what);
        expect(snapshot(a).map((l) => l.replace('<work>', ''))).toEqual(snapshot(b).map((l) => l.replace('<work>', '')));
        rmSync(a, { recursive: true, force: true });
        rmSync(b, { recursive: true, force: true });
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('a backward case id always plans the same call on the same model', async () => {
    const model = await loadModel(join(FIXTURES, 'models', 'gpt2'), { threads: 1 });
    try {
      for (const id of caseIds(30, 1000, ['backward'])) {
        const a = planBackward(new Rng(`${id}/plan`), api, model);
        const b = planBackward(new Rng(`${id}/plan`), api, model);
        expect([a.what, a.expect, a.finite]).toEqual([b.what, b.expect, b.finite]);
      }
    } finally {
      model.dispose();
    }
  });

  it('charges a hang, a memory blow-up, a crash and an uncoded error each to its own case', async () => {
    const ids = ['config:0', 'selftest:hang', 'gguf:0', 'selftest:alloc', 'config:1', 'selftest:crash', 'gguf:1', 'selftest:uncoded', 'npz:0'];
    const results = await runFuzz(ids, { workers: 1, timeoutMs: 2000, memoryBytes: 256 * 2 ** 20 });
    const labels = Object.fromEntries(results.map((r) => [r.id, r.outcome.status === 'failure' ? r.outcome.outcome : 'passed']));
    expect(labels).toEqual({
      'config:0': 'passed',
      'selftest:hang': 'timeout',
      'gguf:0': 'passed',
      'selftest:alloc': 'memory',
      'config:1': 'passed',
      'selftest:crash': 'crash',
      'gguf:1': 'passed',
      'selftest:uncoded': 'uncoded',
      'npz:0': 'passed',
    });
  }, 120_000);

  it(
    `${CASES} mutated inputs each load and run, or fail with a coded error, within ${TIMEOUT_MS} ms and 1.5 GiB`,
    async () => {
      const t0 = performance.now();
      const results = await runFuzz(caseIds(CASES, FROM), { workers: WORKERS, timeoutMs: TIMEOUT_MS });
      console.log(summarize(results, (performance.now() - t0) / 1000));
      expect(results).toHaveLength(CASES);
      const bad = failures(results).map((r) => `${r.id} ${label(r)}: ${'message' in r.outcome ? r.outcome.message : ''} [${r.what}] -> ${reproducer(r.id)}`);
      expect(bad).toEqual([]);
    },
    // Headroom for cases that run into the time bound (each costs the bound plus a worker restart).
    Math.max(600_000, CASES * 400),
  );

  it(
    `${BACKWARD_CASES} random and mutated backward passes each succeed (finite gradients from finite inputs) or fail coded, and the model stays usable`,
    async () => {
      const t0 = performance.now();
      const results = await runFuzz(caseIds(BACKWARD_CASES, FROM, ['backward']), { workers: WORKERS, timeoutMs: TIMEOUT_MS });
      console.log(summarize(results, (performance.now() - t0) / 1000));
      expect(results).toHaveLength(BACKWARD_CASES);
      const bad = failures(results).map((r) => `${r.id} ${label(r)}: ${'message' in r.outcome ? r.outcome.message : ''} [${r.what}] -> ${reproducer(r.id)}`);
      expect(bad).toEqual([]);
    },
    Math.max(300_000, BACKWARD_CASES * 400),
  );
});
