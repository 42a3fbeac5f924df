// Fuzz worker: a child process that builds and runs one case per IPC message, against the API
// in <root>/dist (NEUROTAP_FUZZ_ROOT), and reports each outcome. The supervisor
// (supervisor.ts) bounds its time and memory and restarts it when a case crashes it.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { planBackward } from './backward-calls.js';
import type { Call } from './calls.js';
import { buildCase, type BuiltCase } from './cases.js';
import { FIXTURES, targetRoot, type CaseOutcome, type ToWorker } from './protocol.js';
import { Rng } from './rng.js';

type Api = typeof import('../../src/index.js');
type Model = Awaited<ReturnType<Api['loadModel']>>;

const api = (await import(pathToFileURL(join(targetRoot(), 'dist', 'index.js')).href)) as Api;
const tmpRoot = mkdtempSync(join(process.env.NEUROTAP_FUZZ_TMP ?? tmpdir(), `neurotap-fuzz-${process.pid}-`));
/** Unmutated models that SAE cases attach to, loaded once per worker. */
const models = new Map<string, Model>();

/**
 * Codes that are coded but still defects here: ERR_INTERNAL is the addon's catch-all for an
 * unexpected C++ exception, and ERR_OUT_OF_MEMORY from a few-hundred-KB fixture means something
 * allocated in proportion to a corrupt size.
 */
const DEFECT_CODES: Record<string, string> = {
  ERR_INTERNAL: 'an unexpected native exception',
  ERR_OUT_OF_MEMORY: 'a tiny fixture ran out of memory',
};

/** A coded neurotap error ('ERR_…'), or null for anything else. */
function codeOf(err: unknown): string | null {
  if (!(err instanceof api.NeurotapError)) return null;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('ERR_') ? code : null;
}

/** An error in one line, with the innermost stack frame in the checkout under test (where to fix it). */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return `non-Error thrown: ${String(err)}`.slice(0, 300);
  const code = (err as { code?: unknown }).code;
  const frame = err.stack?.split('\n').find((l) => l.includes(targetRoot()) && !l.includes('/test/fuzz/'));
  const where = frame ? ` (${frame.trim().replace(`${targetRoot()}/`, '')})` : '';
  return `${err.constructor.name}${code ? ` [${String(code)}]` : ''}: ${err.message.slice(0, 200)}${where}`;
}

/** Runs `step`; a coded error becomes its code, anything else is rethrown as a failure. */
async function coded<T>(step: () => Promise<T>): Promise<T | { code: string; message: string }> {
  try {
    return await step();
  } catch (err) {
    const code = codeOf(err);
    if (code === null) throw err;
    return { code, message: (err as Error).message.slice(0, 300) };
  }
}
const isCoded = (v: unknown): v is { code: string; message: string } => typeof v === 'object' && v !== null && 'code' in v && 'message' in v && Object.keys(v).length === 2;

/** A short run on a loaded model: three token ids with every hook captured, then text if it has a tokenizer. */
async function shortRun(model: Model): Promise<string | null> {
  const vocab = model.config.dVocab;
  const ids = [0, 1, 2].map((i) => i % vocab);
  const r = await model.run([ids], { capture: ['**'] });
  if (!r.logits || r.logits.data.length !== ids.length * vocab) return `logits of ${r.logits?.data.length} values, expected ${ids.length * vocab}`;
  if (r.cache.size === 0) return 'no hook was captured';
  if (model.tokenizer) await model.run('Hello world', { returnLogits: 'last' });
  return null;
}

async function runModel(dir: string): Promise<CaseOutcome> {
  const model = await coded(() => api.loadModel(dir, { threads: 1 }));
  if (isCoded(model)) return { status: 'coded', code: model.code, message: model.message };
  try {
    const run = await coded(() => shortRun(model));
    if (isCoded(run)) return { status: 'coded', code: run.code, message: `after a successful load, the short run: ${run.message}`, stage: 'run' };
    if (run !== null) return { status: 'failure', outcome: 'bad-run', message: run };
    return { status: 'ok' };
  } finally {
    model.dispose();
  }
}

