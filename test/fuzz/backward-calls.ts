// Backward fuzz cases (kind `backward`): random valid Model.backward options on a fixture model
// (metrics, seeds, grads globs, forward and gradient hooks, detach masks, stopAtLayer, padded rows),
// then usually one mutation that makes them invalid, plus attributionPatching and
// integratedGradients with bad options. Planned against the loaded model, from the case's Rng.
import type { Rng } from './rng.js';
import type { Expect } from './calls.js';

type Api = typeof import('../../src/index.js');
type Model = Awaited<ReturnType<Api['loadModel']>>;
type Tensor = InstanceType<Api['Tensor']>;

export interface BackwardCall {
  what: string;
  expect: Expect;
  /** For 'thrown': the value a hook or metric function throws. */
  thrown?: unknown;
  /** Every input is finite and no hook writes non-finite values: a success must give finite gradients. */
  finite: boolean;
  /** Runs the call; resolves to the tensors and numbers a success must have finite. */
  run(): Promise<{ tensors: [string, Tensor][]; numbers: [string, number | null][] }>;
}

const show = (v: unknown): string => {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return v.length > 6 ? `[${v.length} values: ${v.slice(0, 3).map(show).join(', ')}, ...]` : `[${v.map(show).join(', ')}]`;
  if (v && typeof v === 'object' && 'shape' in v) return `Tensor[${(v as Tensor).shape.join(', ')}]`;
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${k}: ${show(x)}`).join(', ')}}`;
  return String(v);
};

