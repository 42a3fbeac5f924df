// The CLI's SAE flags (README "SAEs"), run as a subprocess through bin/neurotap.js on the
// committed SAE fixtures: `run --sae` captures the SAE's hooks and its feature edits give the
// reference logits of test/fixtures/generate_sae.py; `generate --sae` equals the API.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { featureHooks, loadModel, loadSae, readSafetensors } from '../src/index.js';
import { compare, fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
// test/sae-fixtures.test.ts's tolerances (about twice the worst float32 error seen): logits, hook_sae_error.
const TOL_LOGITS = 1.5e-6, TOL_ERROR = 1.3e-6;
const SAE = join(ROOT, 'test', 'fixtures', 'sae');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-sae-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const ref = readSafetensors(join(SAE, 'reference.safetensors'));
const f32 = (name: string) => ref.get(name)!.data as Float32Array;
const i32 = (name: string) => Array.from(ref.get(name)!.data as Int32Array);
function rows(name: string): number[][] {
  const t = ref.get(`${name}.input_ids`)!;
  const ids = i32(`${name}.input_ids`), p = t.shape[1]!;
  return Array.from({ length: t.shape[0]! }, (_, i) => ids.slice(i * p, (i + 1) * p));
}

describe('neurotap CLI with --sae', () => {
  it('run --sae --sae-error-term --feature-clamp captures acts_post and gives the reference clamp logits', () => {
    const name = 'gpt2-standard-v6', hook = 'blocks.0.hook_resid_post';
    const out = join(tmp, 'clamp.safetensors');
    const i = i32(`${name}.clamp_index`)[0]!, v = f32(`${name}.clamp_value`)[0]!;
    const r = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(rows(name)), '--sae', join(SAE, name), '--sae-error-term',
      '--feature-clamp', `${i}=${v}`, '--capture', `${hook}.hook_sae_acts_post`, '--capture', `${hook}.hook_sae_error`, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const file = readSafetensors(out);
    expect(compare(file.get('logits')!.data as Float32Array, f32(`${name}.logits_clamp`), TOL_LOGITS).relError).toBeLessThan(TOL_LOGITS);
    expect(compare(file.get(`${hook}.hook_sae_error`)!.data as Float32Array, f32(`${name}.error`), TOL_ERROR).relError).toBeLessThan(TOL_ERROR);
    const acts = file.get(`${hook}.hook_sae_acts_post`)!;
    expect(acts.shape).toEqual([2, 12, 256]);
    const a = acts.data as Float32Array;
    for (let row = 0; row < 24; row++) expect(a[row * 256 + i]).toBe(v);
  });

  it("a glob over the SAE's hooks selects only those that exist: no hook_sae_error without --sae-error-term", () => {
    const name = 'gpt2-standard-v6', hook = 'blocks.0.hook_resid_post';
    const base = ['run', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(rows(name)), '--sae', join(SAE, name)];
    const out = join(tmp, 'glob.safetensors');
    const r = cli([...base, '--capture', `${hook}.hook_sae_*`, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const names = [...readSafetensors(out).keys()].filter((k) => k.includes('hook_sae_')).sort();
    expect(names).toEqual(['hook_sae_acts_post', 'hook_sae_acts_pre', 'hook_sae_input', 'hook_sae_output', 'hook_sae_recons'].map((s) => `${hook}.${s}`));
    // Naming it explicitly keeps the clear error.
    const e = cli([...base, '--capture', `${hook}.hook_sae_error`, '--out', join(tmp, 'glob-error.safetensors')]);
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/^neurotap: error \[ERR_INVALID_INPUT\]: .*useErrorTerm/);
  });

  it('run --sae --sae-hook (Gemma Scope npz) with --feature-zero and --feature-steer', () => {
    const name = 'llama-gemmascope', hook = 'blocks.1.hook_resid_post';
    const ids = JSON.stringify(rows(name));
    const zero = join(tmp, 'zero.safetensors'), steer = join(tmp, 'steer.safetensors');
    const z = cli(['run', '--model', fixtureDir('llama-gqa'), '--tokens', ids, '--sae', join(SAE, name), '--sae-hook', hook, '--sae-error-term',
      ...i32(`${name}.zero_indices`).flatMap((j) => ['--feature-zero', String(j)]), '--out', zero]);
    expect(z.stderr).toBe('');
    expect(compare(readSafetensors(zero).get('logits')!.data as Float32Array, f32(`${name}.logits_zero`), TOL_LOGITS).relError).toBeLessThan(TOL_LOGITS);
    const s = cli(['run', '--model', fixtureDir('llama-gqa'), '--tokens', ids, '--sae', join(SAE, name), '--sae-hook', hook, '--sae-error-term',
      '--feature-steer', `${i32(`${name}.steer_index`)[0]}=${f32(`${name}.steer_strength`)[0]}`, '--out', steer]);
    expect(s.stderr).toBe('');
    expect(compare(readSafetensors(steer).get('logits')!.data as Float32Array, f32(`${name}.logits_steer`), TOL_LOGITS).relError).toBeLessThan(TOL_LOGITS);
  });

  it('run --sae without the error term splices the reconstruction in', () => {
    const name = 'gpt2-topk-v6';
    const out = join(tmp, 'spliced.safetensors');
    const r = cli(['run', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(rows(name)), '--sae', join(SAE, name), '--out', out]);
    expect(r.code).toBe(0);
    expect(compare(readSafetensors(out).get('logits')!.data as Float32Array, f32(`${name}.logits_spliced`), TOL_LOGITS).relError).toBeLessThan(TOL_LOGITS);
  });

  it('generate --sae --feature-steer gives the API\'s greedy tokens, which differ from the unsteered ones', async () => {
    const name = 'gpt2-standard-v6';
    const prompt = [[5, 17, 3, 99]];
    const args = ['generate', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(prompt), '--max-new-tokens', '8', '--temperature', '0'];
    const steered = cli([...args, '--sae', join(SAE, name), '--sae-error-term', '--feature-steer', '161=40']);
    expect(steered.stderr).toBe('');
    expect(steered.code).toBe(0);
    const plain = cli(args);
    const model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
    try {
      const a = await model.attachSae(await loadSae(join(SAE, name)), { useErrorTerm: true });
      const api = await model.generate(prompt, { maxNewTokens: 8, temperature: 0, hooks: featureHooks(a, { steer: { 161: 40 } }) });
      expect(JSON.parse(steered.stdout).tokens).toEqual(api.tokens);
      expect(JSON.parse(steered.stdout).tokens).not.toEqual(JSON.parse(plain.stdout).tokens);
    } finally {
      model.dispose();
    }
  });

  it('bad SAE flags are usage errors (exit 2) or coded errors (exit 1)', () => {
    const base = ['run', '--model', fixtureDir('gpt2'), '--tokens', '[[1, 2, 3]]'];
    const noSae = cli([...base, '--feature-clamp', '3=1']);
    expect(noSae.code).toBe(2);
    expect(noSae.stderr).toMatch(/need --sae DIR/);
    const badPair = cli([...base, '--sae', join(SAE, 'gpt2-standard-v6'), '--feature-clamp', 'x=1']);
    expect(badPair.code).toBe(2);
    const range = cli([...base, '--sae', join(SAE, 'gpt2-standard-v6'), '--feature-clamp', '999=1']);
    expect(range.code).toBe(1);
    expect(range.stderr).toMatch(/ERR_FEATURE_OUT_OF_RANGE/);
    const mismatch = cli([...base, '--sae', join(SAE, 'gpt2-hookz-v6'), '--sae-hook', 'blocks.0.hook_resid_pre']);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(/ERR_SAE_MISMATCH|ERR_INVALID_INPUT/);
  });
});
