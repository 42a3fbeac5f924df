// Child process of test/bf16-compute.test.ts: loads a model with compute 'bf16' under the
// NEUROTAP_CPU cap its parent sets (read once per process) and prints its logits as JSON.
// Usage: node --import tsx test/bf16-compute-child.mts MODEL_DIR '[[ids...], ...]'
import { loadModel } from '../src/index.js';

const [dir, ids] = process.argv.slice(2) as [string, string];
const model = await loadModel(dir, { dtype: 'bf16', compute: 'bf16', threads: 2 });
const r = await model.run(JSON.parse(ids) as number[][], { capture: [] });
process.stdout.write(JSON.stringify({ compute: model.compute, logits: Array.from(r.logits!.data) }));
model.dispose();
