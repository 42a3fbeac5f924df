// Hostile and careless callers: hooks that throw anything, token ids past int32, batches too
// large for memory, unchecked options, and buffers detached or transferred mid-run. Each case
// ends in a coded error (or the thrown value itself) and leaves the model usable.
import { constants as bufferConstants } from 'node:buffer';
import { totalmem } from 'node:os';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, InvalidInputError, loadModel, Tensor, type Model, type RunOptions } from '../src/index.js';
import { fixtureDir } from './helpers.js';

const LLAMA = fixtureDir('llama-gqa');
const GPT2 = fixtureDir('gpt2');
const good = [[1, 2, 3]];

/** How `p` settled within `ms` (a hang is reported as 'timeout', not waited out). */
async function settle(p: Promise<unknown>, ms: number): Promise<{ state: 'resolved' | 'rejected' | 'timeout'; value?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ state: 'timeout' }>((done) => (timer = setTimeout(() => done({ state: 'timeout' }), ms)));
  try {
    return await Promise.race([p.then((value) => ({ state: 'resolved' as const, value }), (value: unknown) => ({ state: 'rejected' as const, value })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error `p` rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  const r = await settle(p, 20_000);
  expect(r.state, `expected a rejection, got ${r.state}`).toBe('rejected');
  return r.value as { code?: string; message: string };
}

let model: Model;
let baseline: Float32Array;
beforeAll(async () => {
  model = await loadModel(LLAMA, { threads: 2 });
  baseline = (await model.run(good)).logits!.data;
});
afterAll(() => model.dispose());

async function expectUsable(): Promise<void> {
  const again = await model.run(good);
  expect(Array.from(again.logits!.data)).toEqual(Array.from(baseline));
}

describe('a JS hook that throws', () => {
  const thrown: [string, unknown][] = [
    ["a string ('x')", 'x'],
    ['null', null],
    ['undefined', undefined],
    ['a number (42)', 42],
    ['a plain object', { reason: 'custom' }],
    ['an Error', new Error('boom')],
  ];
  for (const [label, value] of thrown) {
    it(`${label}: the run rejects with that value, and the model stays usable`, async () => {
      const run = model.run(good, {
        hooks: {
          'blocks.0.hook_resid_post': () => {
            throw value;
          },
        },
      });
      const r = await settle(run, 10_000);
      expect(r.state).toBe('rejected');
      expect(r.value).toBe(value);
      await expectUsable();
    });
  }

  it('in generation too', async () => {
    const r = await settle(
      model.generate(good, {
        maxNewTokens: 3,
        hooks: {
          'blocks.1.hook_mlp_out': (_act, ctx) => {
            if (ctx.step === 1) throw 'stop';
          },
        },
      }),
      10_000,
    );
    expect(r).toEqual({ state: 'rejected', value: 'stop' });
    await expectUsable();
  });
});

describe('token ids are checked before they reach native code', () => {
  const V = 384;  // the fixture's vocabulary
  const cases: [string, number[][], string][] = [
    ['2^32 + 1 (would wrap to 1)', [[1, 2 ** 32 + 1]], 'ERR_TOKEN_OUT_OF_RANGE'],
    ['-(2^32) + 1 (would wrap to 1)', [[-(2 ** 32) + 1, 2]], 'ERR_TOKEN_OUT_OF_RANGE'],
    ['2^31 (would wrap negative)', [[2 ** 31]], 'ERR_TOKEN_OUT_OF_RANGE'],
    ['the vocabulary size', [[1, V]], 'ERR_TOKEN_OUT_OF_RANGE'],
    ['2^53 + 2', [[2 ** 53 + 2]], 'ERR_TOKEN_OUT_OF_RANGE'],
    ['NaN', [[1, NaN]], 'ERR_INVALID_INPUT'],
    ['Infinity', [[Infinity]], 'ERR_INVALID_INPUT'],
    ['a string', [[1, '2' as unknown as number]], 'ERR_INVALID_INPUT'],
  ];
  for (const [label, tokens, code] of cases) {
    it(`${label} -> ${code} in run and generate`, async () => {
      expect(model.config.dVocab).toBe(V);
      for (const call of [() => model.run(tokens), () => model.generate(tokens, { maxNewTokens: 1 })]) {
        const err = await rejection(call());
        expect(err).toBeInstanceOf(InvalidInputError);
        expect(err.code).toBe(code);
      }
      await expectUsable();
    });
  }

  it('typed-array rows are checked the same way', async () => {
    expect((await rejection(model.run([Float64Array.of(1, 2 ** 32 + 1)] as unknown as number[][]))).code).toBe('ERR_TOKEN_OUT_OF_RANGE');
  });

  it("model.extract's pre-tokenized documents", async () => {
    async function* docs() {
      yield { tokens: [1, 2, 3, 4], file: 'mem', line: 1 };
      yield { tokens: [1, 2 ** 32 + 2, 3, 4], file: 'mem', line: 2 };
    }
    const it = model.extract(docs(), { hooks: ['hook_embed'], seqLen: 4, batchSize: 1 });
    const seen: number[][] = [];
    const err = await rejection(
      (async () => {
        for await (const b of it) seen.push(Array.from(b.tokens));
      })(),
    );
    expect(err.code).toBe('ERR_TOKEN_OUT_OF_RANGE');
    expect(seen.flat()).not.toContain(2);  // 2^32 + 2 never ran as token 2
    await expectUsable();
  });
});

describe('runs too large for memory are refused up front', () => {
  const row = Array.from({ length: 64 }, (_, i) => i + 1);
  /** Rows of 64 tokens whose residual stream alone (3 x d_model floats a token) needs twice this machine's memory. */
  const tooManyRows = () => Math.ceil((2 * totalmem()) / (64 * 3 * model.config.dModel * 4));

  async function expectRefused(call: () => Promise<unknown>, message: RegExp): Promise<void> {
    const t0 = performance.now();
    const err = await rejection(call());
    const ms = performance.now() - t0;
    expect(err.code, err.message).toBe('ERR_OUT_OF_MEMORY');
    expect(err.message).toMatch(message);
    expect(ms, 'the refusal must come before any large allocation').toBeLessThan(1000);
    await expectUsable();
  }

  it('1,000,000 x 64 tokens with logits: more floats than a JS typed array holds', () =>
    expectRefused(() => model.run(new Array<number[]>(1_000_000).fill(row)), new RegExp(`logits .*${bufferConstants.MAX_LENGTH.toLocaleString('en-US')}`)));

  it("a batch whose activations need twice this machine's memory (no logits)", () =>
    expectRefused(() => model.run(new Array<number[]>(tooManyRows()).fill(row), { returnLogits: false }), /needs about [\d.]+ [GT]iB.*memory/));

  it('the same batch in generation', () => expectRefused(() => model.generate(new Array<number[]>(tooManyRows()).fill(row), { maxNewTokens: 1 }), /needs about [\d.]+ [GT]iB/));

  it('a KV cache larger than memory', () => expectRefused(() => model.generate(good, { maxNewTokens: 2 ** 40 }), /KV cache/));

  it('one capture larger than a JS typed array: an attention pattern over a long sequence', async () => {
    // [1, heads, T, T] floats; the sequence itself is small.
    const T = Math.ceil(Math.sqrt((bufferConstants.MAX_LENGTH + 1) / model.config.nHeads));
    await expectRefused(() => model.run([Array.from({ length: T }, () => 1)], { capture: ['blocks.1.attn.hook_pattern'], returnLogits: false }), /capture of 'blocks\.1\.attn\.hook_pattern'.*JS typed array/);
  });

  it('a JS function at a hook larger than a JS typed array', async () => {
    const T = Math.ceil(Math.sqrt((bufferConstants.MAX_LENGTH + 1) / model.config.nHeads));
    await expectRefused(() => model.run([Array.from({ length: T }, () => 1)], { hooks: { 'blocks.1.attn.hook_pattern': () => {} }, returnLogits: false }), /JS function at 'blocks\.1\.attn\.hook_pattern'.*JS typed array/);
  });

  it("captures kept over a generation's steps count too", async () => {
    // Each step keeps [1, heads, 1, key_pos] per layer: quadratic in the number of steps.
    const steps = Math.ceil(Math.sqrt((4 * totalmem()) / (4 * model.config.nHeads * model.config.nLayers)));
    await expectRefused(() => model.generate(good, { maxNewTokens: steps, capture: ['blocks.*.attn.hook_pattern'] }), /captures [\d.]+ [GT]iB/);
  });

  it('normal runs still fit', async () => {
    const r = await model.run(new Array<number[]>(32).fill(row), { capture: ['**'] });
    expect(r.logits!.shape).toEqual([32, 64, model.config.dVocab]);
  });
});

describe('options are checked', () => {
  const invalid: [string, () => Promise<unknown>][] = [
    ['stopAtLayer NaN', () => model.run(good, { stopAtLayer: NaN, returnLogits: false })],
    ['stopAtLayer -1', () => model.run(good, { stopAtLayer: -1, returnLogits: false })],
    ['stopAtLayer 0.5', () => model.run(good, { stopAtLayer: 0.5, returnLogits: false })],
    ['stopAtLayer past the last block', () => model.run(good, { stopAtLayer: 3, returnLogits: false })],
    ['stopAtLayer as a string', () => model.run(good, { stopAtLayer: '1' as unknown as number, returnLogits: false })],
    ['a capture list with a non-string', () => model.run(good, { capture: [5 as unknown as string] })],
    ['returnLogits that is not a boolean or last', () => model.run(good, { returnLogits: 'yes' as unknown as boolean })],
    ['hooks that is not an object', () => model.run(good, { hooks: 'x' as unknown as RunOptions['hooks'] })],
    ['outputs that is not an object', () => model.run(good, { outputs: 5 as unknown as RunOptions['outputs'] })],
    ['seed as a string', () => model.generate(good, { maxNewTokens: 2, temperature: 1, seed: 'x' as unknown as number })],
    ['a fractional seed', () => model.generate(good, { maxNewTokens: 2, temperature: 1, seed: 0.5 })],
    ['stopTokens [NaN]', () => model.generate(good, { maxNewTokens: 2, stopTokens: [NaN] })],
    ['stopTokens that is not an array', () => model.generate(good, { maxNewTokens: 2, stopTokens: 7 as unknown as number[] })],
    ['a signal that is not an AbortSignal', () => model.generate(good, { maxNewTokens: 2, signal: {} as AbortSignal })],
    ['a signal given as a string', () => model.generate(good, { maxNewTokens: 2, signal: 'abort' as unknown as AbortSignal })],
    ['loadModel(5)', () => loadModel(5 as unknown as string)],
    ["loadModel('')", () => loadModel('')],
    ['loadModel options that are not an object', () => loadModel(GPT2, 5 as unknown as object)],
    ['extract maxTokens -1', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, maxTokens: -1 }))],
    ['extract skipSequences NaN', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, skipSequences: NaN }))],
    ['extract groupSize 0', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, groupSize: 0 }))],
    ['extract queueCapacity 0', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, queueCapacity: 0 }))],
    ['extract shard index past count', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, shard: { index: 2, count: 2 } }))],
    ['extract stopAtLayer 0.5', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, stopAtLayer: 0.5 }))],
    ['extract maxMemory -1', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, maxMemory: -1 }))],
    ['extract signal that is not an AbortSignal', () => drain(model.extract(docs(), { hooks: ['hook_embed'], seqLen: 2, signal: {} as AbortSignal }))],
    ['hookShape with a NaN batch', async () => model.hookShape('hook_embed', NaN, 2)],
  ];
  for (const [label, call] of invalid) {
    it(`${label} -> ERR_INVALID_INPUT, and the model stays usable`, async () => {
      const err = await rejection(call());
      expect(err, err.message).toBeInstanceOf(InvalidInputError);
      expect(err.code).toBe('ERR_INVALID_INPUT');
      await expectUsable();
    });
  }

  it('a JS hook returning a Tensor whose data does not match its shape -> ERR_INVALID_INPUT', async () => {
    for (const n of [-1, +1]) {
      const run = model.run(good, {
        hooks: { 'blocks.0.hook_resid_post': (act) => ({ shape: act.shape, data: new Float32Array(act.data.length + n) }) as unknown as Tensor },
      });
      const err = await rejection(run);
      expect(err).toBeInstanceOf(InvalidInputError);
      expect(err.code).toBe('ERR_INVALID_INPUT');
      expect(err.message).toMatch(/floats/);
    }
    await expectUsable();
  });

  it('capture and extract hooks given as one string are one pattern', async () => {
    const one = await model.run(good, { capture: '**' as unknown as string[] });
    const list = await model.run(good, { capture: ['**'] });
    expect([...one.cache.keys()]).toEqual([...list.cache.keys()]);
    for (const [k, t] of list.cache) expect(Array.from(one.cache.get(k).data)).toEqual(Array.from(t.data));
    const g = await model.generate(good, { maxNewTokens: 1, capture: 'hook_embed' as unknown as string[] });
    expect([...g.steps[0]!.keys()]).toEqual(['hook_embed']);
    const batches = await drain(model.extract(docs(), { hooks: 'hook_embed' as unknown as string[], seqLen: 2 }));
    expect([...batches[0]!.activations.keys()]).toEqual(['hook_embed']);
  });
});

