// `neurotap serve` over real HTTP on loopback (Node's fetch against a listening Fastify server):
// completions and chat completions equal Model.generate on the same prompt and interventions
// (which generate.test.ts checks against HF), streaming equals non-streaming, stop strings,
// logprobs, /v1/run (JSON and safetensors), /v1/features against Model.run, every error is a
// JSON 4xx/503 with its code and the server keeps serving, API keys, a full queue, a client that
// disconnects, metrics, and SIGTERM draining the CLI server.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, loadSae, readSafetensors, type Model } from '../src/index.js';
import { createServer } from '../src/serve/server.js';
import { fixtureDir, randomFloats, ROOT } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'neurotap-serve-'));
// The gpt2 fixture with a short chat template (its context is 64 positions).
const CHAT_DIR = join(tmp, 'gpt2-chat');
const TEMPLATE = "{% for m in messages %}{{ m.role[0] }}:{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}a:{% endif %}";

let model: Model;
let app: FastifyInstance;
let base: string;

async function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null, headers: r.headers };
}

async function sse(path: string, body: unknown): Promise<any[]> {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...(body as object), stream: true }) });
  expect(r.headers.get('content-type')).toContain('text/event-stream');
  const events = (await r.text()).split('\n\n').filter(Boolean);
  expect(events.at(-1)).toBe('data: [DONE]');
  return events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')));
}

