// model.extract(): a corpus streamed through tokenization and packing (sources.ts,
// packing.ts), batched, run through the model and yielded as batches of activations, with
// tokenization running ahead through a bounded queue and the next forward overlapping the
// consumer's work. The CLI's `extract` writes these batches to shards (src/cli/extract.ts).
// Tests: test/extract.test.ts.
import { InvalidInputError } from '../errors.js';
import type { Family, HookKeyFor, HookPatternFor } from '../hooks/names.js';
import type { ActivationCache, Model } from '../model/Model.js';
import { packWindows, shardFilter, type Window } from './packing.js';
import { BoundedQueue } from './queue.js';
import { readDocuments, type Document, type SourceSpec } from './sources.js';

/** Options for {@link Model.extract}. */
export interface ExtractOptions<F extends Family = Family> {
  /** Hook names or globs to capture (may be empty with `featureCounts`). */
  hooks: readonly HookPatternFor<F>[];
  /** Count, per feature of each attached SAE (or of the SAEs at `hooks`), the real (unpadded) tokens where it fires (acts_post > 0), in `batch.featureCounts`: feature density over a corpus. Defaults to none. */
  featureCounts?: boolean | { hooks?: readonly HookKeyFor<F>[] };
  /** Tokens per sequence. */
  seqLen: number;
  /** Pack documents into consecutive windows (false: one sequence per document, truncated or right-padded). Defaults to true. */
  pack?: boolean;
  /** Keep a trailing partial window, right-padded with `padId`. Defaults to false. */
  padLast?: boolean;
  /** Padding token id (padded positions are listed in `lengths`). Defaults to 0. */
  padId?: number;
  /** Sequences per forward. Defaults to one derived from `maxMemory`, else 8. */
  batchSize?: number;
  /** Memory budget in bytes for activations in flight, used to derive `batchSize`. Defaults to none. */
  maxMemory?: number;
  /** Run only blocks [0, stopAtLayer) (exclusive, as TransformerLens). Defaults to the last captured block + 1. */
  stopAtLayer?: number;
  /** Stop after this many tokens (whole sequences). Defaults to the whole corpus. */
  maxTokens?: number;
  /** Take only windows with index % count === index (one of N independent runs). Defaults to all. */
  shard?: { index: number; count: number };
  /** Skip this many sequences of the (sharded) stream first: resuming. Defaults to 0. */
  skipSequences?: number;
  /** Batches never straddle a multiple of this many sequences (output shard files); each group is read ahead whole so its size is known before its first batch (`groupSequences`). Defaults to none. */
  groupSize?: number;
  /** With `groupSize`: groups (numbered from 0 in the sharded stream) for which this returns true are read and packed but not run or yielded, e.g. shard files already written. Defaults to none. */
  skipGroup?: (group: number) => boolean;
  /** Batches tokenized ahead of the forward. Defaults to 4. */
  queueCapacity?: number;
  /** Add the tokenizer's special tokens (BOS) per document. Defaults to true. */
  addSpecialTokens?: boolean;
  /** Called with the number of characters or ids read so far and the document just read, for progress. */
  onRead?: (units: number, doc: Document) => void;
  /** Called with the number of sequences read ahead so far (skipped ones included) and, once more with `ended`, when there are no more (the input or `maxTokens` is exhausted), for progress. */
  onPacked?: (sequences: number, ended: boolean) => void;
  /** Stops between batches; the iterator rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** One batch of extracted activations. */
export interface ExtractBatch<F extends Family = Family> {
  /** Position of the first sequence in this run's (sharded, resumed) stream. */
  sequenceStart: number;
  /** With `groupSize`: how many sequences the batch's group holds (less than groupSize only for the last). */
  groupSequences?: number;
  /** Global window indices of the sequences. */
  windows: number[];
  /** `[batch, seqLen]` token ids. */
  tokens: Int32Array;
  /** Real (unpadded) tokens per sequence. */
  lengths: Int32Array;
  /** Captured activations, `[batch, seqLen, ...]` per hook. */
  activations: ActivationCache<F>;
  /** With `featureCounts`: per SAE hook, how many of this batch's real tokens each feature fired on. */
  featureCounts?: Map<string, Uint32Array>;
}

interface PendingBatch {
  start: number;
  windows: Window[];
  group?: number;
}

/** Sequences per batch from a memory budget: captures (double-buffered) plus the forward's working set. */
export function deriveBatchSize<F extends Family>(model: Model<F>, hooks: readonly string[], seqLen: number, maxMemory: number): number {
  const c = model.config;
  let perSeq = 0;
  for (const h of hooks) perSeq += 2 * 4 * model.hookShape(h, 1, seqLen).reduce((a, b) => a * b, 1);
  perSeq += 4 * seqLen * (6 * c.dModel + 2 * c.dMlp + 2 * c.nHeads * c.dHead);
  return Math.max(1, Math.floor(maxMemory / perSeq));
}

/** Streams activations for a corpus; see {@link ExtractOptions}. */
export async function* extractBatches<F extends Family>(
  model: Model<F>,
  source: SourceSpec | AsyncIterable<Document>,
  opts: ExtractOptions<F>,
): AsyncGenerator<ExtractBatch<F>> {
  const seqLen = opts.seqLen;
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `seqLen must be a positive integer, got ${seqLen}`);
  if (model.config.positionalEmbedding === 'standard' && seqLen > model.config.nCtx)
    throw new InvalidInputError('ERR_INVALID_INPUT', `seqLen ${seqLen} exceeds the model's ${model.config.nCtx} learned positions`);
  const hooks = model.resolveHooks(opts.hooks);
  const counted = opts.featureCounts ? [...((opts.featureCounts === true ? undefined : opts.featureCounts.hooks) ?? model.saes.keys())] : [];
  if (opts.featureCounts && counted.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'featureCounts needs an attached SAE');
  if (hooks.length === 0 && counted.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'extract needs at least one hook');
  const lastLayer = Math.max(...[...hooks, ...counted].map((h) => (h.startsWith('blocks.') ? Number(h.split('.')[1]) : model.config.nLayers)));
  const stopAtLayer = opts.stopAtLayer ?? Math.min(model.config.nLayers, lastLayer + 1);
  const batchSize = opts.batchSize ?? (opts.maxMemory ? deriveBatchSize(model, hooks, seqLen, opts.maxMemory) : 8);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `batchSize must be a positive integer, got ${batchSize}`);
  const group = opts.groupSize ?? Infinity;
  if (opts.skipGroup && !Number.isFinite(group)) throw new InvalidInputError('ERR_INVALID_INPUT', 'skipGroup needs groupSize');
  const skip = opts.skipSequences ?? 0;
  const maxSequences = opts.maxTokens !== undefined ? Math.ceil(opts.maxTokens / seqLen) : Infinity;
  const tok = model.tokenizer;
  const padId = opts.padId ?? 0;

  // Stage 1 (JS thread, runs ahead): read, tokenize, pack, shard, skip, batch.
  const queue = new BoundedQueue<PendingBatch>(opts.queueCapacity ?? 4);
  const produce = async () => {
    let docs: AsyncIterable<Document>;
    if (Symbol.asyncIterator in source) docs = source as AsyncIterable<Document>;
    else docs = readDocuments(source as SourceSpec);
    let read = 0;
    const counted = (async function* () {
      for await (const d of docs) {
        read += d.text?.length ?? d.tokens?.length ?? 0;
        opts.onRead?.(read, d);
        yield d;
      }
    })();
    const needsTokenizer = !(source as SourceSpec).kind || (source as SourceSpec).kind !== 'tokens';
    if (needsTokenizer && !tok && !(Symbol.asyncIterator in source))
      throw new InvalidInputError('ERR_NO_TOKENIZER', `no tokenizer.json in ${model.dir}; give pre-tokenized input (--tokens)`);
    const encode = tok ? (t: string) => tok.encode(t, { addSpecialTokens: opts.addSpecialTokens ?? true }) : null;
    let windows: AsyncIterable<Window> = packWindows(counted, encode, { seqLen, pack: opts.pack ?? true, padLast: opts.padLast ?? false, padId });
    if (opts.shard) windows = shardFilter(windows, opts.shard);
    // Windows of one group (or one batch without groups) are collected, then cut into batches.
    const groupSize = Number.isFinite(group) ? group : batchSize;
    let n = 0;
    let start = skip;
    let held: Window[] = [];
    const flush = async (): Promise<boolean> => {
      for (let i = 0; i < held.length; i += batchSize) {
        const b: PendingBatch = { start: start + i, windows: held.slice(i, i + batchSize) };
        if (Number.isFinite(group)) b.group = held.length;
        await queue.push(b);
        if (queue.isClosed) return false;  // the consumer stopped early
      }
      start += held.length;
      held = [];
      return true;
    };
    for await (const w of windows) {
      if (n >= maxSequences) break;
      n++;
      opts.onPacked?.(n, false);
      if (n <= skip) continue;
      // Groups are flushed at their boundaries, so nothing is held when a skipped group starts.
      if (opts.skipGroup?.(Math.floor((n - 1) / groupSize))) {
        start = n;
        continue;
      }
      held.push(w);
      if ((start + held.length) % groupSize === 0 && !(await flush())) return;
    }
    opts.onPacked?.(n, true);
    await flush();
  };
  const producing = produce().then(
    () => queue.close(),
    (err: unknown) => queue.fail(err),
  );

  // Stage 2: forwards, the next one started before the current batch is handed out.
  const run = async (b: PendingBatch): Promise<ExtractBatch<F>> => {
    const B = b.windows.length;
    const tokens = new Int32Array(B * seqLen);
    b.windows.forEach((w, i) => tokens.set(w.tokens, i * seqLen));
    const lengths = Int32Array.from(b.windows, (w) => w.length);
    let saeFeatures: { hooks: readonly string[]; counts: true; rows: Uint8Array } | undefined;
    if (counted.length) {
      const rows = new Uint8Array(B * seqLen);
      lengths.forEach((n, i) => rows.fill(1, i * seqLen, i * seqLen + n));
      saeFeatures = { hooks: counted, counts: true, rows };
    }
    const { cache, featureCounts } = await model.forward({ tokens, batch: B, pos: seqLen, capture: hooks, logits: 'none', maxPositions: seqLen, stopAtLayer, ...(saeFeatures ? { saeFeatures } : {}) });
    return {
      sequenceStart: b.start,
      ...(b.group !== undefined ? { groupSequences: b.group } : {}),
      windows: b.windows.map((w) => w.index),
      tokens,
      lengths,
      activations: cache,
      ...(counted.length ? { featureCounts } : {}),
    };
  };
  let pending: Promise<ExtractBatch<F>> | undefined;
  try {
    const first = await queue.pull();
    pending = first ? run(first) : undefined;
    while (pending) {
      const done = await pending;
      opts.signal?.throwIfAborted();
      const next = await queue.pull();
      pending = next ? run(next) : undefined;
      yield done;
    }
  } finally {
    queue.close();
    pending?.catch(() => undefined);  // a forward still in flight when the consumer stopped
    await producing;
  }
}
