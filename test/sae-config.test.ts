// SAELens cfg.json keys (src/sae/config.ts, review in docs/SAE-MATH.md): a key that changes the
// math is implemented or refused with ERR_UNSUPPORTED_SAE, never ignored; a wrong type or null
// is ERR_SAE_INVALID; training-only keys change nothing. Also the Gemma Scope npz checks.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { loadSae, readSafetensors, writeSafetensors } from '../src/index.js';
import { ROOT } from './helpers.js';

const SAE_DIR = join(ROOT, 'test', 'fixtures', 'sae');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-sae-cfg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Json = Record<string, unknown>;
const base = (name: string) => JSON.parse(readFileSync(join(SAE_DIR, name, 'cfg.json'), 'utf8')) as Json;

let n = 0;
/** A copy of fixture `name` with cfg.json replaced by `edit(cfg)` (text when a string is returned). */
function variant(name: string, edit: (cfg: Json) => Json | string | void): string {
  const dir = join(tmp, `${name}-${n++}`);
  mkdirSync(dir);
  copyFileSync(join(SAE_DIR, name, 'sae_weights.safetensors'), join(dir, 'sae_weights.safetensors'));
  const cfg = base(name);
  const out = edit(cfg) ?? cfg;
  writeFileSync(join(dir, 'cfg.json'), typeof out === 'string' ? out : JSON.stringify(out));
  return dir;
}

/** A copy of fixture `name` whose weights get `extra` tensors (float32). */
function withTensors(name: string, extra: Record<string, Float32Array>): string {
  const dir = variant(name, () => {});
  const st = readSafetensors(join(dir, 'sae_weights.safetensors'));
  const tensors = new Map([...st].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }]));
  for (const [k, v] of Object.entries(extra)) tensors.set(k, { shape: [v.length], data: v });
  writeSafetensors(join(dir, 'sae_weights.safetensors'), tensors);
  return dir;
}

const meta = (cfg: Json) => cfg.metadata as Json;

