// Model.backward's checks before any compute (README "Gradients"): metric tokens and positions,
// seeds, hooks, stopAtLayer, detach masks, memory; the addon's own checks of NativeModel.backward;
// the metric's translation into engine terms. Every failure is coded and leaves the model usable.
import { totalmem } from 'node:os';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { InvalidInputError, loadModel, Tensor, UnknownHookError, type Model, type NeurotapError } from '../src/index.js';
import { resolveMetric, type MetricContext } from '../src/model/metric.js';
import { detachMasks } from '../src/model/backward.js';
import { fixtureDir } from './helpers.js';

async function rejection(p: Promise<unknown>): Promise<NeurotapError> {
  try {
    await p;
  } catch (err) {
    return err as NeurotapError;
  }
  throw new Error('expected a rejection');
}

let model: Model;
beforeAll(async () => {
  model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
});
afterAll(() => model.dispose());

const ids = [
  [5, 6, 7, 8],
  [9, 10, 11, 12],
];

async function expectUsable(): Promise<void> {
  const r = await model.run([[1, 2, 3]]);
  expect(r.logits!.shape).toEqual([1, 3, model.config.dVocab]);
}

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<NeurotapError> {
  const err = await rejection(p);
  expect(err.code, err.message).toBe(code);
  if (message) expect(err.message).toMatch(message);
  await expectUsable();
  return err;
}

