// Load test of `neurotap serve` on loopback with autocannon: N concurrent clients for D seconds
// sending greedy completions (a fixed prompt length and max_tokens, no stop, so every answer is
// exactly max_tokens tokens), half of them steered, against the same requests sent one at a
// time; and all-steered against all-unsteered at full concurrency (the cost of steering:
// --pairs alternating pairs of --pair-duration seconds, the median of the per-pair ratios).
// Reports tokens/s (the server's count of tokens generated during the phase, requests still in
// flight at its end included), p50/p99 latency, errors, timeouts and non-2xx answers, with the
// load average around each phase. The server runs as a child process (`neurotap serve`).
//
//   npx tsx bench/serve-load.ts [--model test/fixtures/models/gpt2] [--connections 64] [--duration 30]
//       [--prompt 16] [--max-tokens 32] [--max-batch 16] [--threads 2] [--pairs 3] [--pair-duration 10]
//       [--named]   (steered requests name a vector the server loaded with --vector, instead of sending it)
//       [--zero]    (a zero vector: the same steering machinery with the unsteered outputs, a control)
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import autocannon from 'autocannon';

import { saveSteeringSafetensors } from '../src/steering/vectors.js';

const ROOT = join(import.meta.dirname, '..');
const { values: o } = parseArgs({
  options: {
    model: { type: 'string', default: join(ROOT, 'test', 'fixtures', 'models', 'gpt2') },
    connections: { type: 'string', default: '64' },
    duration: { type: 'string', default: '30' },
    prompt: { type: 'string', default: '16' },
    'max-tokens': { type: 'string', default: '32' },
    'max-batch': { type: 'string', default: '16' },
    threads: { type: 'string', default: '2' },
    'steer-hook': { type: 'string' },
    pairs: { type: 'string', default: '3' },
    named: { type: 'boolean', default: false },
    zero: { type: 'boolean', default: false },
    'pair-duration': { type: 'string', default: '10' },
  },
});
const connections = Number(o.connections), duration = Number(o.duration), promptLen = Number(o.prompt), maxTokens = Number(o['max-tokens']);

const config = JSON.parse(readFileSync(join(o.model!, 'config.json'), 'utf8')) as Record<string, number>;
const vocab = config.vocab_size!, dModel = (config.n_embd ?? config.hidden_size)!, layers = (config.n_layer ?? config.num_hidden_layers)!;
const steerHook = o['steer-hook'] ?? `blocks.${Math.floor(layers / 2)}.hook_resid_post`;
const vector = Array.from({ length: dModel }, (_, i) => (o.zero ? 0 : Math.sin(i * 1.7) * 0.5));
const vectorFile = join(mkdtempSync(join(tmpdir(), 'serve-load-')), 'steer.safetensors');
saveSteeringSafetensors(vectorFile, { directions: new Map([[steerHook, Float32Array.from(vector)]]), metadata: {} });
const child = spawn(process.execPath, [join(ROOT, 'bin', 'neurotap.js'), 'serve', '--model', o.model!, '--port', '0', '--threads', o.threads!, '--max-batch', o['max-batch']!, '--max-queue', '100000', '--vector', `steer=${vectorFile}`], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const url = await new Promise<string>((resolve, reject) => {
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
    const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(out);
    if (m) resolve(m[1]!);
  });
  child.on('exit', (code) => reject(new Error(`neurotap serve exited with ${code}`)));
});
const info = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };

function body(i: number, steered: boolean): string {
  const prompt = Array.from({ length: promptLen }, (_, j) => (i * 7919 + j * 104729) % vocab);
  const steering = o.named ? { name: 'steer', scale: 2 } : { hook: steerHook, vector, scale: 2 };
  return JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ...(steered ? { neurotap: { steering: [steering] } } : {}) });
}

interface Phase { name: string; tokensPerS: number; meanBatch: number; requests: number; p50: number; p99: number; errors: number; timeouts: number; non2xx: number; load: [number, number] }

