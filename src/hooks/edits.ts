// Native edits (steering, ablation, patching) and JS hook functions, as users write them,
// and their translation into the addon's hook actions. Semantics: README "Interventions";
// reference: test/fixtures/generate_interventions.py.
import { InvalidInputError } from '../errors.js';
import { Tensor } from '../tensor.js';

/** Which positions an edit touches: all, the last of each forward, only the prompt's, only generated ones, or a list. */
export type PositionSelector = 'all' | 'last' | 'prompt' | 'generated' | readonly number[];

/** Where an edit applies within the activation. */
export interface EditSelection {
  /** Positions (real token positions, 0 = first token of each sequence). Defaults to `'all'`. */
  positions?: PositionSelector;
  /** Batch rows. Defaults to all rows. */
  rows?: readonly number[];
  /** Heads, for per-head hooks (`attn.hook_q/k/v/z/rot_q/rot_k/result/attn_scores/pattern`, `hook_q/k/v_input`, `hook_attn_in`, QK-norm). Defaults to all heads. */
  heads?: readonly number[];
}

type Vec = Float32Array | readonly number[];

/** An edit applied natively inside the forward pass, with no JS round trip. */
export type Edit = EditSelection &
  (
    | { op: 'add'; vector: Vec; scale?: number }
    | { op: 'set'; value: Vec }
    | { op: 'zero' }
    | { op: 'meanAblate'; mean: Vec }
    | { op: 'scale'; factor: number }
    | { op: 'projectOut'; direction: Vec }
    | { op: 'projectionCap'; direction: Vec; min?: number | null; max?: number | null }
    | { op: 'patch'; source: Tensor }
  );

/** Where a JS hook function was called. */
export interface HookContext {
  /** The hook's name. */
  hook: string;
  /** Forwards run so far in this generation (0 = the prompt); 0 for `run`. */
  step: number;
  /** Positions already in the KV cache before this forward (0 for `run`). */
  pos0: number;
  /** Padded prompt length of this generation (the input length for `run`). */
  promptLength: number;
}

/**
 * A function run synchronously mid-forward on the activation. Edit `act.data` in place or
 * return a Tensor of the same shape to replace it. `act` is only valid during the call (its
 * data reads as empty afterwards): copy what you need to keep (`act.data.slice()`).
 */
export type HookFunction = (act: Tensor, ctx: HookContext) => Tensor | void;

/** What may be registered at a hook: one edit, several (applied in order), or a function. */
export type HookSpec = Edit | HookFunction | readonly (Edit | HookFunction)[];

/** Builders for edits: `edits.add(vector, { scale: 4 })`. */
export const edits = {
  /** x += scale · vector on every selected unit. */
  add: (vector: Vec, opts: EditSelection & { scale?: number } = {}): Edit => ({ ...opts, op: 'add', vector }),
  /** x = value (one unit wide, broadcast). */
  set: (value: Vec, opts: EditSelection = {}): Edit => ({ ...opts, op: 'set', value }),
  /** x = 0. */
  zero: (opts: EditSelection = {}): Edit => ({ ...opts, op: 'zero' }),
  /** x = mean (one unit wide, e.g. a dataset mean). */
  meanAblate: (mean: Vec, opts: EditSelection = {}): Edit => ({ ...opts, op: 'meanAblate', mean }),
  /** x *= factor. */
  scale: (factor: number, opts: EditSelection = {}): Edit => ({ ...opts, op: 'scale', factor }),
  /** Removes the component along `direction`: x -= (x·u)u with u = direction / |direction|. */
  projectOut: (direction: Vec, opts: EditSelection = {}): Edit => ({ ...opts, op: 'projectOut', direction }),
  /** Clamps the component along `direction` into [min, max] (either may be omitted). */
  projectionCap: (direction: Vec, opts: EditSelection & { min?: number | null; max?: number | null } = {}): Edit => ({ ...opts, op: 'projectionCap', direction }),
  /** Takes the values of `source` (this hook's activation from another run, same shape). */
  patch: (source: Tensor, opts: EditSelection = {}): Edit => ({ ...opts, op: 'patch', source }),
};