describe('Model.backward refuses bad input before native code runs', () => {
  it('a metric token outside the vocabulary', async () => {
    const V = model.config.dVocab;
    const err = await expectCode(model.backward(ids, { metric: { logit: { token: V } } }), 'ERR_TOKEN_OUT_OF_RANGE', /outside the vocabulary/);
    expect(err).toBeInstanceOf(InvalidInputError);
    await expectCode(model.backward(ids, { metric: { logitDiff: { correct: 1, wrong: -1 } } }), 'ERR_TOKEN_OUT_OF_RANGE');
    await expectCode(model.backward(ids, { metric: { logProb: { token: [1, V + 3] } } }), 'ERR_TOKEN_OUT_OF_RANGE', /logProb\.token\[1\]/);
    await expectCode(model.backward(ids, { metric: { logit: { token: 1.5 } } }), 'ERR_INVALID_INPUT');
  });

  it('a metric token string that is not exactly one token, or a per-row list of the wrong length', async () => {
    const many = model.tokenize('hello world', false)[0]!;
    expect(many.length).toBeGreaterThan(1);
    await expectCode(model.backward(ids, { metric: { logit: { token: 'hello world' } } }), 'ERR_INVALID_INPUT', /not one/);
    await expectCode(model.backward(ids, { metric: { logit: { token: [1, 2, 3] } } }), 'ERR_INVALID_INPUT', /one per row/);
  });

  it('a position past the sequence', async () => {
    await expectCode(model.backward(ids, { metric: { logit: { token: 1, position: [4] } } }), 'ERR_INVALID_INPUT', /past the sequence/);
    await expectCode(model.backward(ids, { metric: { logit: { token: 1, position: [-5] } } }), 'ERR_INVALID_INPUT', /past the sequence/);
    // Row 1 has 2 real tokens once left-padded: position 2 is past it.
    await expectCode(model.backward([[1, 2, 3, 4], [5, 6]], { metric: { logit: { token: 1, position: [2] } } }), 'ERR_INVALID_INPUT', /row 1 has 2 tokens/);
    await expectCode(model.backward(ids, { metric: { logit: { token: 1, position: [] } } }), 'ERR_INVALID_INPUT');
  });

  it('metrics that are not one of the kinds', async () => {
    await expectCode(model.backward(ids, { metric: 'lose' as never }), 'ERR_INVALID_INPUT', /expected/);
    await expectCode(model.backward(ids, { metric: { logit: { token: 1 }, loss: true } as never }), 'ERR_INVALID_INPUT', /exactly one/);
    await expectCode(model.backward(ids, { metric: { custom: new Tensor([2, 4, 3], new Float32Array(24)) } }), 'ERR_INVALID_INPUT', /custom gradient has shape/);
    await expectCode(model.backward([[1]], { metric: 'loss' }), 'ERR_INVALID_INPUT', /at least two tokens/);
  });

  it('exactly one of metric and seeds', async () => {
    await expectCode(model.backward(ids, {}), 'ERR_INVALID_INPUT', /exactly one of metric and seeds/);
    const seed = new Tensor([2, 4, 64], new Float32Array(2 * 4 * 64));
    await expectCode(model.backward(ids, { metric: 'loss', seeds: { 'blocks.0.hook_resid_mid': seed } }), 'ERR_INVALID_INPUT', /exactly one/);
  });

  it('a seed of the wrong shape, or seeds with different leading axes', async () => {
    const d = model.config.dModel;
    await expectCode(model.backward(ids, { seeds: { 'blocks.0.hook_resid_mid': new Tensor([2, 4, d - 1], new Float32Array(8 * (d - 1))) } }), 'ERR_INVALID_INPUT', /seed at 'blocks\.0\.hook_resid_mid' has shape/);
    await expectCode(model.backward(ids, { seeds: { 'blocks.0.hook_resid_mid': new Tensor([1, 4, d], new Float32Array(4 * d)) } }), 'ERR_INVALID_INPUT', /has shape/);
    await expectCode(
      model.backward(ids, { seeds: { 'blocks.0.hook_resid_mid': new Tensor([3, 2, 4, d], new Float32Array(24 * d)), 'blocks.1.hook_resid_mid': new Tensor([2, 2, 4, d], new Float32Array(16 * d)) } }),
      'ERR_INVALID_INPUT',
      /same leading axis/,
    );
    const nan = new Float32Array(8 * d);
    nan[3] = NaN;
    await expectCode(model.backward(ids, { seeds: { 'blocks.0.hook_resid_mid': new Tensor([2, 4, d], nan) } }), 'ERR_INVALID_INPUT', /non-finite/);
    // @ts-expect-error seeds takes hook names, not globs (checked at run time for untyped callers)
    await expectCode(model.backward(ids, { seeds: { 'blocks.*.hook_resid_mid': new Tensor([2, 4, d], new Float32Array(8 * d)) } }), 'ERR_INVALID_INPUT', /exact hook names/);
  });

  it('gradients, captures and gradient hooks at hooks that do not exist', async () => {
    const err = await expectCode(model.backward(ids, { metric: 'loss', grads: ['blocks.0.hook_resid_pr'] }), 'ERR_UNKNOWN_HOOK', /did you mean 'blocks\.0\.hook_resid_pre'/);
    expect(err).toBeInstanceOf(UnknownHookError);
    expect((err as UnknownHookError).suggestions).toContain('blocks.0.hook_resid_pre');
    await expectCode(model.backward(ids, { metric: 'loss', grads: ['blocks.*.hook_nothing'] }), 'ERR_UNKNOWN_HOOK');
    await expectCode(model.backward(ids, { metric: 'loss', capture: ['blocks.9.hook_resid_pre'] }), 'ERR_UNKNOWN_HOOK');
    const g = await expectCode(model.backward(ids, { metric: 'loss', hooks: { 'blocks.0.attn.hook_zz_grad': () => {} } as never }), 'ERR_UNKNOWN_HOOK', /unknown gradient hook/);
    expect((g as UnknownHookError).suggestions).toContain('blocks.0.attn.hook_z_grad');
    await expectCode(model.backward(ids, { metric: 'loss', seeds: undefined, hooks: { 'blocks.0.hook_resid_pr': () => {} } as never }), 'ERR_UNKNOWN_HOOK');
  });

  it('gradients past stopAtLayer, and a metric with stopAtLayer', async () => {
    const d = model.config.dModel;
    const seeds = { 'blocks.0.hook_resid_mid': new Tensor([2, 4, d], new Float32Array(8 * d)) };
    await expectCode(model.backward(ids, { seeds, stopAtLayer: 1, grads: ['blocks.1.hook_resid_pre'] }), 'ERR_INVALID_INPUT', /not reached when stopping at layer 1/);
    await expectCode(model.backward(ids, { seeds, stopAtLayer: 1, grads: ['ln_final.hook_scale'] }), 'ERR_INVALID_INPUT', /not reached/);
    await expectCode(model.backward(ids, { seeds, stopAtLayer: 1, capture: ['blocks.1.attn.hook_z'] }), 'ERR_INVALID_INPUT', /not reached/);
    await expectCode(model.backward(ids, { seeds, stopAtLayer: 1, hooks: { 'blocks.1.hook_mlp_out_grad': () => {} } }), 'ERR_INVALID_INPUT', /not reached/);
    await expectCode(model.backward(ids, { seeds: { 'blocks.1.hook_resid_mid': seeds['blocks.0.hook_resid_mid'] }, stopAtLayer: 1 }), 'ERR_INVALID_INPUT', /seed at 'blocks\.1\.hook_resid_mid' is not reached/);
    await expectCode(model.backward(ids, { metric: 'loss', stopAtLayer: 1 }), 'ERR_INVALID_INPUT', /give seeds instead/);
    await expectCode(model.backward(ids, { seeds, stopAtLayer: 3 }), 'ERR_INVALID_INPUT', /stopAtLayer/);
  });

  it('bad options: detach kinds and layers, unknown keys, types', async () => {
    await expectCode(model.backward(ids, { metric: 'loss', detach: ['patterns' as never] }), 'ERR_INVALID_INPUT', /detach: unknown kind/);
    await expectCode(model.backward(ids, { metric: 'loss', detach: { mlpAct: [2] } }), 'ERR_INVALID_INPUT', /detach\.mlpAct layer/);
    await expectCode(model.backward(ids, { metric: 'loss', detach: { normScale: [3] } }), 'ERR_INVALID_INPUT', /detach\.normScale layer/);
    await expectCode(model.backward(ids, { metric: 'loss', detach: 'pattern' as never }), 'ERR_INVALID_INPUT');
    await expectCode(model.backward(ids, { metric: 'loss', grad: ['hook_embed'] } as never), 'ERR_INVALID_INPUT', /unknown option 'grad'/);
    await expectCode(model.backward(ids, { metric: 'loss', returnLogits: 1 as never }), 'ERR_INVALID_INPUT');
    await expectCode(model.backward(ids, { metric: 'loss', padId: model.config.dVocab }), 'ERR_INVALID_INPUT');
    await expectCode(model.backward(ids, { metric: 'loss', hooks: { 'blocks.0.attn.hook_z_grad': edits_zeroHead(9) } }), 'ERR_INVALID_INPUT', /head 9/);
    await expectCode(model.backward([[1, model.config.dVocab]], { metric: 'loss' }), 'ERR_TOKEN_OUT_OF_RANGE');
  });

  it('a backward pass too large for memory is refused before allocating', async () => {
    const row = Array.from({ length: 64 }, (_, i) => i + 1);
    // The saved residual stream alone ((layers + 1) x d_model floats a token) needs twice this machine's memory.
    const rows = Math.ceil((2 * totalmem()) / (64 * (model.config.nLayers + 1) * model.config.dModel * 4));
    const t0 = performance.now();
    const err = await rejection(model.backward(new Array<number[]>(rows).fill(row), { seeds: { hook_embed: new Tensor([1, 1, 1], new Float32Array(1)) } }));
    expect(err.code, err.message).toBe('ERR_OUT_OF_MEMORY');
    expect(err.message).toMatch(/this backward pass needs about .*saved residual stream/);
    expect(performance.now() - t0).toBeLessThan(2000);
    await expectUsable();
  });
});