/** Plans one backward case on `model` (the rng seeded by the case id). */
export function planBackward(rng: Rng, api: Api, model: Model): BackwardCall {
  const { Tensor } = api;
  const { nLayers, dVocab: V } = model.config;
  const dModel = shapeOfModel();
  const infos = model.hooks;
  const layerOf = new Map(infos.map((h) => [h.name, h.layer]));
  const reached = (name: string, stop: number | undefined) =>
    stop === undefined || stop >= nLayers || (!name.startsWith('ln_final.') && !name.startsWith('unembed.') && (layerOf.get(name) ?? 0) < stop);
  const names = infos.map((h) => h.name);
  const rand = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + ((rng.u32() / 4294967296) * (hi - lo)));
  const tensor = (shape: number[], fill?: number) => new Tensor(shape, fill === undefined ? rand(shape.reduce((a, b) => a * b, 1)) : new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill));
  const shapeOf = (name: string, B: number, T: number) => model.hookShape(name, B, T);
  function shapeOfModel(): number {
    return model.hookShape('hook_embed', 1, 1).at(-1)!;
  }

  // Rows of different lengths (left-padded), ids in the vocabulary.
  const B = rng.range(1, 3);
  const rows = Array.from({ length: B }, () => Array.from({ length: rng.range(2, 6) }, () => rng.int(V)));
  const T = Math.max(...rows.map((r) => r.length));
  const minLen = Math.min(...rows.map((r) => r.length));

  const notes: string[] = [`rows of ${rows.map((r) => r.length).join('/')}`];
  let expect: Expect = 'any';
  let thrown: unknown;
  let finite = true;
  const invalid = (what: string) => {
    notes.push(what);
    if (expect !== 'thrown') expect = 'coded';
  };
  const thrower = (what: string) => {
    thrown = rng.pick<unknown>(['x', null, undefined, 42, {}, new Error('boom'), Symbol('s')]);
    notes.push(`${what} throws ${typeof thrown === 'symbol' ? 'a symbol' : String(thrown)}`);
    expect = 'thrown';
    if (Array.isArray(opts.grads)) opts.grads = opts.grads.filter((p) => p !== '**');
    else if (opts.grads === '**') delete opts.grads;
    return () => {
      throw thrown;
    };
  };
  /** With seeds, hooks after the seeds get no gradient (their gradient hooks never run): a JS gradient hook that must run needs a metric. */
  const metricInsteadOfSeeds = () => {
    if (!opts.seeds) return;
    delete opts.seeds, delete opts.stopAtLayer;
    opts.metric = { logProb: { token: rng.int(V), position: 'all' } };
    notes.push(`metric ${show(opts.metric)} instead of seeds`);
  };
  const unfinite = (what: string) => {
    notes.push(what);
    finite = false;
  };

  const helper = rng.weighted([['backward', 8], ['attributionPatching', 1], ['integratedGradients', 1]] as const);
  if (helper !== 'backward') return planHelper(helper);

  // A valid base: a metric (or seeds), grads, maybe captures, hooks, detach, stopAtLayer.
  const opts: Record<string, unknown> = {};
  const useSeeds = rng.chance(0.3);
  const stop = useSeeds && rng.chance(0.4) ? rng.range(1, nLayers) : undefined;
  if (stop !== undefined) opts.stopAtLayer = stop;
  const usable = names.filter((n) => reached(n, stop));
  const pos = () => rng.pick<unknown>(['last', 'all', rng.range(-minLen, minLen - 1), [0, -1], [rng.range(0, minLen - 1)]]);
  const tok = () => (rng.chance(0.3) ? rows.map(() => rng.int(V)) : rng.int(V));
  if (useSeeds) {
    const S = rng.chance(0.3) ? rng.range(1, 3) : 0;
    const seeds: Record<string, Tensor> = {};
    for (const n of new Set([rng.pick(usable), ...(rng.chance(0.3) ? [rng.pick(usable)] : [])])) {
      const shape = shapeOf(n, B, T);
      seeds[n] = tensor(S ? [S, ...shape] : shape);
    }
    opts.seeds = seeds;
    notes.push(`seeds at ${Object.keys(seeds).join(', ')}${S ? ` with S=${S}` : ''}`);
  } else {
    const kind = rng.pick(['logit', 'logitDiff', 'logProb', 'loss', 'custom', 'customFn'] as const);
    if (kind === 'loss') opts.metric = rng.chance(0.5) ? 'loss' : { loss: true };
    else if (kind === 'custom') opts.metric = { custom: tensor([B, T, V]) };
    else if (kind === 'customFn')
      opts.metric = { custom: (logits: Tensor) => ({ value: logits.data[0]!, grad: new Tensor(logits.shape, new Float32Array(logits.data.length).fill(1 / logits.data.length)) }) };
    else if (kind === 'logitDiff') opts.metric = { logitDiff: { correct: tok(), wrong: tok(), position: pos() } };
    else opts.metric = { [kind]: { token: tok(), position: pos() } };
    notes.push(`metric ${show(opts.metric)}`);
  }
  // ln1's hooks take no gradient while a per-head input of their block is hooked (a coded
  // refusal): the valid base leaves them out, and '**' (every hook) is rare.
  const plain = usable.filter((n) => !n.includes('.ln1.'));
  const gradPatterns = [rng.pick(plain), rng.pick(plain) + '_grad', 'blocks.0.attn.*', 'blocks.*.hook_resid_post', 'blocks.*.mlp.*', 'hook_embed'].filter(() => rng.chance(0.4));
  if (rng.chance(0.05)) gradPatterns.push('**');
  if (stop === undefined || gradPatterns.every((p) => !p.includes('*'))) opts.grads = rng.chance(0.2) ? gradPatterns[0] ?? [] : gradPatterns;
  if (rng.chance(0.3)) opts.capture = [rng.pick(usable)];
  if (opts.grads !== undefined || opts.capture !== undefined) notes.push(`grads ${show(opts.grads)}, capture ${show(opts.capture)}`);
  const hooks: Record<string, unknown> = {};
  if (rng.chance(0.4)) {
    const h = rng.pick(plain);
    const w = shapeOf(h, B, T).at(-1)!;
    // Norm scales divide (zeroing one gives inf), and masked attention scores are -inf (a
    // projection mixes them into NaN): those hooks only get finite-preserving edits.
    const fragile = /hook_scale$|hook_attn_scores$/.test(h);
    hooks[h] = fragile
      ? rng.pick<unknown>([{ op: 'scale', factor: 0.5 }, (a: Tensor) => { a.data[0]! *= 0.5; }])
      : rng.pick<unknown>([{ op: 'scale', factor: 0.5 }, { op: 'zero', positions: [0] }, { op: 'add', vector: Array.from(rand(w)) }, { op: 'projectOut', direction: Array.from(rand(w, 0.1, 1)) }, (a: Tensor) => { a.data[0] = 0; }]);
    notes.push(`hook ${h}: ${show(hooks[h])}`);
  }
  if (rng.chance(0.4)) {
    const h = rng.pick(plain);
    const w = shapeOf(h, B, T).at(-1)!;
    hooks[`${h}_grad`] = rng.pick<unknown>([{ op: 'scale', factor: 2 }, { op: 'zero' }, { op: 'projectOut', direction: Array.from(rand(w, 0.1, 1)) }, (g: Tensor) => { g.data.fill(0.25, 0, 1); }, () => undefined]);
    notes.push(`hook ${h}_grad: ${show(hooks[`${h}_grad`])}`);
  }
  if (Object.keys(hooks).length) opts.hooks = hooks;
  if (rng.chance(0.3)) {
    opts.detach = rng.chance(0.5) ? ['pattern', 'normScale', 'mlpAct'].filter(() => rng.chance(0.5)) : { pattern: [rng.int(nLayers)], normScale: [nLayers], mlpAct: [rng.int(nLayers)] };
    notes.push(`detach ${show(opts.detach)}`);
  }
  if (stop === undefined && rng.chance(0.2)) opts.returnLogits = true;
  let input: unknown = rows;

  // The mutation (most cases): one thing invalid, or a hook / metric function that misbehaves.
  const mutations: (() => void)[] = [
    () => {
      const t = rng.pick<unknown>([V, -1, 1.5, NaN, 2 ** 32, Infinity, null, 'two words here', [rng.int(V)].concat(rows.map(() => 1))]);
      opts.metric = { [rng.pick(['logit', 'logProb'])]: { token: t } };
      delete opts.seeds, delete opts.stopAtLayer;
      invalid(`metric token ${show(t)}`);
    },
    () => {
      const [p, bad] = rng.pick<[unknown, boolean]>([[NaN, true], ['first', true], [1e9, true], [-1e9, true], [[], true], [[0.5], true], [['0'], true], [Infinity, true], [{}, true], [-minLen, false], [minLen, true], [[0, 0, -1], false], ['all', false]]);
      opts.metric = { logitDiff: { correct: 1 % V, wrong: 2 % V, position: p } };
      delete opts.seeds, delete opts.stopAtLayer;
      if (bad) invalid(`position ${show(p)}`);
      else notes.push(`position ${show(p)}`);
    },
    () => {
      const [m, what] = rng.pick<[unknown, string]>([
        [{ loss: false }, 'loss false'],
        [{ custom: tensor([B, T, V + 1]) }, 'a custom gradient one token too wide'],
        [{ custom: tensor([B, T, V], NaN) }, 'a NaN custom gradient'],
        [{ custom: Array.from(rand(B * T * V)) }, 'a plain-array custom gradient'],
        [{ custom: () => 5 }, 'a custom metric returning 5'],
        [{ custom: () => ({ value: 'x', grad: null }) }, 'a custom metric returning junk'],
        [{ custom: (l: Tensor) => ({ value: 1, grad: new Tensor([l.shape[0]!, 1], new Float32Array(l.shape[0]!)) }) }, 'a custom metric with a wrongly shaped grad'],
        [{ custom: (l: Tensor) => ({ value: 1, grad: new Tensor(l.shape, new Float32Array(l.data.length).fill(NaN)) }) }, 'a custom metric with a NaN grad'],
        [{ bogus: 1 }, 'an unknown metric'],
        [{ logit: { token: 1 }, loss: true }, 'two metrics'],
        [5, 'metric 5'],
      ]);
      opts.metric = m;
      delete opts.seeds, delete opts.stopAtLayer;
      invalid(what);
    },
    () => {
      opts.metric = { custom: thrower('a custom metric function') };
      delete opts.seeds, delete opts.stopAtLayer;
    },
    () => {
      const n = rng.pick(usable);
      const shape = shapeOf(n, B, T);
      const [s, what] = rng.pick<[unknown, string]>([
        [tensor(shape.slice(0, -1)), 'missing its last axis'],
        [tensor([...shape.slice(0, -1), shape.at(-1)! + 1]), 'one unit too wide'],
        [tensor([0, ...shape]), 'with S=0'],
        [tensor(shape, NaN), 'NaN'],
        [tensor(shape, Infinity), 'Infinity'],
        [rand(shape.reduce((a, b) => a * b, 1)), 'a bare Float32Array'],
        [tensor([2, 2, ...shape]), 'two leading axes'],
      ]);
      opts.seeds = { ...(opts.seeds as object), [n]: s };
      delete opts.metric;
      invalid(`a seed at ${n} ${what}`);
    },
    () => {
      const a = rng.pick(usable);
      const b = rng.pick(usable.filter((n) => n !== a));
      opts.seeds = { [a]: tensor([2, ...shapeOf(a, B, T)]), [b]: tensor(rng.chance(0.5) ? [3, ...shapeOf(b, B, T)] : shapeOf(b, B, T)) };
      delete opts.metric;
      invalid(`seeds at ${a} and ${b} with different S`);
    },
    () => {
      const n = rng.pick(['blocks.99.hook_resid_post', 'blocks.*.hook_resid_post', 'hook_nope', `${rng.pick(names)}_grad`, '']);
      opts.seeds = { [n]: tensor([B, T, dModel]) };
      delete opts.metric;
      invalid(`a seed at ${show(n)}`);
    },
    () => {
      opts.seeds = { [rng.pick(usable)]: tensor([1]) };
      opts.metric = { logit: { token: 0 } };
      invalid('both a metric and seeds');
    },
    () => {
      const g = rng.pick<unknown>([['blocks.99.hook_resid_post'], ['nope_grad'], [`${rng.pick(names)}_grad_grad`], [5], 5, { a: 1 }, ['blocks.0.hook_resid_pre.hook_sae_acts_post']]);
      opts.grads = g;
      invalid(`grads ${show(g)}`);
    },
    () => {
      const h = rng.pick(usable);
      const w = shapeOf(h, B, T).at(-1)!;
      const [k, spec, what] = rng.pick<[string, unknown, string]>([
        ['blocks.99.hook_resid_post_grad', { op: 'zero' }, 'a gradient hook at an unknown hook'],
        ['_grad', { op: 'zero' }, "a gradient hook named '_grad'"],
        [`${h}_grad`, { op: 'add', vector: [1, 2] }, 'a gradient add edit of the wrong width'],
        [`${h}_grad`, { op: 'add', vector: Array.from(rand(w + 1)) }, 'a gradient add edit one too wide'],
        [`${h}_grad`, { op: 'explode' }, 'an unknown gradient edit op'],
        [`${h}_grad`, 7, 'a number as gradient hook'],
        [`${h}_grad`, (g: Tensor) => ({ shape: g.shape, data: new Float32Array(1), dtype: 'f32' }), 'a gradient hook returning a 1-float tensor-like'],
        [`${h}_grad`, () => 5, 'a gradient hook returning a number'],
        [`${h}_grad`, (g: Tensor) => new Tensor([g.data.length + 1], new Float32Array(g.data.length + 1)), 'a gradient hook returning a tensor one too long'],
        [`${h}_grad`, { op: 'scale', factor: 'x' }, "a gradient scale 'x'"],
        [`${h}_grad_grad`, { op: 'zero' }, 'a _grad_grad hook'],
      ]);
      if (typeof spec === 'function') metricInsteadOfSeeds();
      opts.hooks = { ...(opts.hooks as object), [k]: spec };
      invalid(`${what} (${k})`);
    },
    () => {
      metricInsteadOfSeeds();
      const h = rng.pick(names.filter((n) => !n.includes('.ln1.')));
      opts.hooks = { ...(opts.hooks as object), [`${h}_grad`]: thrower(`a gradient hook at ${h}`) };
    },
    () => {
      const h = rng.pick(plain);
      opts.hooks = { ...(opts.hooks as object), [h]: thrower(`a forward hook at ${h}`) };
    },
    () => {
      const h = rng.pick(usable);
      const [spec, what] = rng.pick<[unknown, string]>([
        [(g: Tensor) => { g.data.fill(NaN); }, 'fills the gradient with NaN'],
        [{ op: 'scale', factor: NaN }, 'scales the gradient by NaN'],
        [{ op: 'scale', factor: 1e38 }, 'scales the gradient by 1e38'],
      ]);
      opts.hooks = { ...(opts.hooks as object), [`${h}_grad`]: spec };
      unfinite(`a gradient hook at ${h} that ${what}`);
    },
    () => {
      const d = rng.pick<unknown>([['foo'], 'pattern', { pattern: [nLayers] }, { mlpAct: [-1] }, { pattern: [0.5] }, { pattern: 'all' }, { foo: [0] }, { normScale: [nLayers + 1] }, 5, { pattern: [NaN] }]);
      opts.detach = d;
      invalid(`detach ${show(d)}`);
    },
    () => {
      const s = rng.pick<unknown>([-1, NaN, nLayers + 1, 0.5, '1', 2 ** 32, Infinity]);
      opts.stopAtLayer = s;
      invalid(`stopAtLayer ${show(s)}`);
    },
    () => {
      if (nLayers < 2) return void notes.push('(no stop mutation: one layer)');
      const s = rng.range(0, nLayers - 1);
      opts.stopAtLayer = s;
      const [what] = rng.pick<[string]>([['with a metric'], ['with returnLogits'], ['with grads past it'], ['with a seed past it']]);
      if (what === 'with a metric') {
        delete opts.seeds;
        opts.metric = { logit: { token: 0 } };
      } else {
        opts.seeds = { 'hook_embed': tensor(shapeOf('hook_embed', B, T)) };
        delete opts.metric;
        delete opts.detach;
        delete opts.hooks;
        delete opts.capture;
        if (what === 'with returnLogits') opts.returnLogits = true;
        else if (what === 'with grads past it') opts.grads = [`blocks.${nLayers - 1}.hook_resid_post`];
        else opts.seeds = { [`blocks.${nLayers - 1}.hook_resid_post`]: tensor(shapeOf(`blocks.${nLayers - 1}.hook_resid_post`, B, T)) };
      }
      invalid(`stopAtLayer ${s} ${what}`);
    },
    () => {
      const [k, v] = rng.pick<[string, unknown]>([['padId', V], ['padId', -1], ['returnLogits', 'yes'], ['bogus', 1], ['addSpecialTokens', 3], ['capture', [5]]]);
      opts[k] = v;
      invalid(`${k} ${show(v)}`);
    },
    () => {
      const i = rng.pick<unknown>([[], [[]], [[V]], [[1, 2], [-1]], 'x'.repeat(0), 7, [[NaN, 1]]]);
      input = i;
      invalid(`input ${show(i)}`);
    },
    () => {
      const h = rng.pick(plain);
      const shape = shapeOf(h, B, T);
      const [spec, bad, what] = rng.pick<[unknown, boolean, string]>([
        [{ op: 'zero', positions: [1000] }, true, 'a gradient zero edit at position 1000'],
        [{ op: 'zero', positions: [-1] }, false, 'a gradient zero edit at position -1'],
        [{ op: 'patch', source: tensor([...shape.slice(0, -1), shape.at(-1)! + 1]) }, true, 'a gradient patch one unit too wide'],
        [{ op: 'patch', source: tensor(shape) }, false, 'a gradient patch of the right shape'],
        [(g: Tensor) => new Tensor(g.shape, g.data.map((x) => x * 0.5)), false, 'a gradient hook returning a new Tensor'],
        [(g: Tensor) => ({ shape: g.shape, data: Array.from(g.data) }), true, 'a gradient hook returning a plain-array tensor-like'],
        [async () => undefined, true, 'an async gradient hook'],
        [(g: Tensor) => {
          const buf = g.data.buffer as ArrayBuffer;
          structuredClone(buf, { transfer: [buf] });
        }, false, 'a gradient hook that transfers the gradient buffer away'],
      ]);
      metricInsteadOfSeeds();
      opts.hooks = { ...(opts.hooks as object), [`${h}_grad`]: spec };
      if (bad) invalid(`${what} (${h}_grad)`);
      else notes.push(`${what} (${h}_grad)`);
    },
    () => {
      const [m, bad, what] = rng.pick<[unknown, boolean, string]>([
        [{ custom: async (l: Tensor) => ({ value: 1, grad: l }) }, true, 'an async custom metric'],
        [{ custom: (l: Tensor) => ({ value: 1, grad: { shape: l.shape, data: new Float32Array(l.data.length) } }) }, true, 'a custom metric returning a tensor-like'],
        [{ custom: (l: Tensor) => ({ value: 2, grad: l }) }, false, 'a custom metric returning the logits as grad'],
        [{ custom: (l: Tensor) => { l.data.fill(0); return { value: 0, grad: new Tensor(l.shape, new Float32Array(l.data.length).fill(1e-3)) }; } }, false, 'a custom metric that zeroes the logits'],
      ]);
      opts.metric = m;
      delete opts.seeds, delete opts.stopAtLayer;
      if (bad) invalid(what);
      else notes.push(what);
    },
    () => {
      const [k, v] = rng.pick<[string, unknown]>([['padId', V - 1], ['stopAtLayer', nLayers], ['returnLogits', true], ['addSpecialTokens', false]]);
      if (k === 'stopAtLayer') delete opts.returnLogits;
      opts[k] = v;
      notes.push(`${k} ${show(v)}`);
    },
    () => {
      // Text rows of different lengths (left-padded after tokenizing); no tokenizer is ERR_NO_TOKENIZER.
      input = rng.pick([['Hello world, how are you', 'Hi'], 'The cat sat', ['a', 'b c d e f']]);
      opts.metric = rng.pick<unknown>(['loss', { logProb: { token: 0, position: 'all' } }, { logit: { token: 1 % V, position: -1 } }]);
      delete opts.seeds, delete opts.stopAtLayer, delete opts.grads, delete opts.hooks, delete opts.capture;
      opts.grads = ['blocks.0.hook_resid_pre', 'hook_embed'];
      if (!model.tokenizer) invalid(`text input ${show(input)} without a tokenizer`);
      else notes.push(`text input ${show(input)}, metric ${show(opts.metric)}`);
    },
    () => {
      input = [[rng.int(V)]];
      opts.metric = 'loss';
      delete opts.seeds, delete opts.stopAtLayer, delete opts.grads, delete opts.hooks, delete opts.capture;
      invalid('loss on one one-token row');
    },
  ];
  const mutated = rng.chance(0.85);
  if (mutated) rng.pick(mutations)();
  if (expect !== 'any') finite = false;
  if (!mutated && rng.chance(0.5)) {
    // Two backward passes and a run on one model at once: each must give what it gives alone.
    notes.push('twice at once with a run, then alone');
    return {
      what: `backward: ${notes.join('; ')}`,
      expect,
      finite,
      run: async () => {
        const call = () => model.backward(input as number[][], opts as never);
        const [a, , b] = await Promise.all([call(), model.run([rows[0]!]), call()]);
        const alone = await call();
        for (const [n, g] of alone.grads)
          for (const [which, r] of [['first', a], ['second', b]] as const) {
            const d = r.grads.get(n).data;
            const i = g.data.findIndex((x, j) => !Object.is(x, d[j]));
            if (i >= 0) throw new Error(`concurrent backward passes differ: the ${which}'s gradient at ${n}[${i}] is ${d[i]}, alone ${g.data[i]}`);
          }
        if (!Object.is(a.metric, alone.metric) || !Object.is(b.metric, alone.metric)) throw new Error(`concurrent metrics ${a.metric}, ${b.metric}; alone ${alone.metric}`);
        return { tensors: [...alone.grads].map(([n, t]) => [`grad ${n}`, t] as [string, Tensor]), numbers: [['metric', alone.metric]] };
      },
    };
  }
  return {
    what: `backward: ${notes.join('; ')}`,
    expect,
    thrown,
    finite,
    run: async () => {
      const r = await model.backward(input as number[][], opts as never);
      return { tensors: [...r.grads].map(([n, t]) => [`grad ${n}`, t] as [string, Tensor]), numbers: [['metric', r.metric]] };
    },
  };

  function planHelper(which: 'attributionPatching' | 'integratedGradients'): BackwardCall {
    const metric: unknown = rng.pick<unknown>([{ logit: { token: rng.int(V) } }, 'loss', { logitDiff: { correct: 0, wrong: 1 % V, position: 'all' } }]);
    if (which === 'attributionPatching') {
      const corrupted = rows.map((r) => r.map(() => rng.int(V)));
      let clean: unknown = rows;
      let corr: unknown = corrupted;
      const o: Record<string, unknown> = { metric, hooks: [rng.pick(names), 'blocks.0.*'].filter(() => rng.chance(0.7)) };
      if ((o.hooks as string[]).length === 0) o.hooks = 'blocks.*.hook_resid_post';
      const m = rng.int(8);
      if (m === 0) invalid('no hooks'), (o.hooks = []);
      else if (m === 1) invalid('an unknown hook'), (o.hooks = ['blocks.0.hook_nope']);
      else if (m === 2) invalid('a row fewer corrupted'), (corr = corrupted.slice(1).length ? corrupted.slice(1) : [[1, 2, 3, 4, 5, 6, 7]]);
      else if (m === 3) invalid('a corrupted row one token longer'), (corr = corrupted.map((r, b) => (b === 0 ? [...r, 0] : r)));
      else if (m === 4) invalid('metric token past the vocabulary'), (o.metric = { logit: { token: V } });
      else if (m === 5) invalid('options null'), (clean = rows);
      else if (m === 6) invalid('hooks 5'), (o.hooks = 5);
      notes.push(`attributionPatching metric ${show(metric)}, hooks ${show(o.hooks)}`);
      return {
        what: notes.join('; '),
        expect,
        finite: expect === 'any',
        run: async () => {
          const r = await api.attributionPatching(model, clean as number[][], corr as number[][], (m === 5 ? null : o) as never);
          return { tensors: [...r.scores].map(([n, t]) => [`score ${n}`, t] as [string, Tensor]), numbers: [['metricClean', r.metricClean], ['metricCorrupted', r.metricCorrupted]] };
        },
      };
    }
    const hook = rng.pick(names);
    const o: Record<string, unknown> = { hook, metric, steps: rng.range(1, 8) };
    const m = rng.int(10);
    const shape = shapeOf(hook, B, T);
    if (m === 0) invalid(`steps ${show((o.steps = rng.pick([0, -1, 0.5, NaN, '4'])))}`);
    else if (m === 1) invalid('a glob as hook'), (o.hook = 'blocks.*.hook_resid_post');
    else if (m === 2) invalid('an unknown hook'), (o.hook = 'blocks.0.hook_nope');
    else if (m === 3) invalid('a baseline one unit too wide'), (o.baseline = tensor([...shape.slice(0, -1), shape.at(-1)! + 1]));
    else if (m === 4) unfinite('a NaN baseline'), (o.baseline = tensor(shape, NaN));
    else if (m === 5) invalid('a bare Float32Array baseline'), (o.baseline = rand(shape.reduce((a, b) => a * b, 1)));
    else if (m === 6) invalid('hook 5'), (o.hook = 5);
    else if (m === 7) o.baseline = tensor(shape);
    // A zero norm scale divides by zero: the metric at that baseline is not finite.
    if (/hook_scale$/.test(hook) && o.baseline === undefined) unfinite('the zero baseline of a norm scale');
    notes.push(`integratedGradients at ${show(o.hook)}, metric ${show(metric)}, steps ${show(o.steps)}`);
    return {
      what: notes.join('; '),
      expect,
      finite: expect === 'any' && finite,
      run: async () => {
        const r = await api.integratedGradients(model, rows, o as never);
        return { tensors: [['attributions', r.attributions]], numbers: [['metric', r.metric], ['metricBaseline', r.metricBaseline]] };
      },
    };
  }
}
