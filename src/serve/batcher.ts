// Continuous batching for generation: requests join a shared KV cache between decode steps and
// leave when they finish, each with its own edits (applied to its row only), sampling settings
// and stop tokens. Waiting prompts run together in one left-padded forward (each request's
// edits on its row), each row of that forward's cache is copied into a free row of the shared
// cache so that it ends at the cache's current position (the row's left padding covers the
// rest), and from then on one forward per step runs every row.
// A row's positions are its indices minus its padding, and every row's attention reads only its
// own keys, so a request's tokens and logits are those of running it alone (test/batcher.test.ts
// checks this against Model.generate with mixed steering, prompt lengths and arrival times).
import { InvalidInputError, NeurotapError } from '../errors.js';
import type { NativeKvCache } from '../bindings/native.js';
import type { Edit, HookSpec, NativeAction } from '../hooks/edits.js';
import { ActivationCache, type Model } from '../model/Model.js';
import { Rng, sampleToken } from '../generate/sampling.js';

/** One generation request. */
export interface BatchRequest {
  /** Prompt token ids (at least one). */
  prompt: readonly number[];
  /** New tokens at most (at least one). */
  maxNewTokens: number;
  /** 0 is greedy. Defaults to 0. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seeds this request's own random stream. Defaults to a random seed. */
  seed?: number;
  /** Tokens that end the request (kept in its output). */
  stopTokens?: readonly number[];
  /** Native edits by hook name, applied to this request's row in every forward (no `rows`, no `patch`, no JS functions). */
  hooks?: Record<string, Edit | readonly Edit[]>;
  /** Return each new token's log-probability and the `logprobs` most likely alternatives. Defaults to none. */
  logprobs?: number;
  /** Return the logits each token was drawn from (a copy per step). Defaults to false. */
  returnLogits?: boolean;
  /** Hooks captured in the prompt's forward (batch 1, `[1, prompt, ...]`), returned in `BatchResult.captures`. Defaults to none. */
  capture?: readonly string[];
  /** Called with each new token as soon as it is chosen; returning true ends the request there (stop reason 'stop', as a stop token). */
  onToken?: (token: GeneratedToken) => boolean | void;
  /** Aborts the request: it leaves the batch at the next step and rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A chosen token, with what was asked for alongside it. */
export interface GeneratedToken {
  token: number;
  /** log p(token) under the model's distribution (before temperature), with `logprobs`. */
  logprob?: number;
  /** The most likely tokens and their log-probabilities, with `logprobs` > 0. */
  top?: { token: number; logprob: number }[];
  /** Logits the token was drawn from, with `returnLogits`. */
  logits?: Float32Array;
}

/** What a request resolves to. */
export interface BatchResult {
  tokens: GeneratedToken[];
  /** The prompt forward's captures (`capture`). */
  captures: ActivationCache;
  stopReason: 'stop' | 'length';
  /** Milliseconds from submission to the prompt's forward starting. */
  queueMs: number;
}

export interface BatcherOptions {
  /** Rows of the shared cache: requests decoded together at most. Defaults to 16. */
  maxBatch?: number;
  /** Positions of the shared cache; a request needs prompt + maxNewTokens of them. Defaults to the model's context, at most 2048 (the cache holds maxBatch x capacity positions of every layer's keys and values). */
  capacity?: number;
  /** Requests waiting beyond this many are refused (ERR_QUEUE_FULL). Defaults to 256. */
  maxQueue?: number;
  /** Called after each decode step with the number of requests it ran. */
  onStep?: (rows: number) => void;
}

/** Counters a server reports. */
export interface BatcherStats {
  steps: number;
  /** Sum over decode steps of the rows that were active in them. */
  rowSteps: number;
  prompts: number;
  /** Forwards that ran prompts (several prompts share one). */
  prefills: number;
  promptTokens: number;
  generatedTokens: number;
}

interface Pending {
  req: BatchRequest;
  submitted: number;
  resolve: (r: BatchResult) => void;
  reject: (e: unknown) => void;
}

interface Active extends Pending {
  row: number;
  /** The request's decode-step edits on its row, translated once; edits whose width follows the key positions (pattern, scores) are translated each step. */
  actions: NativeAction[];
  stepHooks: Record<string, Edit[]>;
  /** Hook index -> the one plain add the request makes there: all rows' are applied as one native edit. */
  rowAdds: Map<number, Float32Array>;
  captures: ActivationCache;
  rng: Rng;
  stop: Set<number>;
  out: GeneratedToken[];
  queueMs: number;
}

/** Shared-cache continuous batching over one model (see the file comment). */
export class Batcher {
  readonly maxBatch: number;
  readonly capacity: number;
  readonly maxQueue: number;
  readonly stats: BatcherStats = { steps: 0, rowSteps: 0, prompts: 0, prefills: 0, promptTokens: 0, generatedTokens: 0 };
  private readonly queue: Pending[] = [];
  private readonly rows: (Active | null)[];
  private cache: NativeKvCache | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  private readonly onStep: ((rows: number) => void) | undefined;