function edits_zeroHead(h: number) {
  return { op: 'zero' as const, heads: [h] };
}

describe('NativeModel.backward checks what it is given', () => {
  const base = () => ({ tokens: Int32Array.from([1, 2, 3]), batch: 1, pos: 3 });
  // The addon throws synchronously on bad arguments, as run() does.
  const handle = () => ({ backward: (o: Parameters<ReturnType<Model['nativeHandle']>['backward']>[0]) => Promise.resolve().then(() => model.nativeHandle().backward(o)) });

  it('metric terms out of range', async () => {
    const V = model.config.dVocab;
    for (const term of [
      { kind: 3, row: 0, pos: 0, a: 0 },
      { kind: 0, row: 1, pos: 0, a: 0 },
      { kind: 0, row: 0, pos: 3, a: 0 },
      { kind: 1, row: 0, pos: 0, a: 0, b: V },
      { kind: 2, row: 0, pos: 0, a: -1 },
      { kind: 0, row: 0, pos: 0, a: 0, weight: NaN },
    ])
      await expectCode(handle().backward({ ...base(), terms: [term as never] }), 'ERR_INVALID_INPUT', /terms\[0\]/);
    await expectCode(handle().backward({ ...base(), terms: [] }), 'ERR_INVALID_INPUT', /non-empty/);
  });

  it('exactly one of terms, dlogits, metricCallbackId and seeds; replicas only with seeds', async () => {
    await expectCode(handle().backward(base()), 'ERR_INVALID_INPUT', /exactly one/);
    await expectCode(handle().backward({ ...base(), terms: [{ kind: 0, row: 0, pos: 0, a: 0 }], dlogits: new Float32Array(3 * model.config.dVocab) }), 'ERR_INVALID_INPUT', /exactly one/);
    await expectCode(handle().backward({ ...base(), terms: [{ kind: 0, row: 0, pos: 0, a: 0 }], replicas: 2 }), 'ERR_INVALID_INPUT', /replicas/);
    await expectCode(handle().backward({ ...base(), metricCallbackId: 0 }), 'ERR_INVALID_INPUT', /dispatcher/);
  });

  it('buffers of the wrong size, and hook indices out of range', async () => {
    const n = model.hookIndex('blocks.0.hook_resid_mid')!;
    await expectCode(handle().backward({ ...base(), dlogits: new Float32Array(5) }), 'ERR_BUFFER_SIZE', /dlogits/);
    await expectCode(handle().backward({ ...base(), seeds: [{ index: n, data: new Float32Array(5) }] }), 'ERR_BUFFER_SIZE', /seed at 'blocks\.0\.hook_resid_mid'/);
    await expectCode(handle().backward({ ...base(), seeds: [{ index: n, data: new Float32Array(3 * 64) }], replicas: 2 }), 'ERR_BUFFER_SIZE');
    await expectCode(handle().backward({ ...base(), seeds: [{ index: 100000, data: new Float32Array(1) }] }), 'ERR_UNKNOWN_HOOK');
    await expectCode(handle().backward({ ...base(), terms: [{ kind: 0, row: 0, pos: 0, a: 0 }], gradCaptures: [{ index: -1 }] }), 'ERR_UNKNOWN_HOOK');
    await expectCode(handle().backward({ ...base(), terms: [{ kind: 0, row: 0, pos: 0, a: 0 }], gradCaptures: [{ index: n }, { index: n }] }), 'ERR_INVALID_INPUT', /twice/);
    await expectCode(handle().backward({ ...base(), terms: [{ kind: 0, row: 0, pos: 0, a: 0 }], gradActions: [{ kind: 'edit', index: n, op: 'nope' as never }] }), 'ERR_INVALID_INPUT', /unknown edit op/);
  });

  it('no KV cache, no last-position-only logits, detach within the layers', async () => {
    const terms = [{ kind: 0 as const, row: 0, pos: 0, a: 0 }];
    await expectCode(handle().backward({ ...base(), terms, cache: model.createCache(1, 8) } as never), 'ERR_INVALID_INPUT', /KV cache/);
    await expectCode(handle().backward({ ...base(), terms, logitsLastOnly: true } as never), 'ERR_INVALID_INPUT', /logitsLastOnly/);
    await expectCode(handle().backward({ ...base(), terms, detach: [{}, {}, {}] }), 'ERR_INVALID_INPUT', /one entry per layer/);
  });
});

