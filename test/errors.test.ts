// Bad input: every case gives an Error subclass with a stable code, never a crash, and the
// model stays usable afterwards.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  DeviceError,
  InvalidInputError,
  loadModel,
  ModelLoadError,
  probeDevice,
  UnknownHookError,
  UnsupportedModelError,
  type Model,
} from '../src/index.js';
import { fixtureDir } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'neurotap-bad-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const GPT2 = fixtureDir('gpt2');
const LLAMA = fixtureDir('llama-gqa');

/** A copy of a fixture's config and weights, with `mutate` applied to the weights file bytes. */
function brokenCopy(name: string, mutate: (bytes: Buffer) => Buffer, configEdit?: (c: Record<string, unknown>) => void): string {
  const src = fixtureDir(name);
  const dir = join(tmp, `${name}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir);
  const config = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  configEdit?.(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'model.safetensors'), mutate(readFileSync(join(src, 'model.safetensors'))));
  return dir;
}

/** Splits a safetensors file into its header object and data section. */
function parseFile(bytes: Buffer): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>; data: Buffer } {
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString()), data: bytes.subarray(8 + n) };
}

function buildFile(header: object, data: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

function editHeader(edit: (h: ReturnType<typeof parseFile>['header']) => void): (b: Buffer) => Buffer {
  return (bytes) => {
    const { header, data } = parseFile(bytes);
    edit(header);
    return buildFile(header, data);
  };
}

async function expectLoadError(dir: string, cls: new (...args: never[]) => Error, code: string, message?: RegExp): Promise<void> {
  const err = await loadModel(dir).then(
    (m) => {
      m.dispose();
      return null;
    },
    (e: unknown) => e,
  );
  expect(err, `loading ${dir} should fail with ${code}`).toBeInstanceOf(cls);
  expect((err as { code: string }).code).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
}

describe('bad model files', () => {
  it('a missing directory', () => expectLoadError(join(tmp, 'nope'), ModelLoadError, 'ERR_FILE_NOT_FOUND', /config\.json/));

  it('a truncated safetensors file', () =>
    expectLoadError(brokenCopy('gpt2', (b) => b.subarray(0, Math.floor(b.length / 2))), ModelLoadError, 'ERR_SAFETENSORS_INVALID', /truncated/));

  it('a file shorter than the header length field', () =>
    expectLoadError(brokenCopy('gpt2', (b) => b.subarray(0, 5)), ModelLoadError, 'ERR_SAFETENSORS_INVALID', /too short/));

  it('a header length past the end of the file', () =>
    expectLoadError(
      brokenCopy('gpt2', (b) => {
        const c = Buffer.from(b);
        c.writeBigUInt64LE(BigInt(b.length * 2), 0);
        return c;
      }),
      ModelLoadError,
      'ERR_SAFETENSORS_INVALID',
      /header length/,
    ));

  it('malformed header JSON', () =>
    expectLoadError(
      brokenCopy('gpt2', (b) => {
        const c = Buffer.from(b);
        c.write('@', 8);  // the header's opening brace
        return c;
      }),
      ModelLoadError,
      'ERR_SAFETENSORS_INVALID',
      /invalid JSON/,
    ));

  it('an unknown dtype', () =>
    expectLoadError(brokenCopy('gpt2', editHeader((h) => (h['wte.weight']!.dtype = 'F7'))), ModelLoadError, 'ERR_SAFETENSORS_INVALID', /unknown dtype/));

  it('a shape that disagrees with the byte range', () =>
    expectLoadError(
      brokenCopy('gpt2', editHeader((h) => (h['wte.weight']!.shape = [3, 3]))),
      ModelLoadError,
      'ERR_SAFETENSORS_INVALID',
      /need/,
    ));

  it('offsets outside the file', () =>
    expectLoadError(
      brokenCopy(
        'gpt2',
        editHeader((h) => {
          const e = h['ln_f.bias']!;
          const size = e.data_offsets[1] - e.data_offsets[0];
          e.data_offsets = [1e9, 1e9 + size];
        }),
      ),
      ModelLoadError,
      'ERR_SAFETENSORS_INVALID',
      /data ends at byte/,
    ));

  it('overlapping tensors', () =>
    expectLoadError(
      brokenCopy(
        'gpt2',
        editHeader((h) => {
          h['ln_f.weight']!.data_offsets = [...h['ln_f.bias']!.data_offsets];
        }),
      ),
      ModelLoadError,
      'ERR_SAFETENSORS_INVALID',
      /overlap/,
    ));

  it('a missing tensor', () =>
    expectLoadError(brokenCopy('gpt2', editHeader((h) => delete h['h.1.mlp.c_fc.bias'])), ModelLoadError, 'ERR_TENSOR_MISSING', /h\.1\.mlp\.c_fc\.bias/));

  it('a tensor whose shape disagrees with config.json', () =>
    expectLoadError(brokenCopy('gpt2', (b) => b, (c) => (c.n_inner = 100)), ModelLoadError, 'ERR_TENSOR_SHAPE', /c_fc/));

  it('an unsupported architecture', () =>
    expectLoadError(
      brokenCopy('gpt2', (b) => b, (c) => {
        c.architectures = ['BertForMaskedLM'];
        c.model_type = 'bert';
      }),
      UnsupportedModelError,
      'ERR_UNSUPPORTED_ARCHITECTURE',
      /BertForMaskedLM/,
    ));

  it('an unsupported rope type', () =>
    expectLoadError(
      brokenCopy('llama-gqa', (b) => b, (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 })),
      UnsupportedModelError,
      'ERR_UNSUPPORTED_CONFIG',
      /yarn/,
    ));

  it('bad settings of the newer families: partial rotary, soft-caps, attention scalar, Gemma layer pattern', async () => {
    const cases: [string, (c: Record<string, unknown>) => void, string, RegExp][] = [
      ['pythia-serial', (c) => (c.rotary_pct = 0), 'ERR_CONFIG_INVALID', /rotary_pct|partial_rotary_factor/],
      ['pythia-serial', (c) => (c.rotary_pct = 0.1), 'ERR_CONFIG_INVALID', /rotary_pct/],  // 0 rotary dims of 8
      ['pythia-parallel', (c) => ((c.rope_parameters as Record<string, unknown>).partial_rotary_factor = 1.5), 'ERR_CONFIG_INVALID', /partial_rotary_factor/],
      ['gemma2', (c) => (c.attn_logit_softcapping = -1), 'ERR_CONFIG_INVALID', /attn_logit_softcapping/],
      ['gemma2', (c) => (c.final_logit_softcapping = 'big'), 'ERR_CONFIG_INVALID', /final_logit_softcapping/],
      ['gemma2', (c) => (c.query_pre_attn_scalar = 0), 'ERR_CONFIG_INVALID', /query_pre_attn_scalar/],
      ['gemma3-text-linear', (c) => (c.sliding_window_pattern = 0), 'ERR_CONFIG_INVALID', /sliding_window_pattern/],
      ['gemma3-text', (c) => (c.layer_types = ['sliding_attention']), 'ERR_CONFIG_INVALID', /layer_types/],
      ['qwen3', (c) => (c.rope_parameters = { rope_type: 'yarn', rope_theta: 1e6, factor: 4 }), 'ERR_UNSUPPORTED_CONFIG', /yarn/],
    ];
    for (const [fixture, edit, code, message] of cases) {
      const cls = code === 'ERR_UNSUPPORTED_CONFIG' ? UnsupportedModelError : ModelLoadError;
      await expectLoadError(brokenCopy(fixture, (b) => b, edit), cls, code, message);
    }
  });

  it('a checkpoint missing a tensor only the newer families have', async () => {
    await expectLoadError(brokenCopy('qwen3', editHeader((h) => delete h['model.layers.1.self_attn.k_norm.weight'])), ModelLoadError, 'ERR_TENSOR_MISSING', /k_norm/);
    await expectLoadError(brokenCopy('gemma2', editHeader((h) => delete h['model.layers.0.post_feedforward_layernorm.weight'])), ModelLoadError, 'ERR_TENSOR_MISSING', /post_feedforward/);
    await expectLoadError(brokenCopy('pythia-parallel', editHeader((h) => delete h['embed_out.weight'])), ModelLoadError, 'ERR_TENSOR_MISSING', /embed_out/);
  });

  it('a config.json that is not valid JSON or lacks a required key', async () => {
    const dir = brokenCopy('gpt2', (b) => b);
    writeFileSync(join(dir, 'config.json'), '{"model_type": "gpt2", ');
    await expectLoadError(dir, ModelLoadError, 'ERR_CONFIG_INVALID', /invalid JSON/);
    await expectLoadError(brokenCopy('gpt2', (b) => b, (c) => delete c.n_embd), ModelLoadError, 'ERR_CONFIG_INVALID', /n_embd/);
    await expectLoadError(brokenCopy('gpt2', (b) => b, (c) => (c.n_head = -2)), ModelLoadError, 'ERR_CONFIG_INVALID', /n_head/);
  });

  it('a sharded index naming a missing shard or a path outside the model directory', async () => {
    const src = fixtureDir('llama3-mqa-sharded-f16');
    const index = JSON.parse(readFileSync(join(src, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    for (const [shardName, code] of [
      ['model-00009-of-00009.safetensors', 'ERR_FILE_NOT_FOUND'],
      ['../gpt2/model.safetensors', 'ERR_SAFETENSORS_INVALID'],
    ] as const) {
      const dir = join(tmp, `sharded-${code}`);
      mkdirSync(dir);
      for (const f of ['config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'])
        copyFileSync(join(src, f), join(dir, f));
      const first = Object.keys(index.weight_map)[0]!;
      writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...index.weight_map, [first]: shardName } }));
      await expectLoadError(dir, ModelLoadError, code);
    }
  });

  it('an unavailable device or dtype', async () => {
    const cuda = probeDevice('cuda');
    if (!cuda.available) {
      // The reason names what is missing (the library, the driver or a GPU).
      const err = await loadModel(GPT2, { device: 'cuda' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DeviceError);
      expect(err).toMatchObject({ code: 'ERR_DEVICE_UNAVAILABLE', message: cuda.reason });
      const auto = await loadModel(GPT2, { device: 'auto', threads: 1 });
      expect(auto.device).toBe('cpu');
      auto.dispose();
    }
    await expect(loadModel(GPT2, { dtype: 'f16' })).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_DTYPE' });
    await expect(loadModel(GPT2, { device: 'tpu' as 'cpu' })).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_DEVICE' });
  });
});

describe('bad run input', () => {
  let model: Model;
  let baseline: Float32Array;
  const good = [[1, 2, 3]];
  beforeAll(async () => {
    model = await loadModel(LLAMA, { threads: 2 });
    baseline = (await model.run(good)).logits!.data;
  });
  afterAll(() => model.dispose());

  const cases: [string, () => Promise<unknown>, new (...args: never[]) => Error, string, RegExp][] = [
    ['an unknown hook name (with suggestions)', () => model.run(good, { capture: ['blocks.0.attn.hook_patern'] }), UnknownHookError, 'ERR_UNKNOWN_HOOK', /did you mean 'blocks\.0\.attn\.hook_pattern'/],
    ['a hook the family lacks', () => model.run(good, { capture: ['hook_pos_embed'] }), UnknownHookError, 'ERR_UNKNOWN_HOOK', /unknown hook 'hook_pos_embed'/],
    ['a layer past the last block', () => model.run(good, { capture: ['blocks.7.hook_resid_post'] }), UnknownHookError, 'ERR_UNKNOWN_HOOK', /blocks\.1\.hook_resid_post/],
    ['a glob matching nothing', () => model.run(good, { capture: ['blocks.*.hook_nothing'] }), UnknownHookError, 'ERR_UNKNOWN_HOOK', /matches no hook/],
    ['a token id past the vocabulary', () => model.run([[1, 2, 100000]]), InvalidInputError, 'ERR_TOKEN_OUT_OF_RANGE', /position 2/],
    ['a negative token id', () => model.run([[1, -1, 2]]), InvalidInputError, 'ERR_TOKEN_OUT_OF_RANGE', /-1/],
    ['a non-integer token id', () => model.run([[1, 2.5]]), InvalidInputError, 'ERR_INVALID_INPUT', /not an integer/],
    ['an empty batch', () => model.run([]), InvalidInputError, 'ERR_INVALID_INPUT', /empty/],
    ['an empty sequence', () => model.run([[]]), InvalidInputError, 'ERR_INVALID_INPUT', /at least one token/],
    ['an unknown padding side', () => model.run([[1, 2, 3], [1, 2]], { padding: 'both' as 'left' }), InvalidInputError, 'ERR_INVALID_INPUT', /padding/],
    ['text without a tokenizer', () => model.run('hello'), InvalidInputError, 'ERR_NO_TOKENIZER', /tokenizer/],
    ['a wrongly sized output buffer', () => model.run(good, { capture: ['hook_embed'], outputs: { hook_embed: new Float32Array(3) } }), InvalidInputError, 'ERR_BUFFER_SIZE', /hook_embed/],
    ['a wrongly sized logits buffer', () => model.run(good, { logitsOutput: new Float32Array(7) }), InvalidInputError, 'ERR_BUFFER_SIZE', /logits/],
  ];

  for (const [label, run, cls, code, message] of cases) {
    it(`${label} -> ${code}, and the model stays usable`, async () => {
      const err = await run().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      expect((err as { code: string }).code).toBe(code);
      expect((err as Error).message).toMatch(message);
      const again = await model.run(good);
      expect(Array.from(again.logits!.data)).toEqual(Array.from(baseline));
    });
  }

  it('a sequence longer than GPT-2 learned positions', async () => {
    const gpt2 = await loadModel(GPT2, { threads: 1 });
    try {
      const n = gpt2.config.nCtx + 1;
      await expect(gpt2.run([Array.from({ length: n }, () => 1)])).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT', message: expect.stringMatching(/learned positions/) });
      expect((await gpt2.run([[1, 2]])).logits!.shape).toEqual([1, 2, gpt2.config.dVocab]);
    } finally {
      gpt2.dispose();
    }
  });

  it('suggestions are exposed on the error', async () => {
    const err = (await model.run(good, { capture: ['blocks.1.hook_resid_pots'] }).catch((e: unknown) => e)) as UnknownHookError;
    expect(err.suggestions[0]).toBe('blocks.1.hook_resid_post');
  });
});
