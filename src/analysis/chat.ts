// Chat templates from a model folder (tokenizer_config.json's chat_template or
// chat_template.jinja), rendered with @huggingface/jinja as transformers'
// apply_chat_template(..., tokenize=False) does. Reference: test/fixtures/generate_analysis.py;
// tests: test/analysis-chat.test.ts.
import { Template } from '@huggingface/jinja';

import { InvalidInputError, ModelLoadError } from '../errors.js';
import type { Model } from '../model/Model.js';
import { checkBoolean, checkObject, invalid, isObject } from '../model/validate.js';
import { readTokenizerFolder, type TokenizerFolderConfig } from './tokenizer-config.js';
import { tokenizerFolder } from './tokens.js';

/** One chat message: a role and its content, plus any fields the template reads (e.g. `tool_calls`). */
export interface ChatMessage {
  role: string;
  content?: unknown;
  [key: string]: unknown;
}

/** Options for {@link applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the template's opening of an assistant turn (`add_generation_prompt`). Defaults to false. */
  addGenerationPrompt?: boolean;
  /** Leave the last message open so generation continues it (`continue_final_message`). Defaults to false. */
  continueFinalMessage?: boolean;
  /** A template name (when the folder has several) or a Jinja template. Defaults to the folder's `default` template (`tool_use` when `tools` are given and it exists). */
  chatTemplate?: string;
  /** Tool JSON schemas passed to the template as `tools`. Defaults to none. */
  tools?: readonly Record<string, unknown>[];
  /** Documents passed to the template as `documents`. Defaults to none. */
  documents?: readonly Record<string, unknown>[];
  /** Further template variables (e.g. `{ enable_thinking: false }`); they override the special tokens. Defaults to none. */
  variables?: Record<string, unknown>;
}

const compiled = new Map<string, Template>();

function compile(source: string, where: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (err) {
      throw new ModelLoadError('ERR_TOKENIZER_INVALID', `the chat template of ${where} does not parse: ${(err as Error).message}`);
    }
    if (compiled.size >= 32) compiled.delete(compiled.keys().next().value!);
    compiled.set(source, t);
  }
  return t;
}

/** The template transformers' get_chat_template would pick. */
function pickTemplate(folder: TokenizerFolderConfig, options: ChatTemplateOptions, where: string): string {
  const templates = folder.chatTemplates;
  const wanted = options.chatTemplate;
  if (wanted !== undefined) return templates.get(wanted) ?? wanted;
  if (templates.size === 0)
    throw new InvalidInputError('ERR_NO_CHAT_TEMPLATE', `${where} has no chat template (tokenizer_config.json's chat_template or chat_template.jinja); pass options.chatTemplate`);
  if (options.tools !== undefined && templates.has('tool_use')) return templates.get('tool_use')!;
  const d = templates.get('default');
  if (d === undefined)
    throw new InvalidInputError('ERR_NO_CHAT_TEMPLATE', `${where} has several chat templates and no default: pass options.chatTemplate, one of ${[...templates.keys()].join(', ')}`);
  return d;
}

const TAG = 'CONTINUE_FINAL_MESSAGE_TAG ';

/**
 * Renders `messages` with a model folder's chat template, as transformers'
 * `tokenizer.apply_chat_template(messages, tokenize=False)`: the template sees `messages`,
 * `add_generation_prompt`, `tools`, `documents`, the special-token strings of
 * tokenizer_config.json (`bos_token`, `eos_token`, ...) and `variables`. `source` is a loaded
 * model or a folder path. The text already holds the template's special tokens: tokenize it with
 * `addSpecialTokens: false`. Throws ERR_NO_CHAT_TEMPLATE when the folder has none, and
 * ERR_INVALID_INPUT when the template refuses the messages (`raise_exception`).
 */
export function applyChatTemplate(source: Model | string, messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
  checkObject(options, 'applyChatTemplate options');
  checkBoolean(options.addGenerationPrompt, 'addGenerationPrompt');
  checkBoolean(options.continueFinalMessage, 'continueFinalMessage');
  if (options.chatTemplate !== undefined && typeof options.chatTemplate !== 'string') invalid('chatTemplate must be a template name or a template');
  if (options.variables !== undefined && !isObject(options.variables)) invalid('variables must be an object');
  if (options.continueFinalMessage && options.addGenerationPrompt) invalid('continueFinalMessage and addGenerationPrompt exclude each other');
  for (const k of ['tools', 'documents'] as const) {
    const v = options[k];
    if (v !== undefined && (!Array.isArray(v) || !v.every(isObject))) invalid(`${k} must be a list of objects`);
  }
  if (!Array.isArray(messages) || !messages.every((m) => isObject(m) && typeof m.role === 'string')) invalid('messages must be a list of { role, content } objects');
  const where = typeof source === 'string' ? source : source.dir;
  if (typeof source !== 'string' && (typeof source !== 'object' || source === null || typeof source.dir !== 'string')) invalid('applyChatTemplate takes a model or a folder path');
  const folder = typeof source === 'string' ? readTokenizerFolder(source) : tokenizerFolder(source);
  const template = compile(pickTemplate(folder, options, where), where);
  let chat = messages.map((m) => ({ ...m }));
  let finalText: string | null = null;
  if (options.continueFinalMessage) {
    const last = chat[chat.length - 1];
    if (!last || typeof last.content !== 'string') invalid('continueFinalMessage needs a last message with string content');
    finalText = last.content as string;
    chat = [...chat.slice(0, -1), { ...last, content: finalText + TAG }];
  }
  let text: string;
  try {
    text = template.render({
      ...folder.specialTokens,
      messages: chat,
      tools: options.tools ?? null,
      documents: options.documents ?? null,
      add_generation_prompt: options.addGenerationPrompt ?? false,
      ...options.variables,
    });
  } catch (err) {
    throw new InvalidInputError('ERR_INVALID_INPUT', `the chat template of ${where} refused the messages: ${(err as Error).message}`);
  }
  if (finalText === null) return text;
  // transformers: cut the text at the tag, so the final message stays open.
  const at = text.lastIndexOf(TAG.trim());
  if (at < 0 || !text.includes(finalText.trim())) invalid('continueFinalMessage: the template does not reproduce the final message');
  return text.startsWith(TAG, at) ? text.slice(0, at) : text.slice(0, at).trimEnd();
}