/** The server's counters: tokens generated, and the decode steps' summed batch sizes and count. */
async function counters(): Promise<{ tokens: number; rows: number; steps: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { tokens: get('neurotap_generated_tokens_total'), rows: get('neurotap_decode_batch_size_sum'), steps: get('neurotap_decode_batch_size_count') };
}

async function phase(name: string, conns: number, steer: (i: number) => boolean, seconds = duration): Promise<Phase> {
  let n = 0;
  const load0 = loadavg()[0]!;
  const c0 = await counters();
  const r = await autocannon({
    url: `${url}/v1/completions`,
    connections: conns,
    duration: seconds,
    timeout: 600,
    requests: [{ method: 'POST', headers: { 'content-type': 'application/json' }, setupRequest: (req) => ({ ...req, body: body(n, steer(n++)) }) }],
  });
  const ok = r['2xx'];
  // autocannon stops sending at the end and waits for what is in flight; the phase's tokens are those generated meanwhile.
  const c1 = await counters();
  const p: Phase = { name, tokensPerS: (c1.tokens - c0.tokens) / r.duration, meanBatch: (c1.rows - c0.rows) / Math.max(1, c1.steps - c0.steps), requests: ok, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, timeouts: r.timeouts, non2xx: r.non2xx, load: [load0, loadavg()[0]!] };
  console.log(`${name}: ${ok} answers, ${p.tokensPerS.toFixed(1)} tok/s, mean decode batch ${p.meanBatch.toFixed(1)}, p50 ${p.p50} ms, p99 ${p.p99} ms, errors ${p.errors}, timeouts ${p.timeouts}, non-2xx ${p.non2xx}; load ${p.load[0].toFixed(2)} -> ${p.load[1].toFixed(2)}`);
  return p;
}

console.log(`${cpus()[0]?.model}; model ${info.data[0]!.id} (${layers} layers, d_model ${dModel}); prompt ${promptLen}, max_tokens ${maxTokens}, greedy; steering at ${steerHook} (${o.zero ? 'zero ' : ''}${o.named ? 'a named vector' : 'the vector sent inline'}); ${duration} s per phase`);
const one = await phase('one at a time, half steered', 1, (i) => i % 2 === 1);
const mixed = await phase(`${connections} clients, half steered`, connections, (i) => i % 2 === 1);
const pairs: [Phase, Phase][] = [];
for (let i = 0; i < Number(o.pairs); i++) {
  const seconds = Number(o['pair-duration']);
  // Alternate which goes first, so a drift in the machine's speed does not favour one.
  const a = await phase(`${connections} clients, ${i % 2 ? 'all' : 'none'} steered (pair ${i + 1})`, connections, () => i % 2 === 1, seconds);
  const b = await phase(`${connections} clients, ${i % 2 ? 'none' : 'all'} steered (pair ${i + 1})`, connections, () => i % 2 === 0, seconds);
  pairs.push(i % 2 ? [b, a] : [a, b]);
}
const costs = pairs.map(([none, all]) => 1 - all.tokensPerS / none.tokensPerS).sort((x, y) => x - y);
console.log(`batching speed-up (mixed / one at a time): ${(mixed.tokensPerS / one.tokensPerS).toFixed(2)}x`);
console.log(`cost of steering (1 - all steered / none steered), median of ${costs.length} pairs: ${(costs[costs.length >> 1]! * 100).toFixed(1)}% (pairs: ${costs.map((c) => (c * 100).toFixed(1)).join(', ')}%)`);
console.log(JSON.stringify({ bench: 'serve-load', cpu: cpus()[0]?.model, model: o.model, connections, duration, prompt: promptLen, maxTokens, phases: [one, mixed, ...pairs.flat()], steeringCost: costs }));
child.kill('SIGTERM');
await new Promise((r) => child.on('exit', r));
