// Large logits blocks (native/api/run-buffers.cc): the block an earlier run released is reused by
// the next one without its first-touch page faults, and never shows that run's values.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, type Model } from '../src/index.js';
import { compare, fixtureDir } from './helpers.js';

describe('reused logits blocks', () => {
  let model: Model;
  // 400 x 64 positions x 384 ids: 39 MB of logits, past the 4 MiB from which blocks are reused and
  // the 32 MiB up to which glibc would recycle a freed block itself.
  const B = 400;
  const T = 64;
  let tokens: number[][];
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 2 });
    tokens = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 31 + t * 7) % model.config.dVocab));
  });
  afterAll(() => model.dispose());

  it("holds exactly the new run's logits after a run that wrote other values", async () => {
    const V = model.config.dVocab;
    const huge = new Float32Array(V).fill(1e6);
    // Copied into a caller's array, so the native block is released as soon as the run settles.
    await model.run(tokens, { hooks: { 'unembed.hook_out': edits.set(huge) }, logitsOutput: new Float32Array(B * T * V) });
    const reused = (await model.run(tokens)).logits!.data;
    // Reference: the same rows in runs too small to reuse a block.
    const ref = new Float32Array(B * T * V);
    for (let b = 0; b < B; b += 8) ref.set((await model.run(tokens.slice(b, b + 8))).logits!.data, b * T * V);
    const c = compare(reused, ref, 1e-5);
    expect(c.relError, c.firstMismatches.join('; ')).toBeLessThanOrEqual(1e-5);
    expect(Math.max(...reused.subarray(0, V))).toBeLessThan(1e5);
  });

  it.skipIf(process.platform !== 'linux')('faults in a reused block only where the kernel took pages back (Linux)', async () => {
    const out = new Float32Array(B * T * model.config.dVocab);
    // Warm-up: each of libuv's pool threads that runs a forward first faults in its own malloc
    // arena for the activations, whichever run it serves; that is not the logits block.
    for (let i = 0; i < 4; i++) await model.run(tokens, { logitsOutput: out });
    let faults = Infinity;
    for (let i = 0; i < 3; i++) {
      const before = process.resourceUsage().minorPageFault;
      await model.run(tokens, { logitsOutput: out });
      faults = Math.min(faults, process.resourceUsage().minorPageFault - before);
    }
    // A fresh block would fault once per 4 KiB page: 9,600 times, in every run.
    expect(faults).toBeLessThan(out.byteLength / 4096 / 4);
  });
});
