// Tokenizer over a model's tokenizer.json, via @huggingface/tokenizers (a pure-JS port of HF
// tokenizers). Parity with the Python library: test/tokenizer.test.ts.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { ModelLoadError } from './errors.js';
import { readRegularFile } from './io/files.js';

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add the model's special tokens (e.g. Llama's BOS) as HF does. Defaults to true. */
  addSpecialTokens?: boolean;
}

/** A model's tokenizer: text to token ids and back. */
export class Tokenizer {
  private constructor(
    private readonly hf: HfTokenizer,
    private readonly cleanUpSpaces: boolean,
  ) {}

  /** Reads `tokenizer.json` (and `tokenizer_config.json` when present) from `dir`; null if there is none. */
  static fromDir(dir: string): Tokenizer | null {
    const path = join(dir, 'tokenizer.json');
    if (!existsSync(path)) return null;
    const configPath = join(dir, 'tokenizer_config.json');
    const text = readRegularFile(path, 'tokenizer').toString('utf8');
    const configText = existsSync(configPath) ? readRegularFile(configPath, 'tokenizer config').toString('utf8') : '{}';
    try {
      const json = JSON.parse(text) as object;
      const config = JSON.parse(configText) as { clean_up_tokenization_spaces?: unknown };
      // The Python tokenizers library never cleans up spaces; transformers does only when
      // tokenizer_config.json asks. Follow the config, defaulting to the library.
      return new Tokenizer(new HfTokenizer(json, config), config.clean_up_tokenization_spaces === true);
    } catch (err) {
      throw new ModelLoadError('ERR_TOKENIZER_INVALID', `cannot load tokenizer from ${dir}: ${(err as Error).message}`);
    }
  }

  /** Token ids of `text`. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Text of `ids`, as HF decodes it (no space clean-up unless tokenizer_config.json asks or `cleanUpTokenizationSpaces` says). */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean; cleanUpTokenizationSpaces?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? this.cleanUpSpaces });
  }

  /** The token string of one id (e.g. "Ġthe"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }
}
