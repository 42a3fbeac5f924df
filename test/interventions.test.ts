// Native edits and JS hooks against HF transformers with equivalent torch hooks
// (test/fixtures/generate_interventions.py), at 1e-5 relative error on logits; JS hooks
// against native edits; hook exceptions; bad edits rejected before compute.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';

import { edits, InvalidInputError, loadModel, readSafetensors, Tensor, UnknownHookError, type Edit, type HookMap, type Model } from '../src/index.js';
import { compare, fixtureDir, ROOT, toEdit, type RefCase } from './helpers.js';

const TOL = 1e-5;


for (const name of ['gpt2', 'llama-gqa', 'qwen2']) {
  describe(`edits against HF: ${name}`, () => {
    const spec = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'interventions', `${name}.json`), 'utf8')) as { input_ids: number[][]; cases: RefCase[] };
    const ref = readSafetensors(join(ROOT, 'test', 'fixtures', 'interventions', `${name}.safetensors`));
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(fixtureDir(name), { threads: 2 });
    });
    afterAll(() => model.dispose());

    it('base logits match', async () => {
      const r = await model.run(spec.input_ids);
      expect(compare(r.logits!.data, ref.get('base.logits')!.data as Float32Array, TOL).relError).toBeLessThanOrEqual(TOL);
    });

    for (const c of spec.cases) {
      it(c.name, async () => {
        const hooks: Record<string, Edit[]> = {};
        for (const e of c.edits) {
          let source: Tensor | undefined;
          if (e.op === 'patch') {
            const src = await model.run(c.source_ids!, { capture: [e.hook], returnLogits: false });
            source = src.cache.get(e.hook);
            const stored = ref.get(`${c.name}.source.${e.hook}`);
            if (stored) expect(compare(source.data, stored.data as Float32Array, TOL).relError).toBeLessThanOrEqual(TOL);
          }
          (hooks[e.hook] ??= []).push(toEdit(e, source));
        }
        const r = await model.run(spec.input_ids, { hooks });
        const expected = ref.get(`${c.name}.logits`)!.data as Float32Array;
        const cmp = compare(r.logits!.data, expected, TOL);
        expect(cmp.relError, `${c.name}: rel ${cmp.relError}; ${cmp.firstMismatches.join('; ')}`).toBeLessThanOrEqual(TOL);
        // The edit must matter: differs from the unedited logits.
        expect(compare(r.logits!.data, ref.get('base.logits')!.data as Float32Array, 0).maxAbsError).toBeGreaterThan(1e-3);
      });
    }
  });
}