/** The unmutated fixture model at `dir`, loaded once per worker. */
async function cachedModel(dir: string): Promise<Model> {
  let model = models.get(dir);
  if (!model) {
    model = await api.loadModel(dir, { threads: 1 });
    models.set(dir, model);
  }
  return model;
}

async function runSae(path: string, hook: string | undefined, modelDir: string): Promise<CaseOutcome> {
  const sae = await coded(() => api.loadSae(path, hook ? { hook } : {}));
  if (isCoded(sae)) return { status: 'coded', code: sae.code, message: sae.message };
  // It loaded: attach it to its model and run, which must work or fail with a coded error.
  const model = await cachedModel(modelDir);
  const attached = await coded(() => model.attachSae(sae));
  if (isCoded(attached)) return { status: 'coded', code: attached.code, message: `the SAE loaded; attaching it: ${attached.message}`, stage: 'attach' };
  try {
    const capture = [attached.hooks.hook_sae_acts_post, attached.hooks.hook_sae_output];
    const run = await coded(() => model.run([[0, 1, 2]], { capture, saeFeatures: { k: 2 } }));
    if (isCoded(run)) return { status: 'coded', code: run.code, message: `the SAE attached; the run: ${run.message}`, stage: 'run' };
    return { status: 'ok' };
  } finally {
    await model.detachSae(attached.hook);
  }
}

async function runGguf(path: string, controlVector: boolean): Promise<CaseOutcome> {
  const r = await coded(async () => (controlVector ? api.loadControlVector(path) : api.readGguf(path)));
  if (isCoded(r)) return { status: 'coded', code: r.code, message: r.message };
  return { status: 'ok' };
}

/** An API call with bad arguments; after a rejection the model must still run. */
async function runCall(call: Call, modelDir: string): Promise<CaseOutcome> {
  const model = await cachedModel(modelDir);
  let outcome: CaseOutcome;
  try {
    await call.run(api, model, modelDir);
    if (call.expect !== 'any') return { status: 'failure', outcome: 'accepted-invalid', message: call.expect === 'thrown' ? 'resolved although a hook threw' : 'resolved although an argument is invalid' };
    outcome = { status: 'ok' };
  } catch (err) {
    if (call.expect === 'thrown') {
      if (!Object.is(err, call.thrown)) return { status: 'failure', outcome: 'wrong-rejection', message: `rejected with ${describe(err)} instead of the thrown value` };
      outcome = { status: 'ok' };
    } else {
      const code = codeOf(err);
      if (code === null) throw err;
      outcome = { status: 'coded', code, message: (err as Error).message.slice(0, 300) };
    }
  }
  const after = await coded(() => model.run([[1, 2, 3]]));
  if (isCoded(after)) return { status: 'failure', outcome: 'unusable-after-error', message: `the model no longer runs: ${after.code} ${after.message}` };
  return outcome;
}

/** The first non-finite entry of `t`, as `name[i] = v`, or null. */
function nonFinite(name: string, data: ArrayLike<number>): string | null {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return `${name}[${i}] = ${data[i]}`;
  return null;
}

/** A good backward pass: the model must still run one after a failed call. */
async function goodBackward(model: Model): Promise<string | null> {
  const r = await model.backward([[1, 2, 3]], { metric: { logit: { token: 1 } }, grads: ['blocks.0.hook_resid_pre'] });
  return nonFinite('metric', [r.metric ?? NaN]) ?? nonFinite('grad', r.grads.get('blocks.0.hook_resid_pre').data);
}

/**
 * A backward call planned against the fixture model (its description replaces the case's once
 * planned); then a good backward pass and a run on the same model must succeed.
 */