  constructor(
    private readonly model: Model,
    options: BatcherOptions = {},
  ) {
    this.onStep = options.onStep;
    this.maxBatch = options.maxBatch ?? 16;
    this.capacity = options.capacity ?? (model.config.nCtx > 0 ? Math.min(model.config.nCtx, 2048) : 2048);
    this.maxQueue = options.maxQueue ?? 256;
    if (!Number.isSafeInteger(this.maxBatch) || this.maxBatch < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `maxBatch must be a positive integer, got ${this.maxBatch}`);
    if (!Number.isSafeInteger(this.capacity) || this.capacity < 2) throw new InvalidInputError('ERR_INVALID_INPUT', `capacity must be an integer >= 2, got ${this.capacity}`);
    this.rows = Array.from({ length: this.maxBatch }, () => null);
  }

  /** Requests waiting for a row. */
  get queued(): number {
    return this.queue.length;
  }

  /** Requests in the batch. */
  get active(): number {
    return this.rows.filter(Boolean).length;
  }

  /** Queues a request; resolves when it finishes. Throws InvalidInputError for a malformed request and ERR_QUEUE_FULL when the queue is full. */
  submit(req: BatchRequest): Promise<BatchResult> {
    if (this.closed) return Promise.reject(new NeurotapError('ERR_SHUTTING_DOWN', 'the batcher is closed'));
    this.check(req);
    if (this.queue.length >= this.maxQueue) return Promise.reject(new NeurotapError('ERR_QUEUE_FULL', `${this.queue.length} requests are already waiting`));
    return new Promise<BatchResult>((resolve, reject) => {
      this.queue.push({ req, submitted: performance.now(), resolve, reject });
      this.running ??= this.loop().finally(() => (this.running = null));
    });
  }

  /** Stops taking requests; resolves once every queued and active request has finished. */
  async close(): Promise<void> {
    this.closed = true;
    await this.running;
  }