describe('SAE cfg.json', () => {
  it('wrong types, nulls and malformed JSON are ERR_SAE_INVALID', async () => {
    const edits: [string, (c: Json) => Json | string | void][] = [
      ['d_in "64"', (c) => void (c.d_in = '64')],
      ['d_sae null', (c) => void (c.d_sae = null)],
      ['d_sae 1.5', (c) => void (c.d_sae = 1.5)],
      ['architecture 5', (c) => void (c.architecture = 5)],
      ['architecture null', (c) => void (c.architecture = null)],
      ['apply_b_dec_to_input "false"', (c) => void (c.apply_b_dec_to_input = 'false')],
      ['apply_b_dec_to_input 1', (c) => void (c.apply_b_dec_to_input = 1)],
      ['apply_b_dec_to_input null', (c) => void (c.apply_b_dec_to_input = null)],
      ['normalize_activations 5', (c) => void (c.normalize_activations = 5)],
      ['reshape_activations null', (c) => void (c.reshape_activations = null)],
      ['dtype int8', (c) => void (c.dtype = 'int8')],
      ['dtype null', (c) => void (c.dtype = null)],
      ['metadata "x"', (c) => void (c.metadata = 'x')],
      ['metadata null', (c) => void (c.metadata = null)],
      ['hook_name 5', (c) => void (meta(c).hook_name = 5)],
      ['k 0', (c) => void (c.k = 0)],
      ['k 1.5', (c) => void (c.k = 1.5)],
      ['k > d_sae', (c) => void (c.k = 257)],
      ['k null', (c) => void (c.k = null)],
      ['rescale_acts_by_decoder_norm "yes"', (c) => void (c.rescale_acts_by_decoder_norm = 'yes')],
      ['activation_fn_kwargs []', (c) => void (c.activation_fn_kwargs = [])],
      ['cfg.json an array', () => '[]'],
      ['cfg.json truncated', (c) => JSON.stringify(c).slice(0, 40)],
      ['duplicate key', (c) => JSON.stringify(c).replace('{', '{"k": 8,')],
    ];
    for (const [what, edit] of edits) await expect(loadSae(variant('gpt2-topk-v6', edit)), what).rejects.toMatchObject({ code: 'ERR_SAE_INVALID' });
    const dir = variant('gpt2-topk-v6', () => {});
    writeFileSync(join(dir, 'cfg.json'), Buffer.from([0x7b, 0xff, 0x7d]));
    await expect(loadSae(dir)).rejects.toMatchObject({ code: 'ERR_SAE_INVALID', message: expect.stringMatching(/UTF-8/) });
  });

  it('math-changing keys neurotap does not implement are ERR_UNSUPPORTED_SAE', async () => {
    const edits: [string, string, (c: Json) => void][] = [
      ...['transcoder', 'skip_transcoder', 'jumprelu_transcoder', 'batchtopk', 'matryoshka_batchtopk'].map(
        (a) => [`architecture ${a}`, 'gpt2-standard-v6', (c: Json) => void (c.architecture = a)] as [string, string, (c: Json) => void],
      ),
      ['normalize_activations l2', 'gpt2-standard-v6', (c) => void (c.normalize_activations = 'l2')],
      ['reshape_activations hook_q', 'gpt2-standard-v6', (c) => void (c.reshape_activations = 'hook_q')],
      ['activation_fn tanh-relu', 'gpt2-standard-v6', (c) => void (c.activation_fn = 'tanh-relu')],
      ['activation_fn_str topk on a jumprelu', 'gpt2-jumprelu-flat', (c) => void (c.activation_fn_str = 'topk')],
      ['hook_head_index 2 (v6)', 'gpt2-hookz-v6', (c) => void (meta(c).hook_head_index = 2)],
      ['hook_point_head_index 0 (flat)', 'gpt2-jumprelu-flat', (c) => void (c.hook_point_head_index = 0)],
    ];
    for (const [what, name, edit] of edits) await expect(loadSae(variant(name, edit)), what).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_SAE' });
    // Tensors a standard SAE does not read (SAELens's strict state-dict load refuses them too).
    for (const t of ['threshold', 'log_threshold', 'topk_threshold', 'b_gate'])
      await expect(loadSae(withTensors('gpt2-standard-v6', { [t]: new Float32Array(256) })), t).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_SAE' });
  });

  it('training-only keys, NaN values and rescale on a non-TopK SAE change nothing (as in SAELens)', async () => {
    const ref = await loadSae(join(SAE_DIR, 'gpt2-standard-v6'));
    const training = {
      l1_coefficient: 5, lp_norm: 1, decoder_init_norm: 0.1, aux_loss_coefficient: 1, jumprelu_bandwidth: 0.05,
      jumprelu_sparsity_loss_mode: 'tanh', mse_loss_normalization: null, use_sparse_activations: true, l1_warm_up_steps: 0,
      rescale_acts_by_decoder_norm: true, finetuning_scaling_factor: false, d_out: 64,
    };
    const dir = variant('gpt2-standard-v6', (c) => JSON.stringify({ ...c, ...training, metadata: { ...meta(c), seqpos_slice: [1, null], prepend_bos: true, exclude_special_tokens: [0] } }).replace('"l1_coefficient":5', '"l1_coefficient":NaN'));
    expect(readFileSync(join(dir, 'cfg.json'), 'utf8')).toContain('NaN');
    const sae = await loadSae(dir);
    expect(sae.cfg).toEqual(ref.cfg);
    expect(sae.cfg.rescaleActsByDecoderNorm).toBeUndefined();
  });

  it('reads rescale_acts_by_decoder_norm for TopK and refuses it with a zero W_dec row', async () => {
    expect((await loadSae(join(SAE_DIR, 'gpt2-topk-v6'))).cfg.rescaleActsByDecoderNorm).toBe(false);
    const on = variant('gpt2-topk-v6', (c) => void (c.rescale_acts_by_decoder_norm = true));
    expect((await loadSae(on)).cfg.rescaleActsByDecoderNorm).toBe(true);
    const flat = variant('gpt2-jumprelu-flat', (c) => {
      Object.assign(c, { architecture: 'standard', activation_fn_str: 'topk', activation_fn_kwargs: { k: 5 }, rescale_acts_by_decoder_norm: true });
    });
    writeSafetensors(join(flat, 'sae_weights.safetensors'), new Map([...readSafetensors(join(SAE_DIR, 'gpt2-jumprelu-flat', 'sae_weights.safetensors'))].filter(([k]) => k !== 'threshold').map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }])));
    expect((await loadSae(flat)).cfg).toMatchObject({ architecture: 'topk', k: 5, rescaleActsByDecoderNorm: true });
    const st = readSafetensors(join(on, 'sae_weights.safetensors'));
    const tensors = new Map([...st].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }]));
    tensors.get('W_dec')!.data.fill(0, 3 * 64, 4 * 64);
    writeSafetensors(join(on, 'sae_weights.safetensors'), tensors);
    await expect(loadSae(on)).rejects.toMatchObject({ code: 'ERR_SAE_INVALID', message: expect.stringMatching(/row 3 has norm 0/) });
  });
});

