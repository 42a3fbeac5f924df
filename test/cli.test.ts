// The CLI contract (README "CLI"), run as a subprocess through bin/neurotap.js. Output files
// are read back by our reader and by Python's `safetensors` (skipped, with a message, when
// python3 lacks safetensors/numpy).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, readSafetensors, type Model } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cli-'));

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function pythonHas(modules: string[]): boolean {
  const r = spawnSync('python3', ['-c', modules.map((m) => `import ${m}`).join('; ')]);
  return r.status === 0;
}

describe('neurotap CLI', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
  });
  afterAll(() => {
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('run --out writes logits and captures as float32 safetensors', async () => {
    const out = join(tmp, 'acts.safetensors');
    const r = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', '[[1,2,3],[4,5,6]]', '--capture', 'blocks.*.hook_resid_post', '--capture', 'blocks.0.attn.hook_pattern', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const file = readSafetensors(out);
    expect([...file.keys()].sort()).toEqual(['blocks.0.attn.hook_pattern', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_post', 'logits']);
    const direct = await model.run([[1, 2, 3], [4, 5, 6]], { capture: ['blocks.*.hook_resid_post', 'blocks.0.attn.hook_pattern'] });
    expect(file.get('logits')!.shape).toEqual([2, 3, model.config.dVocab]);
    expect(file.get('logits')!.dtype).toBe('F32');
    expect(Array.from(file.get('logits')!.data as Float32Array)).toEqual(Array.from(direct.logits!.data));
    expect(Array.from(file.get('blocks.1.hook_resid_post')!.data as Float32Array)).toEqual(Array.from(direct.cache.get('blocks.1.hook_resid_post').data));
    expect(file.get('blocks.0.attn.hook_pattern')!.shape).toEqual([2, model.config.nHeads, 3, 3]);
  });

  it('run --compute bf16 equals loadModel with compute bf16; --compute bf16 needs --dtype bf16', async () => {
    const out = join(tmp, 'bf16.safetensors');
    const tokens = [[3, 1, 4, 1, 5]];
    const r = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(tokens), '--dtype', 'bf16', '--compute', 'bf16', '--threads', '1', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const bf = await loadModel(fixtureDir('gpt2'), { dtype: 'bf16', compute: 'bf16', threads: 1 });
    const f32w = await loadModel(fixtureDir('gpt2'), { dtype: 'bf16', threads: 1 });
    try {
      const direct = (await bf.run(tokens)).logits!.data;
      const exact = (await f32w.run(tokens)).logits!.data;
      const got = readSafetensors(out).get('logits')!.data as Float32Array;
      expect(Array.from(got)).toEqual(Array.from(direct));
      expect(Array.from(got)).not.toEqual(Array.from(exact)); // the flag reached the engine
    } finally {
      bf.dispose();
      f32w.dispose();
    }
    const bad = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', '[1, 2]', '--compute', 'bf16']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/ERR_UNSUPPORTED_DTYPE.*compute 'bf16' needs bf16 weights/);
  });

  it('run --out is readable from Python with safetensors + numpy', (ctx) => {
    if (!pythonHas(['safetensors', 'numpy'])) {
      console.warn('skipping: python3 with safetensors and numpy is not available');
      ctx.skip();
    }
    const out = join(tmp, 'py.safetensors');
    expect(cli(['run', '--model', fixtureDir('gpt2'), '--tokens', '[7, 8, 9, 10]', '--capture', 'hook_embed', '--out', out]).code).toBe(0);
    const script = `
import json, sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
print(json.dumps({k: [list(v.shape), str(v.dtype), float(v.astype('float64').sum())] for k, v in t.items()}))`;
    const py = JSON.parse(execFileSync('python3', ['-c', script, out], { encoding: 'utf8' })) as Record<string, [number[], string, number]>;
    const ours = readSafetensors(out);
    expect(Object.keys(py).sort()).toEqual(['hook_embed', 'logits']);
    for (const [name, [shape, dtype, sum]] of Object.entries(py)) {
      expect(shape).toEqual(ours.get(name)!.shape);
      expect(dtype).toBe('float32');
      const mine = Array.from(ours.get(name)!.data as Float32Array).reduce((a, b) => a + b, 0);
      expect(Math.abs(sum - mine)).toBeLessThan(1e-6 * Math.max(1, Math.abs(sum)) * 100);
    }
  });

  it('run --tokens @FILE and --text print a readable summary', () => {
    const file = join(tmp, 'tokens.json');
    writeFileSync(file, '[[3, 1, 4, 1, 5]]');
    const a = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', `@${file}`, '--capture', 'ln_final.hook_scale']);
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/logits: \[1, 5, 384\]/);
    expect(a.stdout).toMatch(/ln_final\.hook_scale: \[1, 5, 1\]/);
    expect(a.stdout).toMatch(/top next tokens \[0\]/);
    const b = cli(['run', '--model', fixtureDir('gpt2'), '--text', 'The cat sat on the mat.']);
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(/top next tokens \[0\] "The cat sat on the mat\.": \d+ ".*" \(p=0\.\d{3}\)/);
  });

  it('tokenize prints the token ids as JSON', () => {
    const r = cli(['tokenize', '--model', fixtureDir('gpt2'), '--text', 'Hello there, world']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(model.tokenize('Hello there, world')[0]);
  });

  it('hooks lists every hook with its shape', () => {
    const r = cli(['hooks', '--model', fixtureDir('llama-gqa')]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    // hook_embed, ln_final x2 and unembed x2 (no pos_embed); 25 block hooks x 2 layers (no hook_attn_in with GQA)
    expect(lines.length).toBe(5 + 2 * 25);
    expect(r.stdout).toMatch(/^blocks\.0\.attn\.hook_k\s+\[batch, pos, 2, 16\]$/m);
    expect(r.stdout).toMatch(/^blocks\.0\.hook_k_input\s+\[batch, pos, 2, 64\]$/m);
    expect(r.stdout).toMatch(/^unembed\.hook_out\s+\[batch, pos, \d+\]$/m);
    expect(r.stdout).toMatch(/^blocks\.1\.attn\.hook_pattern\s+\[batch, 4, pos, key_pos\]$/m);
  });

  it('hooks lists the newer families\' own hooks (QK-norm, sandwich norms) and no resid_mid with a parallel residual', () => {
    const gemma = cli(['hooks', '--model', fixtureDir('gemma3-text')]);
    expect(gemma.code).toBe(0);
    expect(gemma.stdout).toMatch(/^blocks\.0\.attn\.q_norm\.hook_normalized\s+\[batch, pos, 4, 16\]$/m);
    expect(gemma.stdout).toMatch(/^blocks\.0\.attn\.k_norm\.hook_scale\s+\[batch, pos, 2, 1\]$/m);
    expect(gemma.stdout).toMatch(/^blocks\.3\.ln2_post\.hook_normalized\s+\[batch, pos, 64\]$/m);
    const pythia = cli(['hooks', '--model', fixtureDir('pythia-parallel')]);
    expect(pythia.code).toBe(0);
    expect(pythia.stdout).not.toMatch(/hook_resid_mid/);
    expect(pythia.stdout).toMatch(/^blocks\.1\.attn\.hook_rot_k\s+\[batch, pos, 4, 16\]$/m);
  });

  it('reports coded errors on stderr with a nonzero exit', () => {
    const bad = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', '[[1, 99999]]']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/error \[ERR_TOKEN_OUT_OF_RANGE\]/);
    const hook = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', '[[1]]', '--capture', 'blocks.0.hook_resid_prе']);
    expect(hook.code).toBe(1);
    expect(hook.stderr).toMatch(/ERR_UNKNOWN_HOOK.*did you mean 'blocks\.0\.hook_resid_pre'/);
    const usage = cli(['run', '--model', fixtureDir('gpt2')]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/exactly one of --tokens and --text/);
    const missing = cli(['hooks', '--model', join(tmp, 'nowhere')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/ERR_FILE_NOT_FOUND/);
  });
});
