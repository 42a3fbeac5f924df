// API-call fuzz cases (kind `call`): bad token ids, batch shapes and options for loadModel,
// Model.run and Model.generate on the GPT-2 fixture, and hooks that misbehave (throw non-Error
// values, return wrongly sized tensors, transfer the activation's buffer).
import type { Rng } from './rng.js';

type Api = typeof import('../../src/index.js');
type Model = Awaited<ReturnType<Api['loadModel']>>;

/**
 * What a call must do: 'coded', reject with a coded error (the argument is invalid); 'any',
 * resolve or reject with a coded error; 'thrown', reject with exactly the value the hook threw.
 */
export type Expect = 'coded' | 'any' | 'thrown';

export interface Call {
  what: string;
  expect: Expect;
  /** For 'thrown': the value the hook throws. */
  thrown?: unknown;
  run(api: Api, model: Model, modelDir: string): Promise<unknown>;
}

const HOOK = 'blocks.0.hook_resid_post';

/** A value as the case description shows it (strings quoted, NaN and undefined spelled out). */
const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/** A bad token id in a valid [[…]] batch, with whether it is invalid for a vocabulary of `vocab`. */
function tokenProbe(rng: Rng, vocab: number): Call {
  const [v, invalid] = rng.pick<[unknown, boolean]>([
    [vocab, true],
    [vocab - 1, false],
    [-1, true],
    [2 ** 32, true],
    [2 ** 32 + 1, true],
    [-(2 ** 32) + 1, true],
    [2 ** 31, true],
    [0.5, true],
    [NaN, true],
    [Infinity, true],
    [1e300, true],
    ['1', true],
    [null, true],
    [undefined, true],
    [-0, false],
  ]);
  const at = rng.int(3);
  const ids: unknown[] = [1, 2, 3];
  ids[at] = v;
  const api = rng.pick(['run', 'generate'] as const);
  return {
    what: `${api} with token id ${show(v)} at ${at}`,
    expect: invalid ? 'coded' : 'any',
    run: (_api, m) => (api === 'run' ? m.run([ids as number[]]) : m.generate([ids as number[]], { maxNewTokens: 2 })),
  };
}