/** A stored (uncompressed) zip of .npy float32 arrays, as np.savez writes. */
function npz(arrays: Record<string, { shape: number[]; data: Float32Array }>): Buffer {
  const locals: Buffer[] = [], central: Buffer[] = [];
  let offset = 0;
  for (const [key, a] of Object.entries(arrays)) {
    let head = `{'descr': '<f4', 'fortran_order': False, 'shape': (${a.shape.join(', ')}${a.shape.length === 1 ? ',' : ''}), }`;
    head = head.padEnd(64 * Math.ceil((head.length + 11) / 64) - 11) + '\n';
    const npy = Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]), Buffer.from([head.length & 0xff, head.length >> 8]), Buffer.from(head, 'latin1'), Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength)]);
    const name = Buffer.from(`${key}.npy`);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt32LE(npy.length, 18);
    local.writeUInt32LE(npy.length, 22);
    local.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt32LE(npy.length, 20);
    cd.writeUInt32LE(npy.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(offset, 42);
    locals.push(local, name, npy);
    central.push(cd, name);
    offset += 30 + name.length + npy.length;
  }
  const cdBytes = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(Object.keys(arrays).length, 8);
  eocd.writeUInt16LE(Object.keys(arrays).length, 10);
  eocd.writeUInt32LE(cdBytes.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cdBytes, eocd]);
}

describe('Gemma Scope params.npz', () => {
  const HOOK = { hook: 'blocks.1.hook_resid_post' };
  const arrays = (dIn: number, dSae: number) => ({
    w_enc: { shape: [dIn, dSae], data: new Float32Array(dIn * dSae).fill(0.1) },
    b_enc: { shape: [dSae], data: new Float32Array(dSae) },
    w_dec: { shape: [dSae, dIn], data: new Float32Array(dIn * dSae).fill(0.1) },
    b_dec: { shape: [dIn], data: new Float32Array(dIn) },
    threshold: { shape: [dSae], data: new Float32Array(dSae).fill(0.5) },
  });
  const write = (name: string, bytes: Buffer) => {
    const path = join(tmp, name);
    writeFileSync(path, bytes);
    return path;
  };

  it('loads the arrays a JumpReLU SAE needs; refuses empty dimensions and extra arrays', async () => {
    const sae = await loadSae(write('ok.npz', npz(arrays(8, 16))), HOOK);
    expect(sae.cfg).toMatchObject({ architecture: 'jumprelu', dIn: 8, dSae: 16, hookName: HOOK.hook, format: 'gemma-scope' });
    await expect(loadSae(write('empty.npz', npz(arrays(0, 16))), HOOK)).rejects.toMatchObject({ code: 'ERR_SAE_INVALID' });
    await expect(loadSae(write('extra.npz', npz({ ...arrays(8, 16), log_threshold: { shape: [16], data: new Float32Array(16) } })), HOOK)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_SAE' });
    await expect(loadSae(write('both.npz', npz({ ...arrays(8, 16), W_enc: arrays(8, 16).w_enc })), HOOK)).rejects.toMatchObject({ code: 'ERR_SAE_INVALID' });
    await expect(loadSae(write('ones.npz', npz({ ...arrays(8, 16), scaling_factor: { shape: [16], data: new Float32Array(16).fill(1) } })), HOOK)).resolves.toBeTruthy();
  });
});
