// applyChatTemplate against transformers' apply_chat_template(..., tokenize=False) on the
// template folders of test/fixtures/analysis/chat (chat.json, from generate_analysis.py):
// ChatML with a default system turn, tools and a thinking switch; a list of named templates
// (default / tool_use) using bos_token, eos_token and raise_exception; a chat_template.jinja
// that overrides tokenizer_config.json; a folder with no template.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { applyChatTemplate, loadModel, type ChatMessage, type ChatTemplateOptions, type Model } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const DIR = join(ROOT, 'test', 'fixtures', 'analysis', 'chat');

interface ChatCase {
  folder: string;
  messages: ChatMessage[];
  kwargs: Record<string, unknown>;
  text?: string;
  error?: string;
}
const CASES = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'analysis', 'chat.json'), 'utf8')) as ChatCase[];

/** transformers' keyword arguments as options. */
function optionsOf(kwargs: Record<string, unknown>): ChatTemplateOptions {
  const { add_generation_prompt, continue_final_message, chat_template, tools, documents, ...variables } = kwargs;
  return {
    ...(add_generation_prompt !== undefined ? { addGenerationPrompt: add_generation_prompt as boolean } : {}),
    ...(continue_final_message !== undefined ? { continueFinalMessage: continue_final_message as boolean } : {}),
    ...(chat_template !== undefined ? { chatTemplate: chat_template as string } : {}),
    ...(tools !== undefined ? { tools: tools as Record<string, unknown>[] } : {}),
    ...(documents !== undefined ? { documents: documents as Record<string, unknown>[] } : {}),
    ...(Object.keys(variables).length ? { variables } : {}),
  };
}

describe('applyChatTemplate', () => {
  CASES.forEach((c, i) => {
    it(`case ${i}: ${c.folder} ${JSON.stringify(c.kwargs)}${c.error ? ' is refused' : ''}`, () => {
      const render = () => applyChatTemplate(join(DIR, c.folder), c.messages, optionsOf(c.kwargs));
      if (c.text !== undefined) {
        expect(render()).toBe(c.text);
        return;
      }
      const code = c.folder === 'none' ? 'ERR_NO_CHAT_TEMPLATE' : 'ERR_INVALID_INPUT';
      expect(render).toThrow(expect.objectContaining({ code }));
    });
  });

  it("reads a model's folder and the text tokenizes without adding special tokens", async () => {
    let model: Model | null = null;
    try {
      model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
      expect(() => applyChatTemplate(model!, [{ role: 'user', content: 'hi' }])).toThrow(expect.objectContaining({ code: 'ERR_NO_CHAT_TEMPLATE' }));
      const tpl = "{% for m in messages %}{{ eos_token }}{{ m['content'] }}{% endfor %}";
      const text = applyChatTemplate(model, [{ role: 'user', content: 'hi' }], { chatTemplate: tpl, variables: { eos_token: '<|endoftext|>' } });
      expect(text).toBe('<|endoftext|>hi');
      expect(model.tokenize(text, false)[0]![0]).toBe(383);
    } finally {
      model?.dispose();
    }
  });

  it('refuses bad options and templates with coded errors', () => {
    const chatml = join(DIR, 'chatml');
    const m = [{ role: 'user', content: 'hi' }];
    expect(() => applyChatTemplate(chatml, m, { addGenerationPrompt: 1 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_INPUT' }));
    expect(() => applyChatTemplate(chatml, [{ content: 'no role' }] as never)).toThrow(/role/);
    expect(() => applyChatTemplate(chatml, m, { addGenerationPrompt: true, continueFinalMessage: true })).toThrow(/exclude each other/);
    expect(() => applyChatTemplate(chatml, m, { chatTemplate: '{% for %}' })).toThrow(expect.objectContaining({ code: 'ERR_TOKENIZER_INVALID' }));
    expect(() => applyChatTemplate(join(DIR, 'multi'), m, { chatTemplate: 'nonexistent name' })).not.toThrow();  // a string that is no name is a template
    expect(() => applyChatTemplate(join(DIR, 'missing-folder'), m)).toThrow(expect.objectContaining({ code: 'ERR_NO_CHAT_TEMPLATE' }));
  });
});

describe('applyChatTemplate: several templates and no default', () => {
  let dir: string;
  beforeAll(async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    dir = mkdtempSync(join(tmpdir(), 'neurotap-chat-'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: [{ name: 'a', template: 'A' }, { name: 'b', template: 'B' }] }));
  });
  afterAll(async () => (await import('node:fs')).rmSync(dir, { recursive: true, force: true }));
  it('asks for a name, and renders the named one', () => {
    expect(() => applyChatTemplate(dir, [])).toThrow(/several chat templates and no default: pass options.chatTemplate, one of a, b/);
    expect(applyChatTemplate(dir, [], { chatTemplate: 'b' })).toBe('B');
  });
});
