// Messages between the fuzz supervisor and its worker processes, the outcome of a case, and
// where the harness finds its fixtures and the checkout under test.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This checkout: its test/fixtures are the seeds of every case. */
export const HARNESS_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = join(HARNESS_ROOT, 'test', 'fixtures');

/**
 * The checkout whose API is fuzzed (its dist/ and build/): NEUROTAP_FUZZ_ROOT, else this one.
 * Build it first (`npx tsc -p tsconfig.build.json`, `make -C build`).
 */
export function targetRoot(): string {
  return resolve(process.env.NEUROTAP_FUZZ_ROOT ?? HARNESS_ROOT);
}

export type ToWorker = { id: string };

/** How one case ended inside the worker. */
export type CaseOutcome =
  | { status: 'ok' }
  /** A coded neurotap error; `stage` says when it came after a successful load. */
  | { status: 'coded'; code: string; message: string; stage?: 'attach' | 'run' }
  /** Anything else: `outcome` names the class (uncoded, bad-run, timeout, memory, crash, harness). */
  | { status: 'failure'; outcome: string; message: string };

export type FromWorker =
  | { type: 'ready'; tmp: string }
  | { type: 'started'; id: string; what: string }
  | { type: 'done'; id: string; what: string; outcome: CaseOutcome };