  private check(req: BatchRequest): void {
    const V = this.model.config.dVocab;
    if (!Array.isArray(req.prompt) || req.prompt.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'the prompt needs at least one token');
    req.prompt.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= V) throw new InvalidInputError('ERR_INVALID_INPUT', `prompt[${i}] = ${t} is not a token id in [0, ${V})`);
    });
    if (!Number.isSafeInteger(req.maxNewTokens) || req.maxNewTokens < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `maxNewTokens must be a positive integer, got ${req.maxNewTokens}`);
    if (req.prompt.length + req.maxNewTokens > this.capacity)
      throw new InvalidInputError('ERR_TOO_MANY_TOKENS', `a ${req.prompt.length}-token prompt plus ${req.maxNewTokens} new tokens exceeds the ${this.capacity} positions a request may use`);
    for (const [hook, spec] of Object.entries(req.hooks ?? {}))
      for (const e of [spec].flat() as unknown[]) {
        if (typeof e !== 'object' || e === null) throw new InvalidInputError('ERR_INVALID_INPUT', `${hook}: an edit must be an object`);
        if ('rows' in e && (e as Edit).rows !== undefined) throw new InvalidInputError('ERR_INVALID_INPUT', `${hook}: a batched request's edit cannot select rows`);
        if ((e as Edit).op === 'patch') throw new InvalidInputError('ERR_INVALID_INPUT', `${hook}: patch edits need the whole batch's activation and cannot be batched`);
      }
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        await this.admit();
        if (!this.rows.some(Boolean)) {
          if (this.queue.length === 0) return;
          continue;
        }
        await this.step();
      }
    } catch (err) {
      // A failure outside any one request (moving the cache): every request ends with it.
      for (const p of [...this.queue.splice(0), ...this.rows.filter((a): a is Active => a !== null)]) p.reject(err);
      this.rows.fill(null);
      this.cache = null;
    }
  }

  // Runs waiting prompts, together in one left-padded forward, and moves them into free rows,
  // while rows are free and the cache has room. A request that captures runs its prompt alone
  // (its captures are `[1, prompt, ...]`).
  private async admit(): Promise<void> {
    const free = this.rows.flatMap((a, r) => (a ? [] : [r]));
    const group: Pending[] = [];
    while (this.queue.length > 0 && group.length < free.length) {
      const next = this.queue[0]!;
      if (next.req.signal?.aborted) {
        this.queue.shift();
        next.reject(next.req.signal.reason);
        continue;
      }
      const alone = (next.req.capture?.length ?? 0) > 0;
      if (alone && group.length > 0) break;
      if (!(await this.makeRoom([...group.map((g) => g.req), next.req]))) break;
      group.push(this.queue.shift()!);
      if (alone) break;
    }
    if (group.length > 0) await this.prefill(group, free);
  }

  // Whether the shared cache has room for the batch plus `reqs`, after dropping the positions
  // before every active row's first one if needed: every active row must reach its last token
  // before the cache is full (rows only leave, so no move is needed mid-run).
  private async makeRoom(reqs: readonly BatchRequest[]): Promise<boolean> {
    this.cache ??= this.model.createCache(this.maxBatch, this.capacity);
    const cache = this.cache;
    const remaining = (a: Active) => a.req.maxNewTokens - a.out.length;
    const longest = Math.max(...reqs.map((r) => r.prompt.length));
    const need = (len: number) => Math.max(len, longest) + Math.max(...reqs.map((r) => r.maxNewTokens - 1), ...this.rows.map((a) => (a ? remaining(a) : 0)));
    if (need(cache.length) <= this.capacity) return true;
    for (let r = 0; r < this.maxBatch; r++) if (!this.rows[r]) await this.model.nativeHandle().admitToCache(cache, r, null);
    const drop = Math.min(...cache.pads);
    if (drop > 0) await this.model.nativeHandle().shiftCache(cache, -drop);
    return need(cache.length) <= this.capacity;
  }

  // One forward over the group's prompts (left-padded, each request's edits on its row), then
  // each takes its first token and, unless that ends it, a free row.
  private async prefill(group: Pending[], free: readonly number[]): Promise<void> {
    const k = group.length;
    const P = Math.max(...group.map((p) => p.req.prompt.length));
    const pad = group.map((p) => P - p.req.prompt.length);
    const tokens = Int32Array.from(group.flatMap((p, i) => [...Array<number>(pad[i]!).fill(p.req.prompt[0]!), ...p.req.prompt]));
    const maxPositions = Math.max(...group.map((p) => p.req.prompt.length + p.req.maxNewTokens));
    const started = performance.now();
    const active: Active[] = group.map((p, i) => ({
      ...p,
      row: free[i]!,
      rng: new Rng(p.req.seed ?? Math.floor(Math.random() * 2 ** 32)),
      stop: new Set(p.req.stopTokens ?? []),
      out: [],
      queueMs: started - p.submitted,
      captures: new ActivationCache(),
      actions: [],
      stepHooks: {},
      rowAdds: new Map(),
    }));
    try {
      // Each request's edits on its row; plain adds at every position, all rows' in one edit.
      const actions: NativeAction[] = [];
      const merged = new Map<number, { rows: number[]; vecs: Float32Array[] }>();
      group.forEach((p, i) => {
        const onRow: Record<string, Edit[]> = {};
        for (const [hook, spec] of Object.entries(p.req.hooks ?? {})) for (const e of [spec].flat()) (onRow[hook] ??= []).push({ ...e, rows: [i] } as Edit);
        const rowActions = this.model.hookActions(onRow as Record<string, HookSpec>, k, P, P, maxPositions).actions;
        const adds = plainAdds(rowActions, false);
        for (const [index, vec] of adds) mergeRow(merged, index, i, vec);
        actions.push(...rowActions.filter((x) => !adds.has(x.index)));
      });
      actions.push(...perRowActions(merged));
      const own = this.model.createCache(k, P);
      const signals = group.map((p) => p.req.signal).filter((s): s is AbortSignal => s !== undefined);
      const out = await this.model.forward({
        tokens,
        batch: k,
        pos: P,
        pad: Int32Array.from(pad),
        cache: own,
        capture: k === 1 ? (group[0]!.req.capture ?? []) : [],
        actions,
        logits: 'last',
        maxPositions,
        // One request's prompt alone stops when it is aborted; a group's when all of them are.
        ...(signals.length === k ? { signal: k === 1 ? signals[0]! : AbortSignal.any(signals) } : {}),
      });
      this.stats.prompts += k;
      this.stats.prefills++;
      this.stats.promptTokens += group.reduce((n, p) => n + p.req.prompt.length, 0);
      if (k === 1) active[0]!.captures = out.cache;
      const V = this.model.config.dVocab;
      const cache = this.cache!;
      for (const [i, a] of active.entries()) {
        if (a.req.signal?.aborted) {
          a.reject(a.req.signal.reason);
          continue;
        }
        if (this.choose(a, out.logits!.data.subarray(i * V, (i + 1) * V))) continue;
        if (cache.length < P) await this.model.nativeHandle().shiftCache(cache, P - cache.length);
        await this.model.nativeHandle().admitToCache(cache, a.row, own, i);
        this.prepareStepEdits(a);
        this.rows[a.row] = a;
      }
    } catch (err) {
      for (const a of active) if (!this.rows[a.row]) a.reject(err);
      if (active.some((a) => this.rows[a.row] === a)) throw err;  // the shared cache is in doubt
    }
  }

  // Splits a's edits, on its row, into actions translated now for every decode step and the
  // per-step hooks whose width follows the key positions.
  private prepareStepEdits(a: Active): void {
    const fixed: Record<string, Edit[]> = {};
    for (const [hook, spec] of Object.entries(a.req.hooks ?? {})) {
      const target = /\.hook_(pattern|attn_scores)$/.test(hook) ? a.stepHooks : fixed;
      for (const e of [spec].flat()) (target[hook] ??= []).push({ ...e, rows: [a.row] } as Edit);
    }
    const actions = this.model.hookActions(fixed as Record<string, HookSpec>, this.maxBatch, 1, this.capacity, this.capacity).actions;
    a.rowAdds = plainAdds(actions, true);
    a.actions = actions.filter((x) => !a.rowAdds.has(x.index));
  }

  // One forward for every row; each active row takes its next token.
  private async step(): Promise<void> {
    const cache = this.cache!;
    const B = this.maxBatch;
    const tokens = new Int32Array(B);
    const hooks: Record<string, Edit[]> = {};
    const actions: NativeAction[] = [];
    const merged = new Map<number, { rows: number[]; vecs: Float32Array[] }>();
    let maxPositions = cache.length + 1;
    for (const a of this.rows) {
      if (!a) continue;
      if (a.req.signal?.aborted) {
        await this.leave(a);
        a.reject(a.req.signal.reason);
        continue;
      }
      tokens[a.row] = a.out.at(-1)!.token;
      maxPositions = Math.max(maxPositions, a.req.prompt.length + a.req.maxNewTokens);
      actions.push(...a.actions);
      for (const [hook, list] of Object.entries(a.stepHooks)) (hooks[hook] ??= []).push(...list);
      for (const [index, vec] of a.rowAdds) mergeRow(merged, index, a.row, vec);
    }
    actions.push(...perRowActions(merged));
    const live = this.rows.filter((a): a is Active => a !== null);
    if (live.length === 0) return;
    let logits: Float32Array;
    try {
      const out = await this.model.forward({ tokens, batch: B, pos: 1, cache, capture: [], hooks, actions, logits: 'last', maxPositions });
      logits = out.logits!.data;
    } catch (err) {
      for (const a of live) {
        this.rows[a.row] = null;
        a.reject(err);
      }
      await this.reset();
      return;
    }
    this.stats.steps++;
    this.stats.rowSteps += live.length;
    this.onStep?.(live.length);
    const V = this.model.config.dVocab;
    for (const a of live) if (this.choose(a, logits.subarray(a.row * V, (a.row + 1) * V))) await this.leave(a);
    if (!this.rows.some(Boolean)) await this.reset();
  }

  // Picks a's next token from its logits; true (and a resolved) when a has finished.
  private choose(a: Active, logits: Float32Array): boolean {
    const { req } = a;
    const token = sampleToken(logits, req, a.rng);
    const g: GeneratedToken = { token };
    if (req.logprobs !== undefined) Object.assign(g, logprobsOf(logits, token, req.logprobs));
    if (req.returnLogits) g.logits = logits.slice();
    a.out.push(g);
    this.stats.generatedTokens++;
    const ended = req.onToken?.(g) === true;
    const stopped = ended || a.stop.has(token);
    if (!stopped && a.out.length < req.maxNewTokens) return false;
    a.resolve({ tokens: a.out, captures: a.captures, stopReason: stopped ? 'stop' : 'length', queueMs: a.queueMs });
    return true;
  }

  private async leave(a: Active): Promise<void> {
    this.rows[a.row] = null;
    await this.model.nativeHandle().admitToCache(this.cache!, a.row, null);
  }

  // An empty batch starts again from position 0.
  private async reset(): Promise<void> {
    const cache = this.cache!;
    for (let r = 0; r < this.maxBatch; r++) await this.model.nativeHandle().admitToCache(cache, r, null);
    if (cache.length > 0) await this.model.nativeHandle().shiftCache(cache, -cache.length);
  }
}

