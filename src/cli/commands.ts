// The CLI's one table of commands and flags: the parser (args.ts), the help and usage text
// (help.ts) and the suggestions all read it. README "CLI" documents the same.
// Tests: test/cli-usage.test.ts.

/** One flag of a command. */
export interface FlagDef {
  name: string;
  /** `boolean`: a switch; `int` / `number`: checked numbers (see min, max); `string`: anything, or one of `choices`. */
  type: 'string' | 'boolean' | 'int' | 'number';
  /** The value's placeholder in usage and help (`DIR`, `FILE.safetensors`). */
  arg?: string;
  /** The only values accepted (shown instead of `arg`). */
  choices?: readonly string[];
  /** The value used when the flag is not given, shown in help. */
  default?: string;
  /** Numbers: the smallest value accepted (`minExclusive`: values must exceed it). */
  min?: number;
  minExclusive?: boolean;
  /** Numbers: the largest value accepted. */
  max?: number;
  /** May be given more than once. */
  repeat?: boolean;
  /** Takes every following argument up to the next flag (`--input a.txt b.txt`); may be repeated. */
  multi?: boolean;
  required?: boolean;
  /** One line of help. */
  help: string;
}

/** One command: its flags and how its usage reads. */
export interface CommandDef {
  name: string;
  /** One line: what the command does. */
  summary: string;
  /** Usage lines after `neurotap NAME`; `{flag}` expands to the flag and its value from the table. */
  synopsis: readonly string[];
  flags: readonly FlagDef[];
  /** Positional arguments, as shown in usage (`DIR`, `OUT1 OUT2 ...`); none when absent. */
  positionals?: string;
}

const MODEL: FlagDef[] = [
  { name: 'model', type: 'string', arg: 'DIR', required: true, help: 'model folder (config.json, *.safetensors, tokenizer.json) or hub id ORG/NAME[@REV] in the local Hugging Face cache' },
  { name: 'dtype', type: 'string', choices: ['f32', 'f16', 'bf16'], default: 'f32', help: "weight dtype ('f16' is CUDA only)" },
  {
    name: 'compute',
    type: 'string',
    choices: ['f32', 'bf16'],
    help: "GEMM arithmetic: 'bf16' rounds each matrix product's inputs to bf16 (needs --dtype bf16; default: the weight dtype's exact f32 arithmetic)",
  },
  { name: 'device', type: 'string', choices: ['cpu', 'cuda', 'auto'], default: 'cpu', help: "compute device ('auto': the GPU when it works, else the CPU)" },
  { name: 'threads', type: 'int', min: 1, arg: 'N', help: 'worker threads for the forward pass (default: every core)' },
];

const STEERING: FlagDef[] = [
  {
    name: 'steer',
    type: 'string',
    arg: '[HOOK=]FILE.safetensors[#TENSOR][:SCALE]',
    repeat: true,
    help: 'add SCALE (default 1) x a steering vector: HOOK=FILE its one tensor (or #TENSOR) at HOOK; FILE alone each tensor at the hook it is named after',
  },
  { name: 'control-vector', type: 'string', arg: 'FILE.gguf[:SCALE]', repeat: true, help: 'add a llama.cpp control vector (direction.N at blocks.N.hook_resid_post)' },
];

const SAE: FlagDef[] = [
  { name: 'sae', type: 'string', arg: 'DIR', help: 'attach the SAE in DIR (SAELens or Gemma Scope layout); its hooks can be captured' },
  { name: 'sae-hook', type: 'string', arg: 'HOOK', help: "the hook to attach the SAE at (default: the one its config names)" },
  { name: 'sae-error-term', type: 'boolean', help: "keep the SAE's reconstruction error, so the model's output is unchanged unless features are edited" },
  { name: 'feature-clamp', type: 'string', arg: 'I=V', repeat: true, help: 'set SAE feature I to V' },
  { name: 'feature-steer', type: 'string', arg: 'I=S', repeat: true, help: 'add S to SAE feature I' },
  { name: 'feature-zero', type: 'string', arg: 'I', repeat: true, help: 'zero SAE feature I' },
];

const TOKENS_HELP = 'token ids as JSON (one array, or an array of arrays), or @FILE.json';

