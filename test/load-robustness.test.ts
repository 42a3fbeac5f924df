// Hostile model folders: config values far past any real model, or disagreeing with the
// checkpoint, fail in well under a second without a large allocation; a FIFO, directory, socket
// or device in place of any file the loaders read is refused with a coded error instead of
// hanging. Cases run in child processes (test/load-child.ts) under a time limit and, on Linux, a
// 4 GiB address-space limit, so a regression fails the test rather than the machine.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { fixtureDir, ROOT } from './helpers.js';
import type { Case, Op, Outcome } from './load-child.js';

const tmp = mkdtempSync(join(tmpdir(), 'neurotap-load-'));
const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(tmp, { recursive: true, force: true });
});

let dirs = 0;
/** A fresh folder holding copies of `files` from `src`. */
function copyOf(src: string, files: string[]): string {
  const dir = join(tmp, `d${dirs++}`);
  mkdirSync(dir);
  for (const f of files) copyFileSync(join(src, f), join(dir, f));
  return dir;
}

/** Runs `cases` in order in one child; a case missing from the result did not finish within `timeoutMs`. */
async function runChild(cases: Case[], timeoutMs: number): Promise<{ outcomes: Map<string, Outcome>; stderr: string }> {
  const file = join(tmp, `cases${dirs++}.json`);
  writeFileSync(file, JSON.stringify(cases));
  const wasmFlag = process.allowedNodeEnvironmentFlags.has('--disable-wasm-trap-handler') ? ['--disable-wasm-trap-handler'] : [];
  const node = [process.execPath, ...wasmFlag, '--import', 'tsx', join(ROOT, 'test', 'load-child.ts'), file];
  // Without the wasm trap handler (which reserves ~10 GiB of address space), Node runs in 4 GiB.
  const argv = process.platform === 'linux' && wasmFlag.length ? ['sh', '-c', 'ulimit -v 4194304 && exec "$@"', 'sh', ...node] : node;
  const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await new Promise((done) => child.on('close', done));
  clearTimeout(timer);
  const outcomes = new Map<string, Outcome>();
  for (const line of stdout.split('\n').filter(Boolean)) {
    const o = JSON.parse(line) as Outcome;
    outcomes.set(o.name, o);
  }
  return { outcomes, stderr };
}

function outcomeOf(run: { outcomes: Map<string, Outcome>; stderr: string }, name: string, timeoutMs: number): Outcome {
  const o = run.outcomes.get(name);
  expect(o, `'${name}' did not finish within ${timeoutMs} ms (hung or killed); child stderr:\n${run.stderr.slice(-2000)}`).toBeDefined();
  return o!;
}