/**
 * Hook index -> vector of each hook where `actions` (one request's, on its row) hold exactly one
 * edit and it adds at every position. In a decode step (`decode`) 'last' and 'generated' select
 * that same one position, so they count too. Such adds from every row join in one native edit.
 */
function plainAdds(actions: readonly NativeAction[], decode: boolean): Map<number, Float32Array> {
  const count = new Map<number, number>();
  for (const x of actions) count.set(x.index, (count.get(x.index) ?? 0) + 1);
  const out = new Map<number, Float32Array>();
  for (const x of actions)
    if (count.get(x.index) === 1 && x.kind === 'edit' && x.op === 'add' && x.vector && !x.positions && !x.heads && !x.prompt && (decode || (!x.last && !x.generated)))
      out.set(x.index, x.vector);
  return out;
}

function mergeRow(merged: Map<number, { rows: number[]; vecs: Float32Array[] }>, index: number, row: number, vec: Float32Array): void {
  const m = merged.get(index) ?? { rows: [], vecs: [] };
  m.rows.push(row);
  m.vecs.push(vec);
  merged.set(index, m);
}

/** One add edit per hook with each row's own vector. */
function perRowActions(merged: ReadonlyMap<number, { rows: number[]; vecs: Float32Array[] }>): NativeAction[] {
  return [...merged].map(([index, { rows, vecs }]) => {
    const vector = new Float32Array(vecs.reduce((n, v) => n + v.length, 0));
    vecs.reduce((at, v) => (vector.set(v, at), at + v.length), 0);
    return { kind: 'edit', index, op: 'add', vector, rows: Int32Array.from(rows), perRow: true };
  });
}

/** log p(token) and the n most likely tokens' log-probabilities (ties: lower id first). */
export function logprobsOf(logits: Float32Array, token: number, n: number): { logprob: number; top?: { token: number; logprob: number }[] } {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  const out: { logprob: number; top?: { token: number; logprob: number }[] } = { logprob: logits[token]! - lse };
  if (n > 0) {
    const top: number[] = [];
    for (let i = 0; i < logits.length; i++) {
      if (top.length === n && !(logits[i]! > logits[top[n - 1]!]!)) continue;
      let j = Math.min(top.length, n - 1);
      top[j] = i;
      while (j > 0 && logits[top[j - 1]!]! < logits[i]!) {
        top[j] = top[j - 1]!;
        top[j - 1] = i;
        j--;
      }
    }
    out.top = top.map((t) => ({ token: t, logprob: logits[t]! - lse }));
  }
  return out;
}
