// TransformerLens hook names, typed. The suffix list mirrors the native hook table
// (native/engine/hooks.cc); test/hooks.test.ts checks the two agree, test/hook-types.test.ts the types.
import { UnknownHookError } from '../errors.js';
import { suggestGlobs, suggestHooks } from './suggest.js';

export { suggestHooks } from './suggest.js';

/** Hooks that exist once per model. */
export const MODEL_HOOKS = ['hook_embed', 'hook_pos_embed', 'ln_final.hook_scale', 'ln_final.hook_normalized', 'unembed.hook_in', 'unembed.hook_out'] as const;

/** Hooks that exist once per block, as `blocks.{layer}.{suffix}`. */
export const BLOCK_HOOKS = [
  'hook_resid_pre',
  'hook_attn_in',
  'hook_q_input',
  'hook_k_input',
  'hook_v_input',
  'ln1.hook_scale',
  'ln1.hook_normalized',
  'attn.hook_q',
  'attn.hook_k',
  'attn.hook_v',
  'attn.q_norm.hook_scale',
  'attn.q_norm.hook_normalized',
  'attn.k_norm.hook_scale',
  'attn.k_norm.hook_normalized',
  'attn.hook_rot_q',
  'attn.hook_rot_k',
  'attn.hook_attn_scores',
  'attn.hook_pattern',
  'attn.hook_z',
  'attn.hook_result',
  'ln1_post.hook_scale',
  'ln1_post.hook_normalized',
  'hook_attn_out',
  'hook_resid_mid',
  'hook_mlp_in',
  'ln2.hook_scale',
  'ln2.hook_normalized',
  'mlp.hook_pre',
  'mlp.hook_pre_linear',
  'mlp.hook_post',
  'ln2_post.hook_scale',
  'ln2_post.hook_normalized',
  'hook_mlp_out',
  'hook_resid_post',
] as const;

/** Hooks an attached SAE adds under its hook, as `{hook}.{suffix}` (SAELens's HookedSAETransformer names). */
export const SAE_HOOKS = ['hook_sae_input', 'hook_sae_acts_pre', 'hook_sae_acts_post', 'hook_sae_recons', 'hook_sae_error', 'hook_sae_output'] as const;

export type ModelHookName = (typeof MODEL_HOOKS)[number];
export type SaeHookSuffix = (typeof SAE_HOOKS)[number];
export type BlockHookSuffix = (typeof BLOCK_HOOKS)[number];
/** Any TransformerLens hook name, e.g. `blocks.3.attn.hook_pattern`. */
export type HookName = ModelHookName | `blocks.${number}.${BlockHookSuffix}` | `${ModelHookName | `blocks.${number}.${BlockHookSuffix}`}.${SaeHookSuffix}`;
/** A hook name or a glob over hook names (`*` matches within one dot-separated part, `**` across parts). */
export type HookPattern = HookName | (string & {});

/** Model families neurotap runs. */
export type Family = 'gpt2' | 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gpt_neox' | 'gemma2' | 'gemma3';

type RotaryOnly = 'attn.hook_rot_q' | 'attn.hook_rot_k';
type GatedOnly = 'mlp.hook_pre_linear';
type QkNormOnly = `attn.${'q' | 'k'}_norm.${'hook_scale' | 'hook_normalized'}`;
type SandwichOnly = `${'ln1_post' | 'ln2_post'}.${'hook_scale' | 'hook_normalized'}`;

/** Block hook suffixes a family has: GPT-2 lacks rotary and gated-MLP hooks; QK-norm hooks are Gemma 3's and Qwen3's, ln1_post/ln2_post Gemma's; GPT-NeoX with a parallel residual has no hook_resid_mid, and models with grouped-query attention no hook_attn_in (neither expressed in the type). */
export type BlockHookSuffixFor<F extends Family> = F extends 'gpt2'
  ? Exclude<BlockHookSuffix, RotaryOnly | GatedOnly | QkNormOnly | SandwichOnly>
  : F extends 'gpt_neox'
    ? Exclude<BlockHookSuffix, GatedOnly | QkNormOnly | SandwichOnly>
    : F extends 'gemma3'
      ? BlockHookSuffix
      : F extends 'gemma2'
        ? Exclude<BlockHookSuffix, QkNormOnly>
        : F extends 'qwen3'
          ? Exclude<BlockHookSuffix, SandwichOnly>
          : Exclude<BlockHookSuffix, QkNormOnly | SandwichOnly>;
/** Model-level hooks a family has: only learned-position models have `hook_pos_embed`. */
export type ModelHookNameFor<F extends Family> = F extends 'gpt2' ? ModelHookName : Exclude<ModelHookName, 'hook_pos_embed'>;
type OwnHookNameFor<F extends Family> = ModelHookNameFor<F> | `blocks.${number}.${BlockHookSuffixFor<F>}`;
/** Hook names of a family, e.g. `HookNameFor<'llama'>` includes `blocks.0.attn.hook_rot_q`, and the hooks of SAEs attached to them (`blocks.0.hook_resid_post.hook_sae_acts_post`). */
export type HookNameFor<F extends Family> = OwnHookNameFor<F> | `${OwnHookNameFor<F>}.${SaeHookSuffix}`;

