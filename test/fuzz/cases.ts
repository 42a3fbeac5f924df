// Fuzz cases: a case id `<kind>:<n>` picks a committed fixture from test/fixtures and mutates
// one of its files (or replaces it with a directory, FIFO or symlink) in a fresh folder. The
// same id always builds the same bytes. Unmutated files are symlinked to the fixtures.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { mutateBytes } from './bytes.js';
import { buildCall, type Call } from './calls.js';
import { mutateGguf } from './gguf-mutate.js';
import { mutateJson, parseJson, stringify, type JsonMutateOptions } from './json-mutate.js';
import { mutateNpz } from './npz-mutate.js';
import { Rng } from './rng.js';
import { mutateSafetensors } from './safetensors-mutate.js';

export const KINDS = ['config', 'weights', 'shards', 'tokenizer', 'folder', 'gguf', 'sae-cfg', 'sae-weights', 'npz', 'call'] as const;
/** Kinds outside the default round-robin, run in their own bounded share (test/fuzz.test.ts). */
export const EXTRA_KINDS = ['backward'] as const;
/** Cases that misbehave on purpose (`selftest:hang`), to check the supervisor's bounds. */
export const SELFTESTS = ['hang', 'alloc', 'crash', 'uncoded'] as const;
export type Kind = (typeof KINDS)[number] | (typeof EXTRA_KINDS)[number] | 'selftest';

/** What the worker calls for a case. */
export type Target =
  | { api: 'model'; dir: string }
  | { api: 'sae'; path: string; hook?: string; model: string }
  | { api: 'gguf'; path: string; controlVector: boolean }
  | { api: 'call'; call: Call; model: string }
  /** A backward pass planned against the loaded model (test/fuzz/backward-calls.ts) from the case id. */
  | { api: 'backward'; model: string }
  | { api: 'selftest'; behaviour: (typeof SELFTESTS)[number] };

export interface BuiltCase {
  id: string;
  kind: Kind;
  target: Target;
  /** The fixture and the mutation, in words. */
  what: string;
}

const MODELS = ['gemma2', 'gemma3-text', 'gemma3-text-linear', 'gpt2', 'gpt2-prefixed-bf16', 'llama-gqa', 'llama3-classic-bf16', 'llama3-mqa-sharded-f16', 'mistral', 'pythia-parallel', 'pythia-serial', 'qwen2', 'qwen3'];
const SHARDED = 'llama3-mqa-sharded-f16';
const SAELENS = ['gpt2-gated-v6', 'gpt2-hookz-v6', 'gpt2-jumprelu-flat', 'gpt2-standard-avg', 'gpt2-standard-v6', 'gpt2-topk-v6'];
/** Gemma Scope files name no hook: the one test/fixtures/sae/cases.json records. */
const GEMMASCOPE = { dir: 'llama-gemmascope', model: 'llama-gqa', hook: 'blocks.1.hook_resid_post' };
/** Files of a model folder the loader reads (the fixtures' references are not part of a model). */
const MODEL_FILE = /^(config\.json|tokenizer\.json|model.*\.safetensors(\.index\.json)?)$/;