/** The probes, each built with its random parameters. */
const PROBES: ((rng: Rng, vocab: number, layers: number) => Call)[] = [
  tokenProbe,
  tokenProbe,
  (rng) => {
    const [input, expect] = rng.pick<[unknown, Expect]>([
      [[], 'coded'],
      [[[]], 'coded'],
      [[[1, 2], [3]], 'any'],
      [5, 'coded'],
      [[5], 'coded'],
      [[[1, 2, 3], 'x'], 'coded'],
      [[new Array(65).fill(1)], 'coded'],
      [{ length: 1, 0: [1] }, 'any'],
    ]);
    return { what: `run with input ${JSON.stringify(input).slice(0, 60)}`, expect, run: (_a, m) => m.run(input as number[][]) };
  },
  (rng, _v, layers) => {
    const [value, expect] = rng.pick<[unknown, Expect]>([
      [NaN, 'coded'],
      [-1, 'coded'],
      [0.5, 'coded'],
      ['1', 'coded'],
      [layers + 1, 'any'],
      [2 ** 32 + 1, 'coded'],
      [0, 'any'],
      [layers, 'any'],
    ]);
    return { what: `run with stopAtLayer ${show(value)}`, expect, run: (_a, m) => m.run([[1, 2, 3]], { stopAtLayer: value as number, capture: ['blocks.0.hook_resid_pre'] }) };
  },
  (rng) => {
    const [capture, expect] = rng.pick<[unknown, Expect]>([
      ['**', 'any'],  // one string is one pattern (README)
      [[5], 'coded'],
      [['nope.hook_x'], 'coded'],
      [[null], 'coded'],
      ['blocks.0.hook_resid_post', 'any'],
      [['**', '**'], 'any'],
      [{}, 'coded'],
    ]);
    return { what: `run with capture ${JSON.stringify(capture)}`, expect, run: (_a, m) => m.run([[1, 2, 3]], { capture: capture as string[] }) };
  },
  (rng, vocab) => {
    const [opts, expect, what] = rng.pick<[object, Expect, string]>([
      [{ logitsOutput: new Float32Array(3) }, 'coded', 'a 3-float logitsOutput'],
      [{ logitsOutput: new Float32Array(3 * vocab + 1) }, 'coded', 'a logitsOutput one too long'],
      [{ logitsOutput: [0, 1] }, 'coded', 'an array as logitsOutput'],
      [{ outputs: { [HOOK]: new Float32Array(1) } }, 'coded', 'a 1-float output buffer'],
      [{ outputs: { [HOOK]: new Float64Array(3 * 64) } }, 'coded', 'a Float64Array output buffer'],
      [{ outputs: { 'nope.hook': new Float32Array(1) } }, 'coded', 'an output buffer for an unknown hook'],
      [{ returnLogits: 'first' }, 'any', "returnLogits 'first'"],
      [{ hooks: { [HOOK]: 5 } }, 'coded', 'a number as hook'],
      [{ hooks: { [HOOK]: { op: 'add', vector: [1] } } }, 'coded', 'an add edit of the wrong width'],
      [{ hooks: { [HOOK]: { op: 'explode' } } }, 'coded', 'an unknown edit op'],
      [{ hooks: { [HOOK]: { op: 'scale', factor: NaN } } }, 'any', 'a NaN scale edit'],
      [{ saeFeatures: { k: -1 } }, 'any', 'saeFeatures k -1 without an SAE'],
      [{ addSpecialTokens: 'yes' }, 'any', "addSpecialTokens 'yes'"],
    ]);
    return { what: `run with ${what}`, expect, run: (_a, m) => m.run([[1, 2, 3]], opts) };
  },
  (rng) => {
    const thrown = rng.pick<unknown>(['x', null, undefined, 42, {}, new Error('boom'), Symbol('s')]);
    const api = rng.pick(['run', 'generate'] as const);
    const hooks = { [HOOK]: () => { throw thrown; } };
    return {
      what: `${api} with a hook that throws ${typeof thrown === 'symbol' ? 'a symbol' : String(thrown)}`,
      expect: 'thrown',
      thrown,
      run: (_a, m) => (api === 'run' ? m.run([[1, 2, 3]], { hooks }) : m.generate([[1, 2, 3]], { maxNewTokens: 2, hooks })),
    };
  },
  (rng) => {
    const [make, what] = rng.pick<[(act: { shape: readonly number[]; data: Float32Array }) => unknown, string]>([
      [(a) => ({ shape: a.shape, data: new Float32Array(1), dtype: 'f32' }), 'a 1-float tensor-like'],
      [(a) => ({ shape: a.shape, data: new Float32Array(a.data.length + 1), dtype: 'f32' }), 'a tensor-like one float too long'],
      [(a) => ({ shape: [1], data: new Float32Array(1) }), 'a [1] tensor-like'],
      [() => 5, 'a number'],
      [(a) => ({ shape: a.shape, data: Array.from(a.data) }), 'a plain-array tensor-like'],
    ]);
    return { what: `run with a hook returning ${what}`, expect: 'coded', run: (_a, m) => m.run([[1, 2, 3]], { hooks: { [HOOK]: (act) => make(act) as never } }) };
  },
  (rng) => {
    // A hook may take the zero-copy activation's buffer away (transfer); native code must not touch it after.
    const kept: ArrayBuffer[] = [];
    const which = rng.pick(['activation', 'capture']);
    const out = new Float32Array(3 * 64);
    const hooks = {
      [HOOK]: (act: { data: Float32Array }) => {
        const buf = (which === 'activation' ? act.data.buffer : out.buffer) as ArrayBuffer;
        kept.push(structuredClone(buf, { transfer: [buf] }));
      },
    };
    return {
      what: `run with a hook that transfers the ${which} buffer`,
      expect: 'any',
      run: (_a, m) => m.run([[1, 2, 3]], { hooks, outputs: { 'blocks.1.hook_resid_post': out } }),
    };
  },
  (rng) => {
    const [opts, expect, what] = rng.pick<[object, Expect, string]>([
      [{ maxNewTokens: -1 }, 'coded', 'maxNewTokens -1'],
      [{ maxNewTokens: NaN }, 'coded', 'maxNewTokens NaN'],
      [{ maxNewTokens: 0.5 }, 'coded', 'maxNewTokens 0.5'],
      [{ maxNewTokens: 2, seed: 'x' }, 'coded', "seed 'x'"],
      [{ maxNewTokens: 2, stopTokens: [NaN] }, 'coded', 'stopTokens [NaN]'],
      [{ maxNewTokens: 2, stopTokens: 5 }, 'coded', 'stopTokens 5'],
      [{ maxNewTokens: 2, signal: {} }, 'coded', 'a signal that is not an AbortSignal'],
      [{ maxNewTokens: 2, temperature: NaN }, 'coded', 'temperature NaN'],
      [{ maxNewTokens: 2, temperature: -1 }, 'coded', 'temperature -1'],
      [{ maxNewTokens: 2, temperature: 1, topK: -1 }, 'any', 'topK -1'],
      [{ maxNewTokens: 2, temperature: 1, topP: 2 }, 'any', 'topP 2'],
      [{ maxNewTokens: 2, capture: '**' }, 'any', "capture '**' as a string"],
      [{ maxNewTokens: 100 }, 'any', 'maxNewTokens past the context'],
    ]);
    return { what: `generate with ${what}`, expect, run: (_a, m) => m.generate([[1, 2, 3]], opts as never) };
  },
  (rng) => {
    const [args, expect, what] = rng.pick<[(dir: string) => unknown[], Expect, string]>([
      [() => [5], 'coded', 'loadModel(5)'],
      [() => [null], 'coded', 'loadModel(null)'],
      [(d) => [d, { threads: 0 }], 'coded', 'threads 0'],
      [(d) => [d, { threads: 1.5 }], 'coded', 'threads 1.5'],
      [(d) => [d, { threads: 1e9 }], 'any', 'threads 1e9'],
      [(d) => [d, { device: 'tpu' }], 'coded', "device 'tpu'"],
      [(d) => [d, { dtype: 'f64' }], 'coded', "dtype 'f64'"],
      [(d) => [d, { family: 'bert' }], 'coded', "family 'bert'"],
      [(d) => [d, 5], 'any', 'options 5'],
    ]);
    return {
      what,
      expect,
      run: async (api, _m, dir) => {
        const m = await (api.loadModel as (...a: unknown[]) => Promise<Model>)(...args(dir));
        m.dispose();
      },
    };
  },
  (rng, vocab) => {
    // Far more memory than a run may take: 50,000 x 64 tokens with every hook captured need about
    // 50 GB on this fixture (4.9 GB of them logits), so the run must be refused up front.
    const rows = rng.pick([50_000, 100_000]);
    return {
      what: `run with a ${rows} x 64 batch capturing every hook (${((rows * 64 * vocab * 4) / 1e9).toFixed(1)} GB of logits alone)`,
      expect: 'any',
      run: (_a, m) => m.run(Array.from({ length: rows }, () => new Array(64).fill(1)), { capture: ['**'] }),
    };
  },
];

/** The call for case `call:<n>` (its rng already seeded by the id). */
export function buildCall(rng: Rng, vocab: number, layers: number): Call {
  return rng.pick(PROBES)(rng, vocab, layers);
}
