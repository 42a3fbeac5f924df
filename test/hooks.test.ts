// The TypeScript hook names mirror the native hook table; globs resolve as documented.
import { describe, expect, expectTypeOf, it } from 'vitest';

import { native } from '../src/bindings/native.js';
import { BLOCK_HOOKS, blockHook, MODEL_HOOKS, resolveHooks, SAE_HOOKS, type HookName } from '../src/index.js';

describe('hook names', () => {
  it('TypeScript lists exactly the native hook kinds', () => {
    const all = native().hookKinds();
    const kinds = all.filter((k) => !k.sae);
    expect(kinds.filter((k) => k.perBlock).map((k) => k.suffix)).toEqual([...BLOCK_HOOKS]);
    expect(kinds.filter((k) => !k.perBlock).map((k) => k.suffix).sort()).toEqual([...MODEL_HOOKS].sort());
    expect(all.filter((k) => k.sae).map((k) => k.suffix)).toEqual([...SAE_HOOKS]);
  });

  it('types hook names', () => {
    expectTypeOf(blockHook(3, 'attn.hook_pattern')).toEqualTypeOf<HookName>();
    expectTypeOf<'blocks.3.attn.hook_pattern'>().toExtend<HookName>();
    expectTypeOf<'hook_embed'>().toExtend<HookName>();
    expectTypeOf<'blocks.3.attn.hook_patern'>().not.toExtend<HookName>();
    expectTypeOf<'blocks.x.hook_resid_post'>().not.toExtend<HookName>();
    // @ts-expect-error a misspelled suffix does not compile
    blockHook(0, 'attn.hook_patern');
  });

  it('resolves names and globs in model order', () => {
    const names = ['hook_embed', 'blocks.0.hook_resid_pre', 'blocks.0.attn.hook_q', 'blocks.1.hook_resid_pre', 'blocks.1.attn.hook_q', 'ln_final.hook_scale'];
    expect(resolveHooks(['blocks.*.hook_resid_pre'], names)).toEqual(['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']);
    expect(resolveHooks(['blocks.1.*'], names)).toEqual(['blocks.1.hook_resid_pre']);
    expect(resolveHooks(['blocks.1.**'], names)).toEqual(['blocks.1.hook_resid_pre', 'blocks.1.attn.hook_q']);
    expect(resolveHooks(['ln_final.hook_scale', 'hook_embed', 'hook_embed'], names)).toEqual(['hook_embed', 'ln_final.hook_scale']);
    expect(resolveHooks(['blocks.?.attn.hook_q'], names)).toEqual(['blocks.0.attn.hook_q', 'blocks.1.attn.hook_q']);
    expect(() => resolveHooks(['blocks.0.attn.hook_qq'], names)).toThrow(/did you mean 'blocks\.0\.attn\.hook_q'/);
  });
});