/** The addon's form of one action at one hook. */
export type NativeAction =
  | {
      kind: 'edit';
      index: number;
      op: 'add' | 'set' | 'zero' | 'scale' | 'projectOut' | 'projectionCap' | 'patch';
      vector?: Float32Array;
      factor?: number;
      lo?: number;
      hi?: number;
      source?: Float32Array;
      positions?: Int32Array;
      last?: boolean;
      generated?: boolean;
      prompt?: boolean;
      rows?: Int32Array;
      heads?: Int32Array;
      /** add / set: `vector` holds one vector per entry of `rows`, in that order. */
      perRow?: boolean;
    }
  | { kind: 'callback'; index: number; id: number };

/** Shape facts the translation checks edits against. */
export interface HookGeometry {
  name: string;
  index: number;
  /** Concrete shape in this forward (for patch sources and `run`). */
  shape: readonly number[];
  /** Width of one unit (last dim) and number of heads (1 if no head axis). */
  width: number;
  heads: number;
  /** What `heads` selects: attention heads, or SAE features at `hook_sae_acts_pre/post`. Defaults to heads. */
  unit?: 'head' | 'feature';
  batch: number;
  /** Positions a selection may name: the sequence length (plus new tokens when generating). */
  maxPositions: number;
}

function bad(hook: string, message: string): never {
  throw new InvalidInputError('ERR_INVALID_INPUT', `edit at '${hook}': ${message}`);
}

function toF32(v: Vec, hook: string, what: string, width: number): Float32Array {
  const f = v instanceof Float32Array ? v : Float32Array.from(v);
  if (f.length !== width) bad(hook, `${what} has ${f.length} floats but units at this hook have width ${width}`);
  for (const x of f) if (!Number.isFinite(x)) bad(hook, `${what} holds a non-finite value`);
  return f;
}

function unit(f: Float32Array, hook: string, what: string): Float32Array {
  let n = 0;
  for (const x of f) n += x * x;
  if (!(n > 0)) bad(hook, `${what} must be non-zero`);
  const s = 1 / Math.sqrt(n);
  return f.map((x) => x * s);
}

function indexList(list: readonly number[], limit: number, hook: string, what: string): Int32Array {
  for (const i of list) if (!Number.isInteger(i) || i < 0 || i >= limit) bad(hook, `${what} ${i} is outside [0, ${limit})`);
  return Int32Array.from(list);
}