describe('config values past any real model, or disagreeing with the checkpoint', () => {
  type Edit = [fixture: string, key: string, value: unknown, code: string, message: RegExp];
  const big = 2 ** 30;
  const cases: Edit[] = [
    ['gpt2', 'n_layer', 1e8, 'ERR_UNSUPPORTED_CONFIG', /'n_layer' is 100000000, more than the 1024/],
    ['gpt2', 'n_layer', 1000, 'ERR_TENSOR_MISSING', /'n_layer' is 1000 but the checkpoint .* has 2 layers/],
    ['gpt2', 'n_layer', -1, 'ERR_CONFIG_INVALID', /'n_layer' must be a positive integer/],
    ['gpt2', 'n_layer', 0, 'ERR_CONFIG_INVALID', /'n_layer' must be a positive integer/],
    ['gpt2', 'n_layer', 2.5, 'ERR_CONFIG_INVALID', /'n_layer' must be a positive integer/],
    ['gpt2', 'n_layer', '2', 'ERR_CONFIG_INVALID', /'n_layer' must be a positive integer/],
    ['gpt2', 'n_layer', 1e20, 'ERR_CONFIG_INVALID', /'n_layer' must be a positive integer/],
    ['gpt2', 'n_embd', big, 'ERR_UNSUPPORTED_CONFIG', /'n_embd'/],
    ['gpt2', 'n_head', 2 ** 20, 'ERR_UNSUPPORTED_CONFIG', /'n_head'/],
    ['gpt2', 'n_inner', big, 'ERR_UNSUPPORTED_CONFIG', /'n_inner'/],
    ['gpt2', 'n_inner', 2 ** 20, 'ERR_TENSOR_SHAPE', /c_fc/],
    ['gpt2', 'vocab_size', big, 'ERR_UNSUPPORTED_CONFIG', /'vocab_size'/],
    ['gpt2', 'vocab_size', 2 ** 24, 'ERR_TENSOR_SHAPE', /wte\.weight/],
    ['gpt2', 'n_positions', big, 'ERR_UNSUPPORTED_CONFIG', /'n_positions'/],
    ['gpt2', 'n_positions', 1e6, 'ERR_TENSOR_SHAPE', /wpe\.weight/],
    ['llama-gqa', 'num_hidden_layers', 1e8, 'ERR_UNSUPPORTED_CONFIG', /'num_hidden_layers'/],
    ['llama-gqa', 'num_hidden_layers', 3, 'ERR_TENSOR_MISSING', /has 2 layers/],
    ['llama-gqa', 'head_dim', big, 'ERR_UNSUPPORTED_CONFIG', /'head_dim' is 1073741824, more than the 4096/],
    ['llama-gqa', 'head_dim', 4096, 'ERR_TENSOR_SHAPE', /self_attn/],
    ['llama-gqa', 'head_dim', 0, 'ERR_CONFIG_INVALID', /'head_dim'/],
    ['llama-gqa', 'hidden_size', big, 'ERR_UNSUPPORTED_CONFIG', /'hidden_size'/],
    ['llama-gqa', 'hidden_size', 8192, 'ERR_TENSOR_SHAPE', /embed_tokens/],
    ['llama-gqa', 'hidden_size', -64, 'ERR_CONFIG_INVALID', /'hidden_size'/],
    ['llama-gqa', 'intermediate_size', big, 'ERR_UNSUPPORTED_CONFIG', /'intermediate_size'/],
    ['llama-gqa', 'intermediate_size', 2 ** 20, 'ERR_TENSOR_SHAPE', /mlp/],
    ['llama-gqa', 'intermediate_size', 96.5, 'ERR_CONFIG_INVALID', /'intermediate_size'/],
    ['llama-gqa', 'vocab_size', big, 'ERR_UNSUPPORTED_CONFIG', /'vocab_size'/],
    ['llama-gqa', 'vocab_size', 2 ** 24, 'ERR_TENSOR_SHAPE', /embed_tokens/],
    ['llama-gqa', 'vocab_size', 0, 'ERR_CONFIG_INVALID', /'vocab_size'/],
    ['llama-gqa', 'num_attention_heads', 2 ** 20, 'ERR_UNSUPPORTED_CONFIG', /'num_attention_heads'/],
    ['llama-gqa', 'num_key_value_heads', 2 ** 20, 'ERR_UNSUPPORTED_CONFIG', /'num_key_value_heads'/],
    ['llama-gqa', 'max_position_embeddings', big, 'ERR_UNSUPPORTED_CONFIG', /'max_position_embeddings'/],
    ['pythia-serial', 'num_hidden_layers', 1e8, 'ERR_UNSUPPORTED_CONFIG', /'num_hidden_layers'/],
    ['pythia-serial', 'intermediate_size', 2 ** 20, 'ERR_TENSOR_SHAPE', /dense_h_to_4h/],
  ];
  const timeoutMs = 60_000;
  const named = cases.map(([fixture, key, value, code, message]) => ({ name: `${fixture} ${key}: ${JSON.stringify(value)}`, fixture, key, value, code, message }));
  let run: Promise<{ outcomes: Map<string, Outcome>; stderr: string }> | undefined;
  const results = () => {
    run ??= runChild(
      [
        { name: 'warm-up', op: 'runModel' as Op, path: fixtureDir('gpt2') },
        ...named.map((c) => {
          const src = fixtureDir(c.fixture);
          const dir = copyOf(src, ['model.safetensors']);
          const config = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
          config[c.key] = c.value;
          writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
          return { name: c.name, op: 'loadModel' as Op, path: dir };
        }),
        { name: 'afterwards', op: 'runModel' as Op, path: fixtureDir('llama-gqa') },
      ],
      timeoutMs,
    );
    return run;
  };

  for (const c of named) {
    it(`${c.name} -> ${c.code}, in under a second, without a large allocation`, { timeout: 120_000 }, async () => {
      const o = outcomeOf(await results(), c.name, timeoutMs);
      expect(o.code, o.message).toBe(c.code);
      expect(o.message).toMatch(c.message);
      expect(o.ms).toBeLessThan(1000);
      expect(o.rssGrowthMiB, `peak RSS grew by ${o.rssGrowthMiB.toFixed(1)} MiB`).toBeLessThan(64);
    });
  }

  it('a model still loads and runs afterwards', { timeout: 120_000 }, async () => {
    const r = await results();
    expect(outcomeOf(r, 'warm-up', timeoutMs).code).toBe('ok');
    expect(outcomeOf(r, 'afterwards', timeoutMs)).toMatchObject({ code: 'ok', message: '' });
  });
});

