// The parts of a model folder's tokenizer_config.json (and chat_template.jinja files) that the
// analysis helpers read: special-token strings and chat templates, as transformers loads them.
// Tests: test/analysis-tokens.test.ts, test/analysis-chat.test.ts.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { ModelLoadError } from '../errors.js';
import { isObject } from '../io/json.js';
import { readRegularFile } from '../io/files.js';

/** The special-token names transformers passes to a chat template (its `special_tokens_map`). */
export const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

/** What a folder's tokenizer files say beyond tokenizer.json. */
export interface TokenizerFolderConfig {
  /** Special-token strings by name (`bos_token`, `eos_token`, ...), where set. */
  specialTokens: Partial<Record<(typeof SPECIAL_TOKEN_KEYS)[number], string>>;
  /** Chat templates by name; a single template is `default`. Empty when there is none. */
  chatTemplates: Map<string, string>;
}

function invalid(dir: string, why: string): never {
  throw new ModelLoadError('ERR_TOKENIZER_INVALID', `tokenizer config in ${dir}: ${why}`);
}

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object `{ content }`. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

/**
 * Reads `dir`'s tokenizer_config.json (missing: empty), `chat_template.jinja` and
 * `additional_chat_templates/*.jinja`. As transformers does, template files take priority over
 * the config's `chat_template` (a string, or a list of `{ name, template }`).
 */
export function readTokenizerFolder(dir: string): TokenizerFolderConfig {
  const configPath = join(dir, 'tokenizer_config.json');
  let config: Record<string, unknown> = {};
  if (existsSync(configPath)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readRegularFile(configPath, 'tokenizer config').toString('utf8'));
    } catch (err) {
      if (err instanceof ModelLoadError) throw err;
      invalid(dir, `tokenizer_config.json is not valid JSON: ${(err as Error).message}`);
    }
    if (!isObject(parsed)) invalid(dir, 'tokenizer_config.json is not a JSON object');
    config = parsed;
  }
  const specialTokens: TokenizerFolderConfig['specialTokens'] = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const s = tokenString(config[key]);
    if (s !== undefined) specialTokens[key] = s;
  }
  const chatTemplates = new Map<string, string>();
  const file = join(dir, 'chat_template.jinja');
  if (existsSync(file)) chatTemplates.set('default', readRegularFile(file, 'chat template').toString('utf8'));
  const extra = join(dir, 'additional_chat_templates');
  if (existsSync(extra) && statSync(extra).isDirectory()) {
    for (const f of readdirSync(extra).sort()) {
      if (f.endsWith('.jinja')) chatTemplates.set(f.slice(0, -'.jinja'.length), readRegularFile(join(extra, f), 'chat template').toString('utf8'));
    }
  }
  if (chatTemplates.size === 0 && config.chat_template !== undefined && config.chat_template !== null) {
    const t = config.chat_template;
    if (typeof t === 'string') {
      chatTemplates.set('default', t);
    } else if (Array.isArray(t)) {
      for (const entry of t) {
        if (!isObject(entry) || typeof entry.name !== 'string' || typeof entry.template !== 'string') invalid(dir, 'chat_template lists an entry that is not { name, template }');
        chatTemplates.set(entry.name, entry.template);
      }
    } else {
      invalid(dir, 'chat_template must be a string or a list of { name, template }');
    }
  }
  return { specialTokens, chatTemplates };
}