/** Translates one edit into a native action, checking it against the hook up front. */
export function editToAction(e: Edit, g: HookGeometry): NativeAction {
  const action: Extract<NativeAction, { kind: 'edit' }> = { kind: 'edit', index: g.index, op: 'zero' };
  const pos = e.positions ?? 'all';
  if (pos === 'last') action.last = true;
  else if (pos === 'generated') action.generated = true;
  else if (pos === 'prompt') action.prompt = true;
  else if (pos !== 'all') {
    if (!Array.isArray(pos)) bad(g.name, `positions must be 'all', 'last', 'prompt', 'generated' or a list of indices`);
    action.positions = indexList(pos, g.maxPositions, g.name, 'position');
  }
  if (e.rows) action.rows = indexList(e.rows, g.batch, g.name, 'batch row');
  if (e.heads) {
    if (g.heads === 1) bad(g.name, 'head selection needs a per-head hook (attn.hook_q/k/v/z/rot_q/rot_k/attn_scores/pattern, or features at hook_sae_acts_pre/post)');
    if (g.unit === 'feature') {
      for (const i of e.heads)
        if (!Number.isInteger(i) || i < 0 || i >= g.heads)
          throw new InvalidInputError('ERR_FEATURE_OUT_OF_RANGE', `edit at '${g.name}': feature ${i} is outside [0, ${g.heads})`);
      action.heads = Int32Array.from(e.heads);
    } else {
      action.heads = indexList(e.heads, g.heads, g.name, 'head');
    }
  }
  switch (e.op) {
    case 'add': {
      const v = toF32(e.vector, g.name, 'vector', g.width);
      const s = e.scale ?? 1;
      if (!Number.isFinite(s)) bad(g.name, 'scale must be finite');
      return { ...action, op: 'add', vector: s === 1 ? v : v.map((x) => x * s) };
    }
    case 'set':
      return { ...action, op: 'set', vector: toF32(e.value, g.name, 'value', g.width) };
    case 'meanAblate':
      return { ...action, op: 'set', vector: toF32(e.mean, g.name, 'mean', g.width) };
    case 'zero':
      return { ...action, op: 'zero' };
    case 'scale':
      if (!Number.isFinite(e.factor)) bad(g.name, 'factor must be finite');
      return { ...action, op: 'scale', factor: e.factor };
    case 'projectOut':
      return { ...action, op: 'projectOut', vector: unit(toF32(e.direction, g.name, 'direction', g.width), g.name, 'direction') };
    case 'projectionCap': {
      const lo = e.min ?? -Infinity;
      const hi = e.max ?? Infinity;
      if (Number.isNaN(lo) || Number.isNaN(hi) || lo > hi) bad(g.name, 'projectionCap needs min <= max');
      return { ...action, op: 'projectionCap', vector: unit(toF32(e.direction, g.name, 'direction', g.width), g.name, 'direction'), lo, hi };
    }
    case 'patch': {
      const src = e.source;
      if (!(src instanceof Tensor) && !(src && (src as Tensor).data instanceof Float32Array)) bad(g.name, 'patch source must be a Tensor');
      if (src.shape.join() !== g.shape.join()) bad(g.name, `patch source has shape [${src.shape.join(', ')}], the activation [${g.shape.join(', ')}]`);
      return { ...action, op: 'patch', source: src.data };
    }
    default:
      return bad(g.name, `unknown edit op '${(e as { op: unknown }).op}'`);
  }
}

/**
 * Runs the user's hook function `fns[id]` on a native activation (called by the addon on the
 * JS thread while the forward waits). A returned Tensor replaces the activation.
 */
export function makeDispatcher(fns: { fn: HookFunction; hook: string }[]): (id: number, data: Float32Array, shape: number[], ctx: { step: number; pos0: number; promptLength: number }) => void {
  return (id, data, shape, ctx) => {
    const { fn, hook } = fns[id]!;
    const n = data.length;
    const result = fn(new Tensor(shape, data), { hook, step: ctx.step, pos0: ctx.pos0, promptLength: ctx.promptLength });
    if (data.length !== n)
      throw new InvalidInputError('ERR_HOOK_RETURN', `hook at '${hook}' detached (transferred) its activation's buffer; copy act.data (act.data.slice()) instead`);
    if (result === undefined || result === null) return;
    const r = result as Partial<Tensor>;
    if (!(r.data instanceof Float32Array) || !Array.isArray(r.shape) && !(r.shape && typeof r.shape === 'object'))
      throw new InvalidInputError('ERR_HOOK_RETURN', `hook at '${hook}' returned something other than a float32 Tensor`);
    if (r.shape!.join() !== shape.join())
      throw new InvalidInputError('ERR_HOOK_RETURN', `hook at '${hook}' returned shape [${r.shape!.join(', ')}], expected [${shape.join(', ')}]`);
    if (r.data.length !== n)  // a malformed Tensor (its data disagrees with its own shape): invalid input
      throw new InvalidInputError('ERR_INVALID_INPUT', `hook at '${hook}' returned a Tensor of shape [${r.shape!.join(', ')}] holding ${r.data.length} floats; the shape needs ${n}`);
    if (r.data !== data) data.set(r.data);
  };
}
