// A glob that matches no hook throws ERR_UNKNOWN_HOOK with the closest globs that do match
// (as a misspelled plain name gets the closest names), from resolveHooks and from the model.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BLOCK_HOOKS, loadModel, MODEL_HOOKS, resolveHooks, UnknownHookError, type Model } from '../src/index.js';
import { fixtureDir } from './helpers.js';

const NAMES = [...MODEL_HOOKS, ...[0, 1, 2, 3].flatMap((l) => BLOCK_HOOKS.map((s) => `blocks.${l}.${s}`))];

/** The UnknownHookError `fn` throws. */
function unknownHook(fn: () => unknown): UnknownHookError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UnknownHookError);
    expect((err as UnknownHookError).code).toBe('ERR_UNKNOWN_HOOK');
    return err as UnknownHookError;
  }
  throw new Error('expected an UnknownHookError');
}

describe('glob suggestions', () => {
  it('a misspelled glob suggests the glob with the misspelling fixed, first', () => {
    const cases: [typo: string, fixed: string][] = [
      ['blocks.*.attn.hook_patern', 'blocks.*.attn.hook_pattern'],
      ['blocks.*.hook_resid_pr', 'blocks.*.hook_resid_pre'],
      ['**.hook_pattrn', '**.hook_pattern'],
      ['blocks.?.mlp.hook_postt', 'blocks.?.mlp.hook_post'],
      ['blcks.**', 'blocks.**'],
      ['blocks.*.attn.*_norm.hook_scal', 'blocks.*.attn.*_norm.hook_scale'],
      ['blocks.*.ln1.hook_*x', 'blocks.*.ln1.hook_*'],
    ];
    for (const [typo, fixed] of cases) {
      const err = unknownHook(() => resolveHooks([typo], NAMES));
      expect(err.suggestions[0], typo).toBe(fixed);
      expect(err.message).toBe(`hook pattern '${typo}' matches no hook of this model; did you mean ${err.suggestions.map((s) => `'${s}'`).join(', ')}?`);
      // Every suggestion is a glob (or name) that resolves, and suggestions are distinct.
      expect(err.suggestions.length).toBeGreaterThan(0);
      expect(err.suggestions.length).toBeLessThanOrEqual(3);
      expect(new Set(err.suggestions).size).toBe(err.suggestions.length);
      for (const s of err.suggestions) expect(resolveHooks([s], NAMES).length, s).toBeGreaterThan(0);
    }
  });

  it('suggests only among the hooks a glob may match', () => {
    const sae = 'blocks.0.hook_resid_post.hook_sae_error';
    const all = [...NAMES, sae];
    const err = unknownHook(() => resolveHooks(['blocks.*.hook_resid_post.hook_sae_eror'], all, NAMES));
    expect(err.suggestions.length).toBeGreaterThan(0);
    expect(err.suggestions).not.toContain('blocks.*.hook_resid_post.hook_sae_error');
    for (const s of err.suggestions) expect(resolveHooks([s], NAMES).length, s).toBeGreaterThan(0);
    // No hook to match: no suggestion, and the message says so plainly.
    const none = unknownHook(() => resolveHooks(['blocks.*'], ['hook_embed'], []));
    expect(none.suggestions).toEqual([]);
    expect(none.message).toBe("hook pattern 'blocks.*' matches no hook of this model");
  });

  describe('through the model', () => {
    let model: Model<'gpt2'>;
    beforeAll(async () => {
      model = await loadModel(fixtureDir('gpt2'), { family: 'gpt2' });
    });
    afterAll(() => model?.dispose());

    it('run, backward and extract name the closest globs of the model', async () => {
      const ids = [[1, 2, 3]];
      // The glob is a string the type does not check (a glob is any string with a wildcard).
      const run = await model.run(ids, { capture: ['blocks.*.hook_resid_prre'] }).catch((e: unknown) => e);
      expect(run).toBeInstanceOf(UnknownHookError);
      expect((run as UnknownHookError).suggestions[0]).toBe('blocks.*.hook_resid_pre');
      expect((run as Error).message).toMatch(/^hook pattern 'blocks\.\*\.hook_resid_prre' matches no hook of this model; did you mean 'blocks\.\*\.hook_resid_pre'/);
      // attn.hook_rot_q is not a GPT-2 hook: the suggestions are GPT-2's.
      const back = await model.backward(ids, { metric: 'loss', grads: 'blocks.*.attn.hook_rot_q' }).catch((e: unknown) => e);
      expect(back).toBeInstanceOf(UnknownHookError);
      expect((back as UnknownHookError).suggestions.length).toBeGreaterThan(0);
      for (const s of (back as UnknownHookError).suggestions) expect(resolveHooks([s], model.hookNames).length, s).toBeGreaterThan(0);
      const docs = (async function* () {
        yield { tokens: [1, 2, 3, 4], file: 'mem', line: 1 };
      })();
      const extract = await model.extract(docs, { hooks: ['blocks.?.mlp.hook_pst'], seqLen: 4 }).next().catch((e: unknown) => e);
      expect(extract).toBeInstanceOf(UnknownHookError);
      expect((extract as UnknownHookError).suggestions[0]).toBe('blocks.?.mlp.hook_post');
      // The model is still usable.
      expect((await model.run(ids, { capture: 'blocks.*.hook_resid_pre' })).cache.size).toBe(model.config.nLayers);
    });
  });
});