describe('JS hook functions', () => {
  let model: Model<'llama'>;
  const tokens = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]];
  beforeAll(async () => {
    model = await loadModel(fixtureDir('llama-gqa'), { threads: 2, family: 'llama' });
  });
  afterAll(() => model.dispose());

  it('editing in place equals the native edit exactly', async () => {
    const v = Float32Array.from({ length: model.config.dModel }, (_, i) => Math.cos(i));
    const native = await model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.add(v, { scale: 2 }) } });
    const js = await model.run(tokens, {
      hooks: {
        'blocks.0.hook_resid_post': (act) => {
          for (let i = 0; i < act.data.length; i++) act.data[i]! += 2 * v[i % v.length]!;
        },
      },
    });
    expect(Array.from(js.logits!.data)).toEqual(Array.from(native.logits!.data));
  });

  it('a returned tensor replaces the activation; ctx names the hook', async () => {
    const seen: string[] = [];
    const zeroed = await model.run(tokens, {
      hooks: {
        'blocks.1.mlp.hook_post': (act, ctx) => {
          seen.push(`${ctx.hook}:${act.shape.join('x')}`);
          return new Tensor(act.shape, new Float32Array(act.size));
        },
      },
    });
    const native = await model.run(tokens, { hooks: { 'blocks.1.mlp.hook_post': edits.zero() } });
    expect(Array.from(zeroed.logits!.data)).toEqual(Array.from(native.logits!.data));
    expect(seen).toEqual([`blocks.1.mlp.hook_post:2x5x${model.config.dMlp}`]);
  });

  it('edits and functions at one hook run in the order given; captures see the result', async () => {
    const order: string[] = [];
    const r = await model.run(tokens, {
      capture: ['blocks.0.hook_resid_pre'],
      hooks: {
        'blocks.0.hook_resid_pre': [
          (act) => {
            order.push(`first:${act.data[0]}`);
          },
          edits.zero({ positions: [0] }),
          (act) => {
            order.push(`second:${act.data[0]}`);
          },
        ],
      },
    });
    expect(order[0]).not.toBe('first:0');
    expect(order[1]).toBe('second:0');
    expect(r.cache.get('blocks.0.hook_resid_pre').data[0]).toBe(0);
  });

  it('the view handed to JS is detached after the call', async () => {
    let kept: Tensor | undefined;
    await model.run(tokens, { hooks: { 'blocks.1.attn.hook_pattern': (act) => void (kept = act) } });
    expect(kept!.data.length).toBe(0);
  });

  it('a hook that throws rejects the run with that error; the model stays usable', async () => {
    const before = await model.run(tokens);
    class Mine extends Error {}
    const boom = new Mine('boom');
    await expect(model.run(tokens, { hooks: { 'blocks.0.attn.hook_z': () => { throw boom; } } })).rejects.toBe(boom);
    const after = await model.run(tokens);
    expect(Array.from(after.logits!.data)).toEqual(Array.from(before.logits!.data));
  });

  it('a hook returning the wrong shape or type rejects with ERR_HOOK_RETURN', async () => {
    await expect(model.run(tokens, { hooks: { 'blocks.0.hook_mlp_out': () => new Tensor([1], new Float32Array(1)) } })).rejects.toMatchObject({ code: 'ERR_HOOK_RETURN' });
    await expect(model.run(tokens, { hooks: { 'blocks.0.hook_mlp_out': () => [1, 2, 3] as unknown as Tensor } })).rejects.toMatchObject({ code: 'ERR_HOOK_RETURN' });
    expect((await model.run(tokens)).logits).not.toBeNull();
  });

  it('hook names are typed per family', () => {
    expectTypeOf<{ 'blocks.0.attn.hook_rot_q': Edit }>().toExtend<HookMap<'llama'>>();
    expectTypeOf<{ hook_pos_embed: Edit }>().toExtend<HookMap<'gpt2'>>();
    const ok: HookMap<'llama'> = { 'blocks.3.hook_resid_post': edits.zero() };
    // @ts-expect-error a misspelled hook name does not compile
    const typo: HookMap<'llama'> = { 'blocks.3.hook_resid_psot': edits.zero() };
    // @ts-expect-error GPT-2 has no rotary hooks
    const gptRotary: HookMap<'gpt2'> = { 'blocks.0.attn.hook_rot_q': edits.zero() };
    // @ts-expect-error Llama has no learned position embedding
    const llamaPos: HookMap<'llama'> = { hook_pos_embed: edits.zero() };
    expect([ok, typo, gptRotary, llamaPos]).toHaveLength(4);
  });
});

describe('bad edits are rejected before compute', () => {
  let model: Model;
  const tokens = [[1, 2, 3]];
  let baseline: number[];
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
    baseline = Array.from((await model.run(tokens)).logits!.data);
  });
  afterAll(() => model.dispose());

  const d = 64;
  const cases: [string, () => Promise<unknown>, RegExp][] = [
    ['a vector of the wrong width', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.add(new Float32Array(d + 1)) } }), /width 64/],
    ['a position past the sequence', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.zero({ positions: [3] }) } }), /position 3 is outside \[0, 3\)/],
    ['a head index out of range', () => model.run(tokens, { hooks: { 'blocks.0.attn.hook_z': edits.zero({ heads: [4] }) } }), /head 4 is outside/],
    ['heads on a hook without heads', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.zero({ heads: [0] }) } }), /per-head hook/],
    ['a batch row out of range', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.zero({ rows: [1] }) } }), /batch row 1/],
    ['a zero direction', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.projectOut(new Float32Array(d)) } }), /non-zero/],
    ['min > max', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.projectionCap(new Float32Array(d).fill(1), { min: 2, max: 1 }) } }), /min <= max/],
    ['a patch source of the wrong shape', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.patch(new Tensor([1, 2, d], new Float32Array(2 * d))) } }), /patch source has shape/],
    ['a non-finite vector', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.add(new Float32Array(d).fill(NaN)) } }), /non-finite/],
    ['an unknown op', () => model.run(tokens, { hooks: { 'blocks.0.hook_resid_post': { op: 'nope' } as unknown as Edit } }), /unknown edit op/],
  ];
  for (const [label, run, message] of cases) {
    it(`${label} -> ERR_INVALID_INPUT, model still usable`, async () => {
      const err = await run().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidInputError);
      expect((err as InvalidInputError).code).toBe('ERR_INVALID_INPUT');
      expect((err as Error).message).toMatch(message);
      expect(Array.from((await model.run(tokens)).logits!.data)).toEqual(baseline);
    });
  }

  it('an unknown hook name in hooks -> ERR_UNKNOWN_HOOK', async () => {
    await expect(model.run(tokens, { hooks: { 'blocks.0.hook_resid_psot': edits.zero() } as HookMap })).rejects.toBeInstanceOf(UnknownHookError);
  });
});