beforeAll(async () => {
  symlinkSync(fixtureDir('gpt2'), join(tmp, 'gpt2'));
  const { mkdirSync } = await import('node:fs');
  mkdirSync(CHAT_DIR);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) symlinkSync(join(fixtureDir('gpt2'), f), join(CHAT_DIR, f));
  writeFileSync(join(CHAT_DIR, 'tokenizer_config.json'), JSON.stringify({ chat_template: TEMPLATE }));
  model = await loadModel(CHAT_DIR, { threads: 2 });
  await model.attachSae(await loadSae(join(ROOT, 'test', 'fixtures', 'sae', 'gpt2-jumprelu-flat')));
  app = createServer(model, { maxBatch: 4, modelId: 'fixture' });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await app.close();
  model.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

describe('neurotap serve', () => {
  it('health, models, 404', async () => {
    expect(await (await fetch(`${base}/health`)).json()).toMatchObject({ status: 'ok', model: 'fixture' });
    expect(await (await fetch(`${base}/v1/models`)).json()).toMatchObject({ object: 'list', data: [{ id: 'fixture', object: 'model' }] });
    const nf = await fetch(`${base}/v1/nothing`);
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as any).error.code).toBe('ERR_NOT_FOUND');
  });

  it('completions equal Model.generate, with and without steering; stream equals non-stream', async () => {
    const prompt = [5, 17, 3, 99, 41];
    const vec = Array.from(randomFloats(model.config.dModel, 3, 2));
    const hook = 'blocks.0.hook_resid_post';
    for (const steering of [undefined, [{ hook, vector: vec, scale: 1.5 }]]) {
      const want = await model.generate([prompt], { maxNewTokens: 10, ...(steering ? { hooks: { [hook]: edits.add(Float32Array.from(vec), { scale: 1.5 }) } } : {}) });
      const body = { prompt, max_tokens: 10, temperature: 0, ...(steering ? { neurotap: { steering } } : {}) };
      const r = await post('/v1/completions', body);
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      expect(r.json.choices[0].text).toBe(model.tokenizer!.decode(want.newTokens[0]!));
      expect(r.json.choices[0].finish_reason).toBe('length');
      expect(r.json.usage).toEqual({ prompt_tokens: 5, completion_tokens: 10, total_tokens: 15 });
      const events = await sse('/v1/completions', body);
      expect(events.map((e) => e.choices[0].text).join('')).toBe(r.json.choices[0].text);
      expect(events.at(-1).choices[0].finish_reason).toBe('length');
    }
    // neurotap.capture: the prompt forward's activations, as Model.run gives them.
    const c = await post('/v1/completions', { prompt, max_tokens: 2, temperature: 0, neurotap: { capture: ['blocks.1.hook_resid_post'] } });
    const run = await model.run([prompt], { capture: ['blocks.1.hook_resid_post'] });
    const act = c.json.neurotap.activations['blocks.1.hook_resid_post'];
    expect(act.shape).toEqual([1, 5, model.config.dModel]);
    expect(Float32Array.from(act.data)).toEqual(run.cache.get('blocks.1.hook_resid_post').data);
  });

  it('stop strings, logprobs, seeded sampling', async () => {
    const prompt = [9, 8, 7];
    const r = await post('/v1/completions', { prompt, max_tokens: 12, temperature: 0, logprobs: 2 });
    const text: string = r.json.choices[0].text;
    const lp = r.json.choices[0].logprobs;
    expect(lp.tokens.join('')).toBe(text);
    expect(lp.token_logprobs.every((x: number) => x <= 0)).toBe(true);
    expect(Object.keys(lp.top_logprobs[0])).toHaveLength(2);
    const stop = text.slice(3, 5);
    const s = await post('/v1/completions', { prompt, max_tokens: 12, temperature: 0, stop });
    expect(s.json.choices[0].text).toBe(text.slice(0, text.indexOf(stop)));
    expect(s.json.choices[0].finish_reason).toBe('stop');
    const streamed = await sse('/v1/completions', { prompt, max_tokens: 12, temperature: 0, stop: [stop] });
    expect(streamed.map((e) => e.choices[0].text).join('')).toBe(s.json.choices[0].text);
    const a = await post('/v1/completions', { prompt, max_tokens: 8, temperature: 0.9, top_p: 0.8, seed: 4 });
    const b = await post('/v1/completions', { prompt, max_tokens: 8, temperature: 0.9, top_p: 0.8, seed: 4 });
    const want = await model.generate([prompt], { maxNewTokens: 8, temperature: 0.9, topP: 0.8, seed: 4 });
    expect(a.json.choices[0].text).toBe(b.json.choices[0].text);
    expect(a.json.choices[0].text).toBe(model.tokenizer!.decode(want.newTokens[0]!));
  });

  it('chat completions through the chat template', async () => {
    const messages = [{ role: 'user', content: 'hi there' }];
    const ids = model.tokenize(`u:hi there\na:`, false)[0]!;
    const want = await model.generate([ids], { maxNewTokens: 6 });
    const r = await post('/v1/chat/completions', { messages, max_tokens: 6, temperature: 0 });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.choices[0].message).toEqual({ role: 'assistant', content: model.tokenizer!.decode(want.newTokens[0]!) });
    const events = await sse('/v1/chat/completions', { messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 1 });
    expect(events[0].choices[0].delta.role).toBe('assistant');
    expect(events.map((e) => e.choices[0].delta.content ?? '').join('')).toBe(r.json.choices[0].message.content);
  });

  it('/v1/run: captures and edits as JSON and as safetensors', async () => {
    const tokens = [[1, 2, 3, 4], [5, 6]];
    const hooks = { 'blocks.1.hook_resid_pre': edits.scale(0.5) };
    const want = await model.run(tokens, { capture: ['blocks.0.hook_resid_post'], hooks });
    const body = { tokens, capture: 'blocks.0.hook_resid_post', logits: 'last', neurotap: { edits: { 'blocks.1.hook_resid_pre': { op: 'scale', factor: 0.5 } } } };
    const r = await post('/v1/run', body);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const act = r.json.activations['blocks.0.hook_resid_post'];
    expect(act.shape).toEqual([2, 4, model.config.dModel]);
    expect(Float32Array.from(act.data)).toEqual(want.cache.get('blocks.0.hook_resid_post').data);
    const wantLast = await model.run(tokens, { hooks, returnLogits: 'last' });
    expect(Float32Array.from(r.json.logits.data)).toEqual(wantLast.logits!.data);
    const bin = await fetch(`${base}/v1/run`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/octet-stream' }, body: JSON.stringify(body) });
    expect(bin.headers.get('content-type')).toBe('application/octet-stream');
    const file = join(tmp, 'run.safetensors');
    writeFileSync(file, Buffer.from(await bin.arrayBuffer()));
    const st = readSafetensors(file);
    expect(st.get('blocks.0.hook_resid_post')!.data).toEqual(want.cache.get('blocks.0.hook_resid_post').data);
    expect(st.get('logits')!.shape).toEqual([2, model.config.dVocab]);
  });

  it('/v1/features equals Model.run saeFeatures', async () => {
    const tokens = [3, 1, 4, 1, 5, 9];
    const r = await post('/v1/features', { tokens, k: 3 });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const sae = [...model.saes.keys()][0]!;
    const want = (await model.run([tokens], { saeFeatures: { k: 3 }, returnLogits: false })).features.get(sae)!;
    expect(r.json.rows[0]).toHaveLength(6);
    r.json.rows[0].forEach((t: { token: number; features: { index: number; value: number }[] }, i: number) => {
      expect(t.token).toBe(tokens[i]);
      expect(t.features.map((f) => f.index)).toEqual(Array.from(want.indices.subarray(i * 3, i * 3 + 3)));
      expect(Float32Array.from(t.features.map((f) => f.value))).toEqual(want.values.subarray(i * 3, i * 3 + 3));
    });
    // Feature edits in a completion equal the same edits through generate.
    const prompt = [7, 7, 2];
    const featureHooksMap = (await import('../src/sae/features.js')).featureHooks(model.saes.get(sae)!, { clamp: new Map([[5, 3]]) });
    const g = await model.generate([prompt], { maxNewTokens: 5, hooks: featureHooksMap as never });
    const c = await post('/v1/completions', { prompt, max_tokens: 5, temperature: 0, neurotap: { features: [{ index: 5, op: 'clamp', value: 3 }] } });
    expect(c.json.choices[0].text).toBe(model.tokenizer!.decode(g.newTokens[0]!));
  });

  it('/v1/grad and /v1/attribute equal Model.backward and attributionPatching', async () => {
    // Backward passes run on a model without an attached SAE.
    const plain = await loadModel(fixtureDir('gpt2'), { threads: 2 });
    const server = createServer(plain);
    const url = await server.listen({ host: '127.0.0.1', port: 0 });
    const post = async (path: string, body: unknown) => {
      const r = await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, json: (await r.json()) as any };
    };
    const model = plain;
    try {
      const tokens = [[3, 9, 27, 81, 11]];
      const metric = { logitDiff: { correct: 5, wrong: 6 } };
      const hooks = { 'blocks.0.hook_resid_post': edits.scale(1.5) };
      const want = await model.backward(tokens, { metric, grads: ['blocks.*.hook_resid_pre'], hooks });
      const r = await post('/v1/grad', { tokens, metric, grads: 'blocks.*.hook_resid_pre', neurotap: { edits: { 'blocks.0.hook_resid_post': { op: 'scale', factor: 1.5 } } } });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      expect(r.json.metric).toBe(want.metric);
      expect(Object.keys(r.json.grads)).toEqual([...want.grads.keys()]);
      for (const [name, t] of want.grads) expect(Float32Array.from(r.json.grads[name].data)).toEqual(t.data);
      const lossGrad = await post('/v1/grad', { tokens, metric: 'loss', grads: ['hook_embed'] });
      expect(lossGrad.json.metric).toBe((await model.backward(tokens, { metric: 'loss', grads: ['hook_embed'] })).metric);

      const { attributionPatching } = await import('../src/attribution.js');
      const clean = [[3, 9, 27, 81]], corrupted = [[3, 9, 28, 81]];
      const ap = await attributionPatching(model, clean, corrupted, { metric: { logit: { token: 7 } }, hooks: ['blocks.*.hook_resid_post'] });
      const a = await post('/v1/attribute', { clean_tokens: clean, corrupted_tokens: corrupted, metric: { logit: { token: 7 } }, hooks: 'blocks.*.hook_resid_post' });
      expect(a.status, JSON.stringify(a.json)).toBe(200);
      expect([a.json.metric_clean, a.json.metric_corrupted]).toEqual([ap.metricClean, ap.metricCorrupted]);
      for (const [name, t] of ap.scores) expect(Float32Array.from(a.json.scores[name].data)).toEqual(t.data);
      const bad = await post('/v1/grad', { tokens, metric: { logit: { token: 7 }, logProb: { token: 1 } }, grads: 'hook_embed' });
      expect([bad.status, bad.json.error.code]).toEqual([400, 'ERR_INVALID_INPUT']);
    } finally {
      await server.close();
      plain.dispose();
    }
  });

  it('bad requests are JSON 4xx with their codes, and the server keeps serving', async () => {
    const cases: [unknown, number, string][] = [
      ['{"prompt": [1, 2', 400, 'ERR_INVALID_JSON'],
      [{ prompt: [1], max_tokens: 2, bogus: 1 }, 400, 'ERR_INVALID_INPUT'],
      [{ prompt: [1], max_tokens: 'many' }, 400, 'ERR_INVALID_INPUT'],
      [{ prompt: [1, 100000] }, 400, 'ERR_TOKEN_OUT_OF_RANGE'],
      [{ prompt: [1], max_tokens: 1000 }, 400, 'ERR_TOO_MANY_TOKENS'],
      [{ prompt: [1], neurotap: { steering: [{ hook: 'blocks.9.hook_resid_post', vector: [1] }] } }, 400, 'ERR_UNKNOWN_HOOK'],
      [{ prompt: [1], neurotap: { steering: [{ hook: 'blocks.0.hook_resid_post', vector: [1, 2, 3] }] } }, 400, 'ERR_INVALID_INPUT'],
      [{ prompt: [1], neurotap: { steering: [{ name: 'nope' }] } }, 400, 'ERR_UNKNOWN_VECTOR'],
      [{ prompt: [1], n: 2 }, 400, 'ERR_INVALID_INPUT'],
    ];
    for (const [body, status, code] of cases) {
      const r = await post('/v1/completions', body);
      expect([r.status, r.json.error.code], JSON.stringify(body)).toEqual([status, code]);
      expect(typeof r.json.error.message).toBe('string');
    }
    const big = await post('/v1/run', { tokens: Array.from({ length: 2000 }, () => Array(64).fill(1)) });
    expect([big.status, big.json.error.code]).toEqual([400, 'ERR_TOO_MANY_TOKENS']);
    const wrongType = await fetch(`${base}/v1/run`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
    expect(wrongType.status).toBe(415);
    expect((await post('/v1/completions', { prompt: [1, 2], max_tokens: 2, temperature: 0 })).status).toBe(200);
  });

  it('API keys, body limits, a full queue, a disconnecting client', async () => {
    const keyed = createServer(model, { apiKey: 'sekret', bodyLimit: 200, maxBatch: 1, maxQueue: 1 });
    const url = await keyed.listen({ host: '127.0.0.1', port: 0 });
    try {
      const call = (body: unknown, key?: string, signal?: AbortSignal) =>
        fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect((await call({ prompt: [1], max_tokens: 1 })).status).toBe(401);
      expect((await call({ prompt: [1], max_tokens: 1 }, 'wrong')).status).toBe(401);
      expect((await call({ prompt: [1], max_tokens: 1 }, 'sekret')).status).toBe(200);
      const huge = await call({ prompt: Array(100).fill(1), max_tokens: 1 }, 'sekret');
      expect([huge.status, ((await huge.json()) as any).error.code]).toEqual([413, 'ERR_BODY_TOO_LARGE']);
      // One row, one queue place: a third concurrent request is refused.
      const ac = new AbortController();
      const first = call({ prompt: [1], max_tokens: 60, stream: true }, 'sekret', ac.signal);
      const reader = (await first).body!.getReader();
      await reader.read(); // generating
      const second = call({ prompt: [2], max_tokens: 2 }, 'sekret');
      while (keyed.batcher.queued === 0) await new Promise((r) => setTimeout(r, 5));
      const third = await call({ prompt: [3], max_tokens: 2 }, 'sekret');
      expect([third.status, third.headers.get('retry-after'), ((await third.json()) as any).error.code]).toEqual([503, '1', 'ERR_QUEUE_FULL']);
      ac.abort(); // the streaming client goes away: its row is freed and the queued request runs
      await reader.cancel().catch(() => {});
      expect((await second).status).toBe(200);
      expect(keyed.batcher.active).toBe(0);
      const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer sekret' } })).text();
      expect(metrics).toMatch(/neurotap_requests_total\{route="\/v1\/completions",status="503"\} 1/);
      expect(metrics).toMatch(/neurotap_decode_batch_size_count \d+/);
    } finally {
      await keyed.close();
    }
  });
});

describe('neurotap serve (CLI)', () => {
  it('listens on loopback, answers, and drains in-flight requests on SIGTERM', async () => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'neurotap.js'), 'serve', '--model', join(tmp, 'gpt2'), '--port', '0', '--threads', '1', '--max-batch', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    // Twelve streamed requests, two rows: most still wait or run when SIGTERM arrives.
    const responses = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1, i + 2], max_tokens: 60, temperature: 0, stream: true, stream_options: { include_usage: true } }) }),
      ),
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    for (const r of responses) {
      expect(r.status).toBe(200);
      const events = (await r.text()).split('\n\n').filter(Boolean);
      expect(events.at(-1)).toBe('data: [DONE]');
      expect(JSON.parse(events.at(-2)!.slice(6)).usage.completion_tokens).toBe(60);
    }
    expect(await exited).toBe(0);
    expect(stderr).toContain('SIGTERM');
  });
});
