// toTokens / toStrTokens against TransformerLens's to_tokens / to_str_tokens run over
// transformers' tokenizer (test/fixtures/generate_analysis.py, tokens.json): a tokenizer that
// adds no BOS (the gpt2 fixture) and one whose post-processor prepends it.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, toStrTokens, toTokens, type Model } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const DIR = join(ROOT, 'test', 'fixtures', 'analysis');

interface TokensRef {
  texts: { text: string; prepend_bos: boolean; ids: number[]; str_tokens: string[] }[];
  ids: { ids: number[]; str_tokens: string[] }[];
}
const REF = JSON.parse(readFileSync(join(DIR, 'tokens.json'), 'utf8')) as Record<string, TokensRef>;

/** The gpt2 fixture with the BOS-prepending tokenizer of tokenizer-bos/. */
function bosModelDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'neurotap-bos-'));
  for (const f of ['config.json', 'model.safetensors']) symlinkSync(join(fixtureDir('gpt2'), f), join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(DIR, 'tokenizer-bos', f), join(dir, f));
  return dir;
}

for (const name of ['gpt2', 'tokenizer-bos']) {
  describe(`toStrTokens: ${name}`, () => {
    const ref = REF[name]!;
    let model: Model<'gpt2'>;
    let dir: string | null = null;
    beforeAll(async () => {
      if (name !== 'gpt2') dir = bosModelDir();
      model = await loadModel(dir ?? fixtureDir('gpt2'), { threads: 1, family: 'gpt2' });
    });
    afterAll(() => {
      model.dispose();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('tokenizes text with and without the BOS as TransformerLens, and decodes each token alone', () => {
      for (const c of ref.texts) {
        const o = { prependBos: c.prepend_bos };
        expect(toTokens(model, c.text, o), JSON.stringify(c.text)).toEqual(c.ids);
        expect(toStrTokens(model, c.text, o), JSON.stringify(c.text)).toEqual(c.str_tokens);
      }
    });

    it('defaults to prepending the BOS (TL default_prepend_bos) and takes lists of texts', () => {
      const withBos = ref.texts.filter((c) => c.prepend_bos);
      expect(toStrTokens(model, withBos[0]!.text)).toEqual(withBos[0]!.str_tokens);
      expect(toStrTokens(model, withBos.map((c) => c.text))).toEqual(withBos.map((c) => c.str_tokens));
    });

    it('gives one string per token (an empty text without BOS gives none)', () => {
      for (const t of ['', 'Hello']) expect(toStrTokens(model, t, { prependBos: false }).length).toBe(toTokens(model, t, { prependBos: false }).length);
    });

    it('decodes token ids as they are (no BOS added), one row or several', () => {
      for (const r of ref.ids) expect(toStrTokens(model, r.ids)).toEqual(r.str_tokens);
      expect(toStrTokens(model, ref.ids.map((r) => r.ids))).toEqual(ref.ids.map((r) => r.str_tokens));
    });

    it('refuses ids outside the vocabulary with a coded error', () => {
      expect(() => toStrTokens(model, [1, model.config.dVocab])).toThrow(expect.objectContaining({ code: 'ERR_TOKEN_OUT_OF_RANGE' }));
      expect(() => toStrTokens(model, [1.5])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_INPUT' }));
      expect(() => toTokens(model, 'x', { prependBos: 'yes' as never })).toThrow(/prependBos must be a boolean/);
    });
  });
}

describe('toStrTokens without a tokenizer', () => {
  it('is ERR_NO_TOKENIZER', async () => {
    const model = await loadModel(fixtureDir('llama-gqa'), { threads: 1 });
    try {
      expect(() => toStrTokens(model, [1, 2])).toThrow(expect.objectContaining({ code: 'ERR_NO_TOKENIZER' }));
    } finally {
      model.dispose();
    }
  });
});