const METRIC: FlagDef[] = [
  { name: 'metric', type: 'string', arg: 'logit:ID|logit-diff:A,B|log-prob:ID|loss', required: true, help: 'the scalar to differentiate (summed over rows; loss: mean next-token cross-entropy)' },
  { name: 'position', type: 'string', arg: 'last|N', help: 'where logit, logit-diff and log-prob are read: last (the default) or N (negative counts from the end)' },
  { name: 'hooks', type: 'string', arg: 'NAME_OR_GLOB', multi: true, required: true, help: 'hooks to write gradients or scores for' },
  { name: 'out', type: 'string', arg: 'FILE.safetensors', required: true, help: 'output file (float32 safetensors)' },
];

/** Every command, in the order `neurotap --help` lists them. */
export const COMMANDS: readonly CommandDef[] = [
  {
    name: 'run',
    summary: 'run a forward pass: print a summary, or write logits and captured activations',
    synopsis: [
      '{model} ({tokens} | {text})',
      '[{capture}]... [{steer}]...',
      '[{control-vector}]... [{dtype}] [{compute}] [{device}]',
      '[{sae} [{sae-hook}] [{sae-error-term}] [{feature-clamp}]...',
      ' [{feature-steer}]... [{feature-zero}]...]',
      '[{threads}] [{out}]',
    ],
    flags: [
      ...MODEL,
      { name: 'tokens', type: 'string', arg: 'JSON|@FILE.json', help: TOKENS_HELP },
      { name: 'text', type: 'string', arg: 'STR', help: 'input text (tokenized with the model tokenizer)' },
      { name: 'capture', type: 'string', arg: 'NAME_OR_GLOB', repeat: true, help: 'capture the activations of these hooks' },
      { name: 'out', type: 'string', arg: 'FILE.safetensors', help: 'write logits and captures (float32) instead of printing a summary' },
      ...STEERING,
      ...SAE,
    ],
  },
  {
    name: 'generate',
    summary: 'generate tokens (greedy or sampled), optionally steered; prints JSON',
    synopsis: [
      '{model} ({text} | {tokens})',
      '{max-new-tokens} [{temperature}] [{top-k}] [{top-p}] [{seed}]',
      '[{stop-token}]... [--steer ...]... [--control-vector ...]... [--sae ...] [{stream}]',
    ],
    flags: [
      ...MODEL,
      { name: 'text', type: 'string', arg: 'STR', help: 'prompt text' },
      { name: 'tokens', type: 'string', arg: 'JSON|@FILE.json', help: `${TOKENS_HELP}; rows of different lengths are left-padded` },
      { name: 'max-new-tokens', type: 'int', min: 1, arg: 'N', required: true, help: 'tokens to generate per prompt' },
      { name: 'temperature', type: 'number', min: 0, arg: 'T', default: '0', help: 'sampling temperature (0: greedy)' },
      { name: 'top-k', type: 'int', min: 0, arg: 'K', help: 'sample from the K most likely tokens only (0: all)' },
      { name: 'top-p', type: 'number', min: 0, minExclusive: true, max: 1, arg: 'P', help: 'sample from the smallest set of tokens with probability >= P' },
      { name: 'seed', type: 'int', min: 0, arg: 'S', help: 'random seed for sampling' },
      { name: 'stop-token', type: 'int', arg: 'ID', repeat: true, help: 'stop a row when it generates this id' },
      { name: 'stream', type: 'boolean', help: 'print one JSON line per step as tokens arrive, then the result' },
      ...STEERING,
      ...SAE,
    ],
  },
  {
    name: 'grad',
    summary: 'write d metric / d activation at hooks (float32 safetensors)',
    synopsis: ['{model} ({text} | {tokens})', '{metric} [{position}]', '{hooks} {out}'],
    flags: [
      ...MODEL,
      { name: 'text', type: 'string', arg: 'STR', help: 'input text' },
      { name: 'tokens', type: 'string', arg: 'JSON|@FILE.json', help: `${TOKENS_HELP}; rows of different lengths are left-padded` },
      ...METRIC,
    ],
  },
  {
    name: 'attribute',
    summary: 'write attribution-patching scores per hook (float32 safetensors)',
    synopsis: ['{model} ({clean} | {clean-tokens}) ({corrupted} | {corrupted-tokens})', '{metric} [{position}]', '{hooks} {out}'],
    flags: [
      ...MODEL,
      { name: 'clean', type: 'string', arg: 'STR', help: 'clean input text' },
      { name: 'clean-tokens', type: 'string', arg: 'JSON', help: 'clean input token ids' },
      { name: 'corrupted', type: 'string', arg: 'STR', help: 'corrupted input text' },
      { name: 'corrupted-tokens', type: 'string', arg: 'JSON', help: 'corrupted input token ids' },
      ...METRIC,
    ],
  },
  {
    name: 'steer-train',
    summary: 'build steering vectors from contrastive pairs',
    synopsis: ['{model} {pairs} {layers} [{method}]', '{out}'],
    flags: [
      ...MODEL,
      { name: 'pairs', type: 'string', arg: 'FILE.jsonl', required: true, help: 'JSON lines {"positive": TEXT_OR_IDS, "negative": TEXT_OR_IDS}' },
      { name: 'layers', type: 'string', arg: 'A-B|A,B,C|A', required: true, help: 'layers whose blocks.N.hook_resid_post gets a vector' },
      { name: 'method', type: 'string', choices: ['mean', 'pca'], default: 'mean', help: 'mean difference or first principal component of the differences' },
      {
        name: 'out',
        type: 'string',
        arg: 'FILE.safetensors|FILE.gguf',
        required: true,
        help: 'safetensors (one tensor per hook, named by the hook) or a llama.cpp control vector, by the extension',
      },
    ],
  },
  {
    name: 'serve',
    summary: 'serve the model over HTTP: OpenAI-compatible completions with per-request steering, runs, SAE features, metrics',
    synopsis: [
      '{model} [{host}] [{port}] [{api-key}]',
      '[{max-batch}] [{max-queue}] [{capacity}] [{body-limit}]',
      '[{sae} [{sae-hook}]]... [{sae-error-term}] [{vector}]...',
      '[{dtype}] [{compute}] [{device}] [{threads}]',
    ],
    flags: [
      ...MODEL,
      { name: 'host', type: 'string', arg: 'ADDR', default: '127.0.0.1', help: 'address to listen on (0.0.0.0: every interface)' },
      { name: 'port', type: 'int', min: 0, max: 65535, arg: 'N', default: '8080', help: 'port to listen on (0: any free port)' },
      { name: 'api-key', type: 'string', arg: 'KEY', help: 'require "Authorization: Bearer KEY" on every route but /health (default: $NEUROTAP_API_KEY, else none)' },
      { name: 'max-batch', type: 'int', min: 1, arg: 'N', default: '16', help: 'generation requests decoded together at most' },
      { name: 'max-queue', type: 'int', min: 0, arg: 'N', default: '256', help: 'generation requests waiting beyond this many get 503 with Retry-After' },
      { name: 'capacity', type: 'int', min: 2, arg: 'N', help: "positions a generation request may use, prompt + max_tokens (default: the model's context, at most 2048)" },
      { name: 'body-limit', type: 'int', min: 1, arg: 'BYTES', default: String(16 << 20), help: 'largest request body (413 beyond)' },
      { name: 'sae', type: 'string', arg: 'DIR', repeat: true, help: 'attach the SAE in DIR (SAELens or Gemma Scope layout) for neurotap.features and /v1/features' },
      { name: 'sae-hook', type: 'string', arg: 'HOOK', repeat: true, help: "the hook the preceding --sae attaches at (default: the one its config names)" },
      { name: 'sae-error-term', type: 'boolean', help: "keep each SAE's reconstruction error, so outputs change only where features are edited" },
      { name: 'vector', type: 'string', arg: 'NAME=FILE.safetensors', repeat: true, help: 'a steering vector requests may name (neurotap.steering[].name)' },
    ],
  },
  {
    name: 'extract',
    summary: 'write activations over a corpus to resumable safetensors shards',
    synopsis: [
      '{model} ({input} [{whole-file} | {text-field}] | {tokens})',
      '{hooks} {seq-len} {out} [{batch-size} | {max-memory}]',
      '[{stop-at-layer}] [{max-tokens}] [{out-dtype}] [{pad-last}] [{no-pack}]',
      '[{shard}] [{shard-size}] [{overwrite}] [{quiet}]',
      '[{device}] [{dtype}] [{compute}] [{threads}]',
    ],
    flags: [
      ...MODEL,
      { name: 'input', type: 'string', arg: 'FILE', multi: true, help: 'text files: a document per line (or per file with --whole-file), or JSONL with --text-field' },
      { name: 'whole-file', type: 'boolean', help: 'each --input file is one document' },
      { name: 'text-field', type: 'string', arg: 'F', help: 'the --input files are JSONL; documents are the string field F' },
      { name: 'tokens', type: 'string', arg: 'FILE.jsonl', multi: true, help: 'pre-tokenized input: a JSON array of ids per line' },
      { name: 'hooks', type: 'string', arg: 'NAME_OR_GLOB', multi: true, required: true, help: 'hooks to write' },
      { name: 'seq-len', type: 'int', min: 1, arg: 'N', required: true, help: 'tokens per sequence' },
      { name: 'out', type: 'string', arg: 'DIR', required: true, help: 'output folder (shard-NNNNN.safetensors and manifest.json)' },
      { name: 'batch-size', type: 'int', min: 1, arg: 'B', help: 'sequences per forward (default 8)' },
      { name: 'max-memory', type: 'string', arg: 'SIZE', help: 'derive the batch size from a memory budget (4GB, 512MiB)' },
      { name: 'stop-at-layer', type: 'int', min: 0, arg: 'N', help: 'run blocks 0..N-1 only' },
      { name: 'max-tokens', type: 'int', min: 1, arg: 'N', help: 'stop after N tokens, rounded up to whole sequences' },
      { name: 'out-dtype', type: 'string', choices: ['f32', 'f16', 'bf16'], default: 'f32', help: 'dtype of the activations written' },
      { name: 'pad-last', type: 'boolean', help: 'keep the trailing partial window, right-padded with id 0' },
      { name: 'no-pack', type: 'boolean', help: 'one sequence per document, truncated or right-padded' },
      { name: 'shard', type: 'string', arg: 'I/N', help: 'take windows whose number mod N is I (one of N independent runs)' },
      { name: 'shard-size', type: 'int', min: 1, arg: 'SEQS', help: 'sequences per shard file (default: about 256 MiB)' },
      { name: 'overwrite', type: 'boolean', help: "replace an output folder holding another run's output" },
      { name: 'quiet', type: 'boolean', help: 'no progress and no summary' },
    ],
  },
  {
    name: 'merge',
    summary: 'write one manifest for the outputs of several --shard runs',
    synopsis: ['OUT1 OUT2 ... {out} [{overwrite}]'],
    positionals: 'OUT1 OUT2 ...',
    flags: [
      { name: 'out', type: 'string', arg: 'DIR', required: true, help: 'folder for the merged manifest (shards are not copied)' },
      { name: 'overwrite', type: 'boolean', help: 'replace an existing manifest in --out' },
    ],
  },
  { name: 'verify', summary: "re-hash every shard of an extract output against its manifest", synopsis: ['DIR'], positionals: 'DIR', flags: [] },
  {
    name: 'tokenize',
    summary: 'print the token ids of a text as JSON',
    synopsis: ['{model} {text}'],
    flags: [...MODEL, { name: 'text', type: 'string', arg: 'STR', required: true, help: 'text to tokenize' }],
  },
  { name: 'hooks', summary: "list the model's hooks with their shapes", synopsis: ['{model}'], flags: MODEL },
  {
    name: 'build-cuda',
    summary: 'build the CUDA backend next to the installed addon (nvcc and cuBLAS needed)',
    synopsis: ['[{arch}] [{out}] [{nvcc}] [{cublas-include} {cublas-lib}]'],
    flags: [
      { name: 'arch', type: 'string', arg: '90,80', help: "compute capabilities to build for (default: this machine's GPUs, else 80,86,89,90)" },
      { name: 'out', type: 'string', arg: 'DIR', help: "where to write libneurotap_cuda.so (default: the addon's folder)" },
      { name: 'nvcc', type: 'string', arg: 'PATH', help: 'the nvcc to use (default: $NVCC, $CUDA_HOME/bin, PATH, /usr/local/cuda/bin)' },
      { name: 'cublas-include', type: 'string', arg: 'DIR', help: 'folder holding cublasLt.h' },
      { name: 'cublas-lib', type: 'string', arg: 'DIR', help: 'folder holding libcublasLt.so' },
    ],
  },
];

/** The command named `name`, if any. */
export function findCommand(name: string): CommandDef | undefined {
  return COMMANDS.find((c) => c.name === name);
}