describe('metrics become engine terms as the specification says', () => {
  const ctx = (tokens: number[][], pad: number[]): MetricContext => ({ tokens, pad, vocab: 50, tokenId: () => 7 });

  it('positions: last, lists (negative from the end) and all, over left padding', () => {
    const tokens = [
      [0, 0, 3, 4, 5],
      [1, 2, 3, 4, 5],
    ];
    const pad = [2, 0];
    const last = resolveMetric({ logit: { token: 9 } }, ctx(tokens, pad));
    expect(last.kind === 'terms' && last.terms.map((t) => [t.row, t.pos])).toEqual([[0, 4], [1, 4]]);
    const list = resolveMetric({ logitDiff: { correct: [1, 2], wrong: 'x', position: [0, -1] } }, ctx(tokens, pad));
    expect(list.kind === 'terms' && list.terms.map((t) => [t.kind, t.row, t.pos, t.a, t.b])).toEqual([
      [1, 0, 2, 1, 7],
      [1, 0, 4, 1, 7],
      [1, 1, 0, 2, 7],
      [1, 1, 4, 2, 7],
    ]);
    const all = resolveMetric({ logProb: { token: 3, position: 'all' } }, ctx(tokens, pad));
    expect(all.kind === 'terms' && all.terms.map((t) => t.pos)).toEqual([2, 3, 4, 0, 1, 2, 3, 4]);
  });

  it('loss: -1/N log-probabilities of each next token over every real position', () => {
    const tokens = [
      [0, 0, 3, 4, 5],
      [1, 2, 3, 4, 5],
    ];
    const m = resolveMetric('loss', ctx(tokens, [2, 0]));
    if (m.kind !== 'terms') throw new Error('terms expected');
    const n = 2 + 4;
    expect(m.terms.map((t) => [t.kind, t.row, t.pos, t.a])).toEqual([
      [2, 0, 2, 4],
      [2, 0, 3, 5],
      [2, 1, 0, 2],
      [2, 1, 1, 3],
      [2, 1, 2, 4],
      [2, 1, 3, 5],
    ]);
    for (const t of m.terms) expect(t.weight).toBeCloseTo(-1 / n, 12);
    expect(resolveMetric({ loss: true }, ctx(tokens, [2, 0]))).toEqual(m);
  });

  it('detach: kinds for every layer (normScale includes ln_final) or layer lists', () => {
    expect(detachMasks(['pattern', 'normScale'], 2)).toEqual({
      detach: [
        { pattern: true, normScale: true, mlpAct: false },
        { pattern: true, normScale: true, mlpAct: false },
      ],
      final: true,
    });
    expect(detachMasks({ mlpAct: [1], normScale: [2] }, 2)).toEqual({
      detach: [
        { pattern: false, normScale: false, mlpAct: false },
        { pattern: false, normScale: false, mlpAct: true },
      ],
      final: true,
    });
  });
});

describe('grads globs and per-head inputs', () => {
  it("'**' takes every gradient but the per-head inputs (which would give ln1 a head axis); named, they are refused with ln1", async () => {
    const model = await loadModel(fixtureDir('gpt2'));
    try {
      const r = await model.backward([[1, 2, 3, 4]], { metric: { logit: { token: 5 } }, grads: '**' } as never);
      expect(r.grads.has('blocks.0.ln1.hook_scale')).toBe(true);
      expect(r.grads.has('blocks.0.hook_resid_pre')).toBe(true);
      expect(r.grads.has('blocks.0.hook_q_input')).toBe(false);
      const split = await model.backward([[1, 2, 3, 4]], { metric: { logit: { token: 5 } }, grads: 'blocks.0.hook_*_input' } as never);
      expect(split.grads.has('blocks.0.hook_q_input')).toBe(true);
      await expect(
        model.backward([[1, 2, 3, 4]], { metric: { logit: { token: 5 } }, grads: ['blocks.0.hook_q_input', 'blocks.0.ln1.*'] } as never),
      ).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    } finally {
      model.dispose();
    }
  });
});
