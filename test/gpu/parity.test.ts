// CUDA parity: the CUDA backend against the CPU backend and HF transformers references, for
// every fixture model (f32 logits and every hook; bf16/f16 logits), native edits, JS hooks and
// greedy generation. The cases and their tolerances are in ./parity-cases.ts. Where
// probeDevice('cuda') says there is no usable CUDA backend (no libneurotap_cuda.so, driver or
// GPU: the normal case off the GPU machine) the file prints the reason and skips, unless
// NEUROTAP_BACKEND_REQUIRED=1 (npm run test:cuda-emu-parity, against the CPU emulation of CUDA).
// On the GPU machine the device harness (bench/gpu/run.sh) runs the same cases with plain node.
import { afterAll, describe, it } from 'vitest';

import { buildCases, cudaStatus, disposeAll, SkipCase } from './parity-cases.js';

const status = cudaStatus();

if (!status.available && process.env.NEUROTAP_BACKEND_REQUIRED === '1') {
  describe('CUDA parity', () => {
    it('needs a CUDA backend (NEUROTAP_BACKEND_REQUIRED=1)', () => {
      throw new Error(`no usable CUDA backend: ${status.reason}`);
    });
  });
} else if (!status.available) {
  describe('CUDA parity', () => {
    it('skips: no usable CUDA backend here', (ctx) => {
      console.warn(`test/gpu/parity.test.ts: skipping the CUDA parity tests: ${status.reason}`);
      ctx.skip(status.reason);
    });
  });
} else {
  describe(`CUDA parity on ${status.device}`, () => {
    afterAll(disposeAll);
    for (const c of buildCases()) {
      it(c.name, async (ctx) => {
        try {
          const info = await c.run();
          if (info) console.log(`${c.name}: ${info}`);
        } catch (err) {
          if (err instanceof SkipCase) {
            console.warn(`${c.name}: skipped: ${err.message}`);
            ctx.skip(err.message);
          }
          throw err;
        }
      }, 300_000);
    }
  });
}