describe('a config with fewer layers than its checkpoint', () => {
  it("runs the checkpoint's first layers, as HF transformers loads it", async () => {
    const { loadModel } = await import('../src/index.js');
    const dir = copyOf(fixtureDir('gpt2'), ['model.safetensors', 'tokenizer.json']);
    const cfg = JSON.parse(readFileSync(join(fixtureDir('gpt2'), 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, n_layer: 1 }));
    const full = await loadModel(fixtureDir('gpt2'), { threads: 2 }), truncated = await loadModel(dir, { threads: 2 });
    try {
      expect(truncated.config.nLayers).toBe(1);
      const tokens = [[3, 1, 4, 1, 5]];
      const a = await full.run(tokens, { capture: ['blocks.0.hook_resid_post'], returnLogits: false });
      const b = await truncated.run(tokens, { capture: ['blocks.0.hook_resid_post'] });
      expect(Array.from(b.cache.get('blocks.0.hook_resid_post').data)).toEqual(Array.from(a.cache.get('blocks.0.hook_resid_post').data));
      expect(b.logits!.shape).toEqual([1, 5, full.config.dVocab]);
    } finally {
      full.dispose();
      truncated.dispose();
    }
  });
});

type Kind = 'fifo' | 'directory' | 'socket' | 'device';

/** Replaces `dir/name` with a FIFO, a directory, a listening Unix socket or a link to a device; returns `dir`. */
async function replaceWith(dir: string, name: string, kind: Kind): Promise<string> {
  const path = join(dir, name);
  rmSync(path, { force: true });
  if (kind === 'fifo') execFileSync('mkfifo', [path]);
  else if (kind === 'directory') mkdirSync(path);
  else if (kind === 'device') symlinkSync('/dev/zero', path);
  else {
    const server = createServer();
    servers.push(server);
    await new Promise<void>((done) => server.listen(path, done));
  }
  return dir;
}

/** A FIFO named `name` in a fresh folder. */
async function fifo(name: string): Promise<string> {
  return join(await replaceWith(copyOf(tmp, []), name, 'fifo'), name);
}