const CONFIG: JsonMutateOptions = {
  keys: ['architectures', 'model_type', 'num_hidden_layers', 'n_layer', 'hidden_size', 'n_embd', 'intermediate_size', 'n_inner', 'num_attention_heads', 'n_head', 'num_key_value_heads', 'head_dim', 'vocab_size', 'max_position_embeddings', 'n_positions', 'n_ctx', 'rope_theta', 'rope_scaling', 'rotary_pct', 'rotary_emb_base', 'partial_rotary_factor', 'sliding_window', 'layer_types', 'tie_word_embeddings', 'hidden_act', 'activation_function', 'layer_norm_eps', 'layer_norm_epsilon', 'rms_norm_eps', 'attn_logit_softcapping', 'final_logit_softcapping', 'query_pre_attn_scalar', 'use_parallel_residual', 'torch_dtype', 'bos_token_id', 'eos_token_id', 'sliding_window_pattern', 'rope_local_base_freq', 'use_sliding_window', 'max_window_layers', 'attention_bias', 'mlp_bias', 'text_config'],
  strings: ['gpt2', 'llama', 'mistral', 'qwen2', 'qwen3', 'gpt_neox', 'gemma2', 'gemma3_text', 'gemma3', 'bert', 'GPT2LMHeadModel', 'LlamaForCausalLM', 'GPTNeoXForCausalLM', 'gelu', 'gelu_new', 'silu', 'relu', 'gelu_pytorch_tanh', 'tanh', 'sliding_attention', 'full_attention', 'llama3', 'linear', 'dynamic', 'yarn', 'default', 'float32', 'bfloat16', 'float16'],
  numbers: 0.4,
};
const TOKENIZER: JsonMutateOptions = {
  keys: ['model', 'pre_tokenizer', 'decoder', 'normalizer', 'post_processor', 'added_tokens', 'vocab', 'merges', 'type', 'byte_fallback', 'unk_token', 'continuing_subword_prefix', 'truncation', 'padding'],
  strings: ['BPE', 'WordPiece', 'Unigram', 'WordLevel', 'ByteLevel', 'Sequence', 'Split', 'Metaspace', 'TemplateProcessing', 'NFC', 'Lowercase', '<unk>', '<|endoftext|>', 'Ġ', 'Ġthe'],
  shallow: 0.5,
};
const INDEX: JsonMutateOptions = {
  keys: ['weight_map', 'metadata', 'total_size', 'model.embed_tokens.weight', 'lm_head.weight'],
  strings: ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', '../model-00001-of-00003.safetensors', 'missing.safetensors', 'config.json', '.', '/dev/zero', '/etc/passwd'],
  shallow: 0.3,
};
const SAE_CFG: JsonMutateOptions = {
  keys: ['architecture', 'd_in', 'd_sae', 'dtype', 'device', 'apply_b_dec_to_input', 'normalize_activations', 'reshape_activations', 'k', 'rescale_acts_by_decoder_norm', 'metadata', 'hook_name', 'hook_point', 'activation_fn_str', 'activation_fn_kwargs', 'finetuning_scaling_factor', 'hook_point_layer', 'hook_head_index', 'hook_point_head_index'],
  numbers: 0.25,
  strings: ['standard', 'jumprelu', 'topk', 'gated', 'batchtopk', 'matryoshka', 'none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm', 'hook_z', 'float32', 'float16', 'bfloat16', 'torch.float32', 'torch.bfloat16', 'int8', 'relu', 'tanh-relu', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_pre', 'blocks.0.attn.hook_z', 'blocks.99.hook_resid_post', 'blocks.0.hook_mlp_out', 'hook_embed', 'blocks.0.attn.hook_pattern', 'blocks.0.hook_resid_post.hook_sae_input'],
};

/** Parses `<kind>:<n>` (or `selftest:<behaviour>`); throws on anything else. */
export function parseCaseId(id: string): { kind: Kind; n: number } {
  const self = /^selftest:([a-z]+)$/.exec(id);
  if (self && (SELFTESTS as readonly string[]).includes(self[1]!)) return { kind: 'selftest', n: 0 };
  const m = /^([a-z-]+):(\d+)$/.exec(id);
  const kinds: readonly string[] = [...KINDS, ...EXTRA_KINDS];
  if (!m || !kinds.includes(m[1]!)) throw new Error(`bad case id '${id}' (expected <kind>:<n>, kinds ${kinds.join(', ')})`);
  return { kind: m[1] as Kind, n: Number(m[2]) };
}

/** A JSON file mutated JSON-aware (mostly) or byte-wise. */
function mutateJsonFile(rng: Rng, text: string, opts: JsonMutateOptions): { buf: Buffer; what: string } {
  if (rng.chance(0.2)) return mutateBytes(rng, Buffer.from(text, 'utf8'));
  const r = mutateJson(rng, parseJson(text), opts);
  let buf: Buffer = Buffer.from(stringify(r.root, rng.chance(0.5) ? 2 : 0), 'utf8');
  let what = r.what.join(', ');
  if (rng.chance(0.1)) {
    const b = mutateBytes(rng, buf);
    buf = b.buf;
    what += `, ${b.what}`;
  }
  return { buf, what };
}

/** Copies the folder `from` into `to` as symlinks to its files (those `keep` accepts). */
function linkFolder(from: string, to: string, keep: (name: string) => boolean): string[] {
  mkdirSync(to, { recursive: true });
  const names = readdirSync(from).filter(keep).sort();
  for (const n of names) symlinkSync(join(from, n), join(to, n));
  return names;
}

/** Replaces `path` with something that is not a readable regular file. */
function replaceSpecial(rng: Rng, path: string): string {
  rmSync(path, { force: true });
  const kind = rng.pick(['directory', 'fifo', 'symlink-loop', 'self-symlink', 'dangling-symlink', 'empty', 'missing', '/dev/null', '/dev/zero', 'symlink-to-dir']);
  switch (kind) {
    case 'directory':
      mkdirSync(path);
      break;
    case 'fifo':
      execFileSync('mkfifo', [path]);
      break;
    case 'symlink-loop':
      symlinkSync(path + '.loop', path);
      symlinkSync(path, path + '.loop');
      break;
    case 'self-symlink':
      symlinkSync(path, path);
      break;
    case 'dangling-symlink':
      symlinkSync(path + '.missing', path);
      break;
    case 'empty':
      writeFileSync(path, '');
      break;
    case 'missing':
      break;
    case 'symlink-to-dir':
      symlinkSync('.', path);
      break;
    default:
      symlinkSync(kind, path);
  }
  return kind;
}

/** Builds case `id` under `work` (an empty folder) from the fixtures in `fixtures` (test/fixtures). */
export function buildCase(id: string, fixtures: string, work: string): BuiltCase {
  const { kind } = parseCaseId(id);
  const rng = new Rng(id);
  mkdirSync(work, { recursive: true });
  const models = join(fixtures, 'models');
  const saes = join(fixtures, 'sae');
  const modelDir = join(work, 'model');
  const model = (base: string, file: string | null, mutate?: (buf: Buffer) => { buf: Buffer; what: string }): BuiltCase => {
    linkFolder(join(models, base), modelDir, (n) => MODEL_FILE.test(n) && n !== file);
    let what = base;
    if (file && mutate) {
      const r = mutate(readFileSync(join(models, base, file)));
      writeFileSync(join(modelDir, file), r.buf);
      what += `/${file}: ${r.what}`;
    }
    return { id, kind, target: { api: 'model', dir: modelDir }, what };
  };
  const saelens = (file: 'cfg.json' | 'sae_weights.safetensors', mutate: (buf: Buffer) => { buf: Buffer; what: string }): BuiltCase => {
    const base = rng.pick(SAELENS);
    const dir = join(work, 'sae');
    linkFolder(join(saes, base), dir, (n) => n !== file);
    const r = mutate(readFileSync(join(saes, base, file)));
    writeFileSync(join(dir, file), r.buf);
    return { id, kind, target: { api: 'sae', path: dir, model: join(models, 'gpt2') }, what: `${base}/${file}: ${r.what}` };
  };

  switch (kind) {
    case 'selftest':
      return { id, kind, target: { api: 'selftest', behaviour: id.slice('selftest:'.length) as (typeof SELFTESTS)[number] }, what: 'misbehaves on purpose' };
    case 'config':
      return model(rng.pick(MODELS), 'config.json', (b) => mutateJsonFile(rng, b.toString('utf8'), CONFIG));
    case 'weights': {
      const base = rng.pick(MODELS.filter((m) => m !== SHARDED));
      return model(base, 'model.safetensors', (b) => mutateSafetensors(rng, b));
    }
    case 'shards': {
      const file = rng.pick(['model.safetensors.index.json', 'model.safetensors.index.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
      return model(SHARDED, file, (b) => (file.endsWith('.json') ? mutateJsonFile(rng, b.toString('utf8'), INDEX) : mutateSafetensors(rng, b)));
    }
    case 'tokenizer':
      return model('gpt2', 'tokenizer.json', (b) => mutateJsonFile(rng, b.toString('utf8'), TOKENIZER));
    case 'folder':
      return specialFile(rng, id, work, fixtures);
    case 'call': {
      const dir = join(models, 'gpt2');
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { vocab_size: number; n_layer: number };
      const call = buildCall(rng, cfg.vocab_size, cfg.n_layer);
      return { id, kind, target: { api: 'call', call, model: dir }, what: `gpt2: ${call.what} (must ${call.expect === 'coded' ? 'fail with a coded error' : call.expect === 'thrown' ? 'reject with the thrown value' : 'succeed or fail coded'})` };
    }
    case 'backward': {
      const base = rng.pick(MODELS);
      return { id, kind, target: { api: 'backward', model: join(models, base) }, what: `${base}: backward options planned on the loaded model` };
    }
    case 'gguf': {
      const base = rng.weighted([['control-vector.gguf', 3], ['kv-types.gguf', 1]] as const);
      const path = join(work, base);
      const src = readFileSync(join(fixtures, 'steering', base));
      const r = rng.chance(0.8) ? mutateGguf(rng, src) : mutateBytes(rng, src, { lo: 0, hi: 512 });
      let buf = r.buf;
      let what = `${base}: ${r.what}`;
      if (rng.chance(0.2)) {
        const s = mutateGguf(rng, buf);
        buf = s.buf;
        what += `, ${s.what}`;
      }
      writeFileSync(path, buf);
      return { id, kind, target: { api: 'gguf', path, controlVector: base === 'control-vector.gguf' }, what };
    }
    case 'sae-cfg':
      return saelens('cfg.json', (b) => mutateJsonFile(rng, b.toString('utf8'), SAE_CFG));
    case 'sae-weights':
      return saelens('sae_weights.safetensors', (b) => mutateSafetensors(rng, b));
    case 'npz': {
      const dir = join(work, 'sae');
      mkdirSync(dir);
      const r = mutateNpz(rng, readFileSync(join(saes, GEMMASCOPE.dir, 'params.npz')));
      writeFileSync(join(dir, 'params.npz'), r.buf);
      const path = rng.chance(0.5) ? dir : join(dir, 'params.npz');
      return { id, kind, target: { api: 'sae', path, hook: GEMMASCOPE.hook, model: join(models, GEMMASCOPE.model) }, what: `params.npz: ${r.what}` };
    }
  }
}

/** A model or SAE folder where one file (or the folder itself) is not a readable regular file. */
function specialFile(rng: Rng, id: string, work: string, fixtures: string): BuiltCase {
  const where = rng.weighted([['model', 6], ['sae', 2], ['npz', 1], ['folder', 1]] as const);
  if (where === 'model' || where === 'folder') {
    const base = rng.weighted([['gpt2', 3], [SHARDED, 2], [rng.pick(MODELS), 2]] as const);
    const dir = join(work, 'model');
    const names = linkFolder(join(fixtures, 'models', base), dir, (n) => MODEL_FILE.test(n));
    const victim = where === 'folder' ? dir : join(dir, rng.pick(names));
    if (where === 'folder') rmSync(dir, { recursive: true });
    const how = replaceSpecial(rng, victim);
    return { id, kind: 'folder', target: { api: 'model', dir }, what: `${base}/${where === 'folder' ? '' : victim.slice(dir.length + 1)} -> ${how}` };
  }
  if (where === 'sae') {
    const base = rng.pick(SAELENS);
    const dir = join(work, 'sae');
    const names = linkFolder(join(fixtures, 'sae', base), dir, () => true);
    const file = rng.pick(names);
    const how = replaceSpecial(rng, join(dir, file));
    return { id, kind: 'folder', target: { api: 'sae', path: dir, model: join(fixtures, 'models', 'gpt2') }, what: `${base}/${file} -> ${how}` };
  }
  const dir = join(work, 'sae');
  mkdirSync(dir);
  const how = replaceSpecial(rng, join(dir, 'params.npz'));
  const path = rng.chance(0.5) ? dir : join(dir, 'params.npz');
  return { id, kind: 'folder', target: { api: 'sae', path, hook: GEMMASCOPE.hook, model: join(fixtures, 'models', GEMMASCOPE.model) }, what: `${GEMMASCOPE.dir}/params.npz -> ${how}` };
}