async function runBackwardCase(id: string, modelDir: string, describeAs: (what: string) => void): Promise<CaseOutcome> {
  const model = await cachedModel(modelDir);
  const call = planBackward(new Rng(`${id}/plan`), api, model);
  describeAs(call.what);
  let outcome: CaseOutcome;
  try {
    const r = await call.run();
    if (call.expect !== 'any') return { status: 'failure', outcome: 'accepted-invalid', message: call.expect === 'thrown' ? 'resolved although a hook threw' : 'resolved although an argument is invalid' };
    if (call.finite) {
      const bad = r.numbers.map(([n, v]) => (v === null ? null : nonFinite(n, [v]))).find((x) => x) ?? r.tensors.map(([n, t]) => nonFinite(n, t.data)).find((x) => x);
      if (bad) return { status: 'failure', outcome: 'non-finite', message: `finite inputs gave ${bad}` };
    }
    outcome = { status: 'ok' };
  } catch (err) {
    if (call.expect === 'thrown') {
      if (!Object.is(err, call.thrown)) return { status: 'failure', outcome: 'wrong-rejection', message: `rejected with ${describe(err)} instead of the thrown value` };
      outcome = { status: 'ok' };
    } else {
      const code = codeOf(err);
      if (code === null) throw err;
      if (DEFECT_CODES[code]) return { status: 'failure', outcome: code, message: `${DEFECT_CODES[code]}: ${describe(err)}` };
      outcome = { status: 'coded', code, message: (err as Error).message.slice(0, 300) };
    }
  }
  const after = await coded(() => goodBackward(model));
  if (isCoded(after)) return { status: 'failure', outcome: 'unusable-after-error', message: `a good backward pass fails: ${after.code} ${after.message}` };
  if (after !== null) return { status: 'failure', outcome: 'unusable-after-error', message: `a good backward pass gives ${after}` };
  const run = await coded(() => model.run([[1, 2, 3]]));
  if (isCoded(run)) return { status: 'failure', outcome: 'unusable-after-error', message: `the model no longer runs: ${run.code} ${run.message}` };
  return outcome;
}

/** The supervisor's own checks: a case that hangs, grows without bound, aborts or throws uncoded. */
async function misbehave(behaviour: string): Promise<CaseOutcome> {
  if (behaviour === 'hang') await new Promise(() => setInterval(() => {}, 1000));
  if (behaviour === 'alloc') {
    const keep: Buffer[] = [];
    for (;;) {
      keep.push(Buffer.alloc(64 * 2 ** 20, 1));
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  if (behaviour === 'crash') process.kill(process.pid, 'SIGKILL');
  throw new TypeError('an uncoded error');
}

async function runCase(c: BuiltCase, describeAs: (what: string) => void): Promise<CaseOutcome> {
  const t = c.target;
  if (t.api === 'selftest') return misbehave(t.behaviour);
  if (t.api === 'backward') return runBackwardCase(c.id, t.model, describeAs);
  if (t.api === 'call') return runCall(t.call, t.model);
  const o = t.api === 'model' ? await runModel(t.dir) : t.api === 'sae' ? await runSae(t.path, t.hook, t.model) : await runGguf(t.path, t.controlVector);
  if (o.status === 'coded' && DEFECT_CODES[o.code]) return { status: 'failure', outcome: o.code, message: `${DEFECT_CODES[o.code]}: ${o.message}` };
  return o;
}

process.on('message', (msg: ToWorker) => {
  void (async () => {
    const work = join(tmpRoot, 'case');
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work);
    let outcome: CaseOutcome;
    let what = '';
    try {
      const c = buildCase(msg.id, FIXTURES, work);
      what = c.what;
      process.send!({ type: 'started', id: msg.id, what });
      outcome = await runCase(c, (w) => {
        what = `${c.what}: ${w}`;
        process.send!({ type: 'started', id: msg.id, what });
      });
    } catch (err) {
      outcome = what ? { status: 'failure', outcome: 'uncoded', message: describe(err) } : { status: 'failure', outcome: 'harness', message: describe(err) };
    }
    // Let deferred work (finalizers, rejected promises) surface inside this case, not the next.
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setImmediate(r));
    rmSync(work, { recursive: true, force: true });
    process.send!({ type: 'done', id: msg.id, what, outcome });
  })();
});

process.on('disconnect', () => {
  rmSync(tmpRoot, { recursive: true, force: true });
  process.exit(0);
});
process.send!({ type: 'ready', tmp: tmpRoot });