/** `fn` over `items`, at most `limit` at a time. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return out;
}

const hasMkfifo = process.platform !== 'win32' && spawnSync('mkfifo', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasMkfifo) console.warn('skipping the non-regular file tests: no mkfifo on this system');

describe.skipIf(!hasMkfifo)('a FIFO or other non-regular file in place of a file the loaders read', () => {
  const GPT2 = fixtureDir('gpt2');
  const SAE = join(ROOT, 'test', 'fixtures', 'sae', 'gpt2-standard-v6');
  const NPZ_SAE = join(ROOT, 'test', 'fixtures', 'sae', 'llama-gemmascope');
  const GGUF = join(ROOT, 'test', 'fixtures', 'steering', 'control-vector.gguf');
  const gpt2 = () => copyOf(GPT2, ['config.json', 'model.safetensors', 'tokenizer.json']);
  const sharded = () => {
    const src = fixtureDir('llama3-mqa-sharded-f16');
    return copyOf(src, ['config.json', 'model.safetensors.index.json', ...[1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`)]);
  };
  const sae = () => copyOf(SAE, ['cfg.json', 'sae_weights.safetensors']);
  const runGpt2: [Op, string] = ['runModel', GPT2];
  const timeoutMs = 30_000;

  // What is refused, how to make it (the path passed to `op`), the call that must still work in
  // the same process afterwards, and what the message says.
  const cases: { what: string; op: Op; make: () => Promise<string>; after: [Op, string]; message: RegExp }[] = [
    { what: 'config.json as a FIFO', op: 'loadModel', make: () => replaceWith(gpt2(), 'config.json', 'fifo'), after: runGpt2, message: /config\.json: a FIFO, not a regular file/ },
    { what: 'config.json as a directory', op: 'loadModel', make: () => replaceWith(gpt2(), 'config.json', 'directory'), after: runGpt2, message: /config\.json: a directory, not a regular file/ },
    { what: 'config.json as a Unix socket', op: 'loadModel', make: () => replaceWith(gpt2(), 'config.json', 'socket'), after: runGpt2, message: /config\.json/ },
    { what: 'model.safetensors as a FIFO', op: 'loadModel', make: () => replaceWith(gpt2(), 'model.safetensors', 'fifo'), after: runGpt2, message: /model\.safetensors: a FIFO, not a regular file/ },
    { what: 'model.safetensors as a device', op: 'loadModel', make: () => replaceWith(gpt2(), 'model.safetensors', 'device'), after: runGpt2, message: /model\.safetensors: a device, not a regular file/ },
    { what: 'the shard index as a FIFO', op: 'loadModel', make: () => replaceWith(sharded(), 'model.safetensors.index.json', 'fifo'), after: runGpt2, message: /index\.json: a FIFO, not a regular file/ },
    { what: 'a shard as a FIFO', op: 'loadModel', make: () => replaceWith(sharded(), 'model-00002-of-00003.safetensors', 'fifo'), after: runGpt2, message: /00002-of-00003\.safetensors: a FIFO, not a regular file/ },
    { what: 'tokenizer.json as a FIFO', op: 'loadModel', make: () => replaceWith(gpt2(), 'tokenizer.json', 'fifo'), after: runGpt2, message: /tokenizer\.json: a FIFO, not a regular file/ },
    { what: 'tokenizer.json as a directory', op: 'loadModel', make: () => replaceWith(gpt2(), 'tokenizer.json', 'directory'), after: runGpt2, message: /tokenizer\.json: a directory, not a regular file/ },
    { what: 'tokenizer_config.json as a FIFO', op: 'loadModel', make: () => replaceWith(gpt2(), 'tokenizer_config.json', 'fifo'), after: runGpt2, message: /tokenizer_config\.json: a FIFO, not a regular file/ },
    { what: 'an SAE cfg.json as a FIFO', op: 'loadSae', make: () => replaceWith(sae(), 'cfg.json', 'fifo'), after: ['loadSae', SAE], message: /cfg\.json: a FIFO, not a regular file/ },
    { what: 'sae_weights.safetensors as a FIFO', op: 'loadSae', make: () => replaceWith(sae(), 'sae_weights.safetensors', 'fifo'), after: ['loadSae', SAE], message: /sae_weights\.safetensors: a FIFO, not a regular file/ },
    { what: 'params.npz as a FIFO', op: 'loadSae', make: () => replaceWith(copyOf(NPZ_SAE, []), 'params.npz', 'fifo'), after: ['loadSae', NPZ_SAE], message: /params\.npz: a FIFO, not a regular file/ },
    { what: 'a steering safetensors file as a FIFO', op: 'loadSteeringSafetensors', make: () => fifo('steer.safetensors'), after: ['loadControlVector', GGUF], message: /steer\.safetensors: a FIFO, not a regular file/ },
    { what: 'a control vector (GGUF) as a FIFO', op: 'loadControlVector', make: () => fifo('control.gguf'), after: ['loadControlVector', GGUF], message: /control\.gguf: a FIFO, not a regular file/ },
  ];

  // Each case in its own child, since a hang blocks the whole process; four at a time.
  let runs: Promise<{ outcomes: Map<string, Outcome>; stderr: string }[]> | undefined;
  const results = () =>
    (runs ??= mapLimit(cases, 4, async (c) =>
      runChild([{ name: c.what, op: c.op, path: await c.make() }, { name: 'afterwards', op: c.after[0], path: c.after[1] }], timeoutMs),
    ));

  cases.forEach((c, i) => {
    it(`${c.what}: ERR_FILE_READ at once, and the loader still works afterwards`, { timeout: 120_000 }, async () => {
      const r = (await results())[i]!;
      const o = outcomeOf(r, c.what, timeoutMs);
      expect(o.code, o.message).toBe('ERR_FILE_READ');
      expect(o.message).toMatch(c.message);
      expect(o.ms).toBeLessThan(1000);
      expect(outcomeOf(r, 'afterwards', timeoutMs)).toMatchObject({ code: 'ok', message: '' });
    });
  });
});
