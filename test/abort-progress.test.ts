// AbortSignal on run() and loadModel(), and loadModel's onProgress: aborting stops the native
// work at its next check (a block, a tensor), the call rejects with the signal's reason, and the
// model stays usable; progress counts the checkpoint's tensor bytes.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { InvalidInputError, loadModel, writeSafetensors, type LoadProgress, type Model } from '../src/index.js';
import { fixtureDir } from './helpers.js';

/** Bytes of all tensors in a safetensors file, from its header (reference for progress). */
function tensorBytes(file: string): number {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets?: [number, number] }>;
  return Object.values(header).reduce((s, t) => s + (t.data_offsets ? t.data_offsets[1] - t.data_offsets[0] : 0), 0);
}

/**
 * A GPT-2 checkpoint of zeros, `layers` x `d` wide (about 48·layers·d² bytes): big enough that
 * reading it takes tens of milliseconds, so an abort right after the call lands mid-load.
 */
function bigGpt2(dir: string, layers: number, d: number): void {
  const vocab = 4096;
  const t = (...shape: number[]) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = { 'wte.weight': t(vocab, d), 'wpe.weight': t(64, d), 'ln_f.weight': t(d), 'ln_f.bias': t(d) };
  for (let L = 0; L < layers; L++) {
    const h = `h.${L}.`;
    Object.assign(tensors, {
      [`${h}ln_1.weight`]: t(d), [`${h}ln_1.bias`]: t(d), [`${h}ln_2.weight`]: t(d), [`${h}ln_2.bias`]: t(d),
      [`${h}attn.c_attn.weight`]: t(d, 3 * d), [`${h}attn.c_attn.bias`]: t(3 * d),
      [`${h}attn.c_proj.weight`]: t(d, d), [`${h}attn.c_proj.bias`]: t(d),
      [`${h}mlp.c_fc.weight`]: t(d, 4 * d), [`${h}mlp.c_fc.bias`]: t(4 * d),
      [`${h}mlp.c_proj.weight`]: t(4 * d, d), [`${h}mlp.c_proj.bias`]: t(d),
    });
  }
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const config = { architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', n_embd: d, n_head: 8, n_layer: layers, n_positions: 64, vocab_size: vocab, layer_norm_epsilon: 1e-5, activation_function: 'gelu_new', tie_word_embeddings: true };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
}

describe('run() with a signal', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
  });
  afterAll(() => model.dispose());
  const tokens = [[1, 2, 3, 4, 5]];

  it('rejects at once with the reason of an aborted signal', async () => {
    const reason = new Error('stop now');
    await expect(model.run(tokens, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('stops between blocks when aborted mid-run; later blocks never run', async () => {
    const ctrl = new AbortController();
    const seen: string[] = [];
    const last = `blocks.${model.config.nLayers - 1}.hook_resid_post`;
    const run = model.run(tokens, {
      signal: ctrl.signal,
      hooks: {
        'blocks.0.hook_resid_post': () => {
          seen.push('blocks.0');
          ctrl.abort();
        },
        [last]: () => {
          seen.push(last);
        },
      },
    });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual(['blocks.0']);
    // The model is usable, and a run with a signal that never fires is an ordinary run.
    const plain = await model.run(tokens);
    const withSignal = await model.run(tokens, { signal: new AbortController().signal });
    expect(withSignal.logits!.data).toEqual(plain.logits!.data);
  });

  it('refuses a signal that is not an AbortSignal', async () => {
    await expect(model.run(tokens, { signal: {} as AbortSignal })).rejects.toThrow(InvalidInputError);
  });
});

describe('loadModel() with a signal and onProgress', () => {
  const dir = fixtureDir('gpt2');

  it('reports progress up to the checkpoint tensor bytes, monotone, ending at the total', async () => {
    const seen: LoadProgress[] = [];
    const model = await loadModel(dir, { onProgress: (p) => seen.push(p) });
    model.dispose();
    const total = tensorBytes(join(dir, 'model.safetensors'));
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)).toEqual({ loadedBytes: total, totalBytes: total });
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.loadedBytes).toBeGreaterThanOrEqual(seen[i - 1]!.loadedBytes);
    expect(seen.every((p) => p.totalBytes === total)).toBe(true);
  });

  it('rejects with the reason of an aborted signal, before and during the load', async () => {
    await expect(loadModel(dir, { signal: AbortSignal.abort('early') })).rejects.toBe('early');
    const big = mkdtempSync(join(tmpdir(), 'neurotap-abort-'));
    try {
      bigGpt2(big, 8, 512);  // 100 MB
      for (let i = 0; i < 3; i++) {
        const ctrl = new AbortController();
        const seen: LoadProgress[] = [];
        const loading = loadModel(big, { signal: ctrl.signal, onProgress: (p) => seen.push(p) });
        ctrl.abort('mid-load');  // the worker is reading: it stops at its next tensor
        await expect(loading).rejects.toBe('mid-load');
        expect(seen.every((p) => p.loadedBytes < p.totalBytes)).toBe(true);  // never reported complete
      }
      const model = await loadModel(big);  // nothing left behind
      expect(model.config.nLayers).toBe(8);
      model.dispose();
    } finally {
      rmSync(big, { recursive: true, force: true });
    }
  });

  it('makes what onProgress throws the rejection', async () => {
    const boom = new Error('progress handler failed');
    await expect(
      loadModel(dir, {
        onProgress: () => {
          throw boom;
        },
      }),
    ).rejects.toBe(boom);
    await expect(loadModel(dir, { onProgress: 3 as unknown as () => void })).rejects.toThrow(/onProgress must be a function/);
  });
});
