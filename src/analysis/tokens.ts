// TransformerLens's to_tokens / to_str_tokens over a model's tokenizer: the BOS token as TL's
// prepend_bos adds or removes it, and each token decoded on its own. Reference:
// test/fixtures/generate_analysis.py; tests: test/analysis-tokens.test.ts.
import { InvalidInputError } from '../errors.js';
import type { Model } from '../model/Model.js';
import { checkBoolean, checkObject, checkTokenId, invalid } from '../model/validate.js';
import type { Tokenizer } from '../tokenizer.js';
import { readTokenizerFolder, type TokenizerFolderConfig } from './tokenizer-config.js';

/** Options for {@link toTokens} and {@link toStrTokens}. */
export interface ToTokensOptions {
  /**
   * Text starts with the BOS token (TransformerLens's `prepend_bos`): a tokenizer that adds one
   * itself keeps it, otherwise the BOS string (tokenizer_config.json's `bos_token`, else
   * `eos_token`, else `<|endoftext|>`) is put before the text; with false, a BOS the tokenizer
   * adds is removed. Only applies to text. Defaults to true (TL's `default_prepend_bos`).
   */
  prependBos?: boolean;
}

const folders = new WeakMap<Model, TokenizerFolderConfig>();

/** The model's tokenizer folder config, read once per model. */
export function tokenizerFolder(model: Model): TokenizerFolderConfig {
  let f = folders.get(model);
  if (!f) folders.set(model, (f = readTokenizerFolder(model.dir)));
  return f;
}

function tokenizerOf(model: Model, what: string): Tokenizer {
  if (!model.tokenizer) throw new InvalidInputError('ERR_NO_TOKENIZER', `${what} needs a tokenizer; there is no tokenizer.json in ${model.dir}`);
  return model.tokenizer;
}

/** Token ids of `text` with TransformerLens's BOS handling (`to_tokens` of one string, no truncation). */
export function toTokens(model: Model, text: string, options: ToTokensOptions = {}): number[] {
  if (typeof text !== 'string') invalid('toTokens takes a string');
  checkObject(options, 'toTokens options');
  checkBoolean(options.prependBos, 'prependBos');
  const tok = tokenizerOf(model, 'toTokens');
  const prependBos = options.prependBos ?? true;
  // TL: the tokenizer "prepends BOS" when it encodes the empty string to something.
  const tokenizerAddsBos = tok.encode('', { addSpecialTokens: true }).length > 0;
  if (prependBos && !tokenizerAddsBos) {
    const s = tokenizerFolder(model).specialTokens;
    text = (s.bos_token ?? s.eos_token ?? '<|endoftext|>') + text;
  }
  const ids = tok.encode(text, { addSpecialTokens: true });
  return !prependBos && tokenizerAddsBos ? ids.slice(1) : ids;
}

/** Each token of `ids` decoded on its own, special tokens kept, no space clean-up. */
function strTokensOf(model: Model, tok: Tokenizer, ids: readonly unknown[], where: string): string[] {
  return ids.map((t, i) => {
    checkTokenId(t, model.config.dVocab, `${where}${i}`);
    return tok.decode([t], { skipSpecialTokens: false, cleanUpTokenizationSpaces: false });
  });
}

/**
 * Each token as a string, TransformerLens's `to_str_tokens`: text is tokenized by
 * {@link toTokens} (with `prependBos`), token ids are taken as they are; every token is decoded
 * alone (special tokens kept, no space clean-up). A list of texts or of id rows gives one list
 * per entry. Throws ERR_NO_TOKENIZER without tokenizer.json, ERR_TOKEN_OUT_OF_RANGE for an id
 * outside the vocabulary.
 */
export function toStrTokens(model: Model, input: string | readonly number[], options?: ToTokensOptions): string[];
export function toStrTokens(model: Model, input: readonly string[] | readonly (readonly number[])[], options?: ToTokensOptions): string[][];
export function toStrTokens(model: Model, input: string | readonly number[] | readonly string[] | readonly (readonly number[])[], options: ToTokensOptions = {}): string[] | string[][] {
  checkObject(options, 'toStrTokens options');
  const tok = tokenizerOf(model, 'toStrTokens');
  if (typeof input === 'string') return strTokensOf(model, tok, toTokens(model, input, options), 'position ');
  if (!Array.isArray(input)) invalid('toStrTokens takes a string, token ids, or a list of either');
  if (input.every((x) => typeof x === 'number')) return strTokensOf(model, tok, input, 'position ');
  return (input as readonly unknown[]).map((row, b) => {
    if (typeof row === 'string') return strTokensOf(model, tok, toTokens(model, row, options), `entry ${b}, position `);
    if (!Array.isArray(row)) invalid(`toStrTokens: entry ${b} is neither a string nor token ids`);
    return strTokensOf(model, tok, row, `entry ${b}, position `);
  });
}
