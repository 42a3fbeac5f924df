// Child process of test/load-robustness.test.ts: runs each case of the JSON file named on the
// command line (one API call on a path) and prints one JSON line per case as soon as it
// settles: 'ok' or the error code, the message, the milliseconds and how much the call raised
// the peak RSS. A hang or an allocation blow-up stays in this process, which the parent kills.
import { readFileSync } from 'node:fs';

import {
  loadControlVector,
  loadModel,
  loadSae,
  loadSteeringSafetensors,
  readGguf,
  readNpz,
  readSafetensors,
} from '../src/index.js';

export type Op = 'loadModel' | 'runModel' | 'loadSae' | 'loadSteeringSafetensors' | 'loadControlVector' | 'readGguf' | 'readSafetensors' | 'readNpz';
export interface Case {
  name: string;
  op: Op;
  path: string;
}
export interface Outcome {
  name: string;
  code: string;
  message: string;
  ms: number;
  rssGrowthMiB: number;
}

async function call(op: Op, path: string): Promise<void> {
  switch (op) {
    case 'loadModel':
      (await loadModel(path, { threads: 1 })).dispose();
      return;
    case 'runModel': {
      const model = await loadModel(path, { threads: 1 });
      const { logits } = await model.run([[1, 2, 3]]);
      model.dispose();
      if (!logits || logits.data.length !== 3 * model.config.dVocab || !logits.data.every(Number.isFinite)) throw new Error('bad logits');
      return;
    }
    case 'loadSae':
      await loadSae(path);
      return;
    case 'loadSteeringSafetensors':
      loadSteeringSafetensors(path);
      return;
    case 'loadControlVector':
      loadControlVector(path);
      return;
    case 'readGguf':
      readGguf(path);
      return;
    case 'readSafetensors':
      readSafetensors(path);
      return;
    case 'readNpz':
      readNpz(path);
      return;
  }
}

const cases = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Case[];
for (const c of cases) {
  const before = process.resourceUsage().maxRSS;
  const t0 = performance.now();
  let code = 'ok';
  let message = '';
  try {
    await call(c.op, c.path);
  } catch (err) {
    code = String((err as { code?: unknown }).code ?? (err as Error).name);
    message = (err as Error).message;
  }
  const ms = performance.now() - t0;
  const outcome: Outcome = { name: c.name, code, message, ms, rssGrowthMiB: (process.resourceUsage().maxRSS - before) / 1024 };
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
}