/**
 * Layers whose block hook names are also spelled out as literals, so that editors complete
 * `blocks.0.` to the family's hooks (`${number}` offers nothing to complete); deeper layers
 * type-check the same, without completion. 24 layers x 34 suffixes keeps the literal union
 * under a thousand names.
 */
export type CompletedLayer = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 15 | 16 | 17 | 18 | 19 | 20 | 21 | 22 | 23;
/** The names of a family spelled out for completion: model hooks and the block hooks of the first layers. */
type ListedHookNameFor<F extends Family> = ModelHookNameFor<F> | `blocks.${CompletedLayer}.${BlockHookSuffixFor<F>}`;
/** The rest of a family's names, as templates (`blocks.${number}.…`, SAE hooks). */
type PatternHookNameFor<F extends Family> = `blocks.${number}.${BlockHookSuffixFor<F>}` | `${OwnHookNameFor<F>}.${SaeHookSuffix}`;
/**
 * `T` kept apart in a union: TypeScript drops a string literal from a union that also holds a
 * template matching it ('blocks.0.hook_z' next to `blocks.${number}.hook_z`), and with it the
 * completion. A template intersected with `Object` accepts the same strings and is not reduced.
 */
type Unreduced<T> = T & Object;
/** `F` is a known family (not the `Family` union of a model loaded without one). */
type Known<F extends Family> = [Family] extends [F] ? false : true;

/**
 * A hook name as parameters take it: one of family F's names (editors complete those of the
 * first {@link CompletedLayer}s); for an unknown family (`Model<Family>`), any string.
 */
export type HookKeyFor<F extends Family> = ListedHookNameFor<F> | (Known<F> extends true ? Unreduced<PatternHookNameFor<F>> : string & {});
/** A glob over hook names: `*` matches within one dot-separated part, `**` across parts, `?` one character. */
export type HookGlob = `${string}*${string}` | `${string}?${string}`;
/** A hook name of family F or a glob, as `capture` and `grads` take them; for an unknown family, any string. */
export type HookPatternFor<F extends Family> = HookKeyFor<F> | HookGlob;
/** An object keyed by family F's hook names (with `Suffix` appended, e.g. `'_grad'`), each value optional: a misspelled key does not compile, even for an unknown family. */
export type HookRecord<F extends Family, V, Suffix extends string = ''> = { [K in `${HookNameFor<F>}${Suffix}`]?: V };
/** {@link HookRecord} whose keys editors also complete (the names of the first {@link CompletedLayer}s spelled out). */
export type CompletedHookRecord<F extends Family, V> = { [K in ListedHookNameFor<F>]?: V } & HookRecord<F, V>;

/** Builds a hook name from its layer and suffix: `blockHook(3, 'attn.hook_z')`. */
export function blockHook(layer: number, suffix: BlockHookSuffix): HookName {
  return `blocks.${layer}.${suffix}`;
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
      } else {
        re += '[^.]*';
      }
    } else if (c === '?') {
      re += '[^.]';
    } else {
      re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

/**
 * Resolves names and globs to hook names in model order. A plain name that does not exist
 * throws UnknownHookError (code ERR_UNKNOWN_HOOK) with the closest names in its message and
 * `suggestions`; a glob that matches nothing, with the closest globs that match. Globs match
 * only `globNames` (the hooks that exist in the current configuration, e.g. no `hook_sae_error`
 * of an SAE without its error term); defaults to `names`.
 */
export function resolveHooks(patterns: readonly string[], names: readonly string[], globNames: readonly string[] = names): string[] {
  const chosen = new Set<string>();
  for (const p of patterns) {
    if (/[*?]/.test(p)) {
      const re = globToRegExp(p);
      const hits = globNames.filter((h) => re.test(h));
      if (hits.length === 0) {
        const close = suggestGlobs(p, globNames);
        const hint = close.length ? `; did you mean ${close.map((c) => `'${c}'`).join(', ')}?` : '';
        throw new UnknownHookError('ERR_UNKNOWN_HOOK', `hook pattern '${p}' matches no hook of this model${hint}`, close);
      }
      hits.forEach((h) => chosen.add(h));
    } else if (names.includes(p)) {
      chosen.add(p);
    } else {
      const close = suggestHooks(p, names);
      throw new UnknownHookError('ERR_UNKNOWN_HOOK', `unknown hook '${p}'; did you mean ${close.map((c) => `'${c}'`).join(', ')}?`, close);
    }
  }
  return names.filter((h) => chosen.has(h));
}