/** Moves `a`'s memory into a new array (detaching `a`), as postMessage with a transfer list does. */
function steal(a: Float32Array): Float32Array {
  const buffer = a.buffer as ArrayBuffer;
  return new Float32Array(structuredClone(buffer, { transfer: [buffer] }));
}

async function* docs() {
  yield { tokens: [1, 2, 3, 4], file: 'mem', line: 1 };
}

async function drain<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const b of it) out.push(b);
  return out;
}

describe('memory a hook or a transfer could keep', () => {
  const H1 = 'blocks.1.hook_resid_post';

  it("a hook that transfers its activation's buffer keeps a copy, never native memory", async () => {
    let kept: Float32Array | undefined;
    const err = await rejection(
      model.run(good, {
        hooks: {
          'blocks.0.hook_resid_post': (act) => {
            kept = steal(act.data);
          },
        },
      }),
    );
    expect(err.code).toBe('ERR_HOOK_RETURN');
    expect(err.message).toMatch(/transferred|detached/);
    const snapshot = Array.from(kept!);
    expect(snapshot.some((x) => x !== 0)).toBe(true);
    await model.run([[7, 8, 9]], { capture: ['**'] });  // reuses the engine's activation buffers
    expect(Array.from(kept!)).toEqual(snapshot);
    await expectUsable();
  });

  it('a view kept past the call reads as empty', async () => {
    let kept: Float32Array | undefined;
    await model.run(good, { hooks: { 'blocks.0.hook_resid_post': (act) => void (kept = act.data) } });
    expect(kept!.length).toBe(0);
  });

  it('an output buffer transferred by a hook mid-run receives nothing; the run fails with a code', async () => {
    const out = new Float32Array(model.hookShape(H1, 1, 3).reduce((a, b) => a * b, 1));
    let stolen: Float32Array | undefined;
    const err = await rejection(
      model.run(good, {
        outputs: { [H1]: out },
        hooks: { 'blocks.0.hook_resid_post': () => void (stolen = steal(out)) },
      }),
    );
    expect(err.code).toBe('ERR_BUFFER_SIZE');
    expect(err.message).toMatch(new RegExp(`${H1.replace(/\./g, '\\.')}.*(transferred|detached)`));
    expect(stolen!.every((x) => x === 0)).toBe(true);
    await expectUsable();
  });

  it('a logits buffer transferred right after the call receives nothing', async () => {
    const logits = new Float32Array(3 * model.config.dVocab);
    const run = model.run(good, { logitsOutput: logits });
    const stolen = steal(logits);
    const err = await rejection(run);
    expect(err.code).toBe('ERR_BUFFER_SIZE');
    expect(err.message).toMatch(/logits/);
    expect(stolen.every((x) => x === 0)).toBe(true);
    await expectUsable();
  });

  it('preallocated outputs that stay put are filled as before', async () => {
    const out = new Float32Array(model.hookShape(H1, 1, 3).reduce((a, b) => a * b, 1));
    const logits = new Float32Array(3 * model.config.dVocab);
    const r = await model.run(good, { outputs: { [H1]: out }, logitsOutput: logits });
    expect(r.cache.get(H1).data).toBe(out);
    expect(r.logits!.data).toBe(logits);
    expect(Array.from(logits)).toEqual(Array.from(baseline));
    expect(Array.from(out)).toEqual(Array.from((await model.run(good, { capture: [H1] })).cache.get(H1).data));
  });

  it('arrays over a SharedArrayBuffer work as outputs, logits and patch sources', async () => {
    const shared = (n: number) => new Float32Array(new SharedArrayBuffer(4 * n));
    const out = shared(model.hookShape(H1, 1, 3).reduce((a, b) => a * b, 1));
    const logits = shared(3 * model.config.dVocab);
    const r = await model.run(good, { outputs: { [H1]: out }, logitsOutput: logits });
    expect(r.logits!.data).toBe(logits);
    expect(Array.from(logits)).toEqual(Array.from(baseline));
    const source = (await model.run([[5, 6, 7]], { capture: [H1] })).cache.get(H1);
    const sharedSource = shared(source.data.length);
    sharedSource.set(source.data);
    const viaShared = await model.run(good, { hooks: { [H1]: edits.patch(new Tensor(source.shape, sharedSource)) } });
    const viaPlain = await model.run(good, { hooks: { [H1]: edits.patch(source) } });
    expect(Array.from(viaShared.logits!.data)).toEqual(Array.from(viaPlain.logits!.data));
  });

  it('a DataView as a token row is ERR_INVALID_INPUT, not token 0', async () => {
    const err = await rejection(model.run([new DataView(new ArrayBuffer(12)) as unknown as number[]]));
    expect(err.code).toBe('ERR_INVALID_INPUT');
    await expectUsable();
  });

  it('a patch source changed mid-run (through a transfer) does not change the run', async () => {
    const source = (await model.run([[5, 6, 7]], { capture: [H1] })).cache.get(H1);
    const expected = (await model.run(good, { hooks: { [H1]: edits.patch(source) } })).logits!.data;
    const copy = new Tensor(source.shape, source.data.slice());
    const r = await model.run(good, {
      hooks: {
        'blocks.0.hook_resid_post': () => {
          steal(copy.data).fill(0);
        },
        [H1]: edits.patch(copy),
      },
    });
    expect(Array.from(r.logits!.data)).toEqual(Array.from(expected));
  });
});
