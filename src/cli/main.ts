// The neurotap CLI: run, generate, grad, attribute, steer-train, extract, merge, verify, tokenize, hooks, build-cuda. Its flags
// and output formats are a contract for scripts and other languages (README "CLI");
// test/cli.test.ts and test/cli-errors.test.ts run it as a subprocess.
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { loadModel, type HookMap, type Model } from '../model/Model.js';
import { one, parseArgs, required, UsageError, type FlagSpec } from './args.js';
import { parseTokenRows, runGenerate, runSteerTrain } from './generate.js';
import { runExtract, runMerge, runVerify } from './extract.js';
import { asCodedError, checkOutputFile, writeOutputFile } from './io.js';
import { steeringFromFlags } from './steering-flags.js';
import { SAE_FLAGS, saeFromFlags } from './sae-flags.js';
import { mergeHooks } from '../steering/steer.js';
import { runBuildCuda } from './build-cuda.js';
import { ATTRIBUTE_FLAGS, GRAD_FLAGS, metricFromFlags, runAttribute, runGrad } from './grad.js';

const USAGE = `usage:
  neurotap run --model DIR (--tokens JSON | --tokens @FILE.json | --text STR)
               [--capture NAME_OR_GLOB]... [--steer HOOK=FILE.safetensors[:SCALE]]...
               [--control-vector FILE.gguf[:SCALE]]... [--dtype f32] [--device cpu]
               [--sae DIR [--sae-hook HOOK] [--sae-error-term] [--feature-clamp I=V]...
                [--feature-steer I=S]... [--feature-zero I]...]
               [--threads N] [--out FILE.safetensors]
  neurotap generate --model DIR (--text STR | --tokens JSON | --tokens @FILE.json)
               --max-new-tokens N [--temperature T] [--top-k K] [--top-p P] [--seed S]
               [--stop-token ID]... [--steer ...]... [--control-vector ...]... [--sae ...] [--stream]
  neurotap grad --model DIR (--text STR | --tokens JSON | --tokens @FILE.json)
               --metric logit:ID|logit-diff:A,B|log-prob:ID|loss [--position last|N]
               --hooks NAME_OR_GLOB... --out FILE.safetensors
  neurotap attribute --model DIR (--clean STR | --clean-tokens JSON) (--corrupted STR | --corrupted-tokens JSON)
               --metric logit:ID|logit-diff:A,B|log-prob:ID|loss [--position last|N]
               --hooks NAME_OR_GLOB... --out FILE.safetensors
  neurotap steer-train --model DIR --pairs FILE.jsonl --layers A-B --method mean|pca
               --out FILE.safetensors|FILE.gguf
  neurotap extract --model DIR (--input FILE... [--whole-file | --text-field F] | --tokens FILE.jsonl...)
               --hooks NAME_OR_GLOB... --seq-len N --out DIR [--batch-size B | --max-memory SIZE]
               [--stop-at-layer N] [--max-tokens N] [--out-dtype f32|f16|bf16] [--pad-last] [--no-pack]
               [--shard I/N] [--shard-size SEQS] [--overwrite] [--quiet] [--device cpu] [--dtype f32]
  neurotap merge OUT1 OUT2 ... --out DIR [--overwrite]
  neurotap verify DIR
  neurotap tokenize --model DIR --text STR
  neurotap hooks --model DIR
  neurotap build-cuda [--arch 90,80] [--out DIR] [--nvcc PATH] [--cublas-include DIR --cublas-lib DIR]`;

const COMMON: Record<string, FlagSpec> = {
  model: { value: true },
  dtype: { value: true },
  device: { value: true },
  threads: { value: true },
};

const STEERING: Record<string, FlagSpec> = {
  steer: { value: true, repeat: true },
  'control-vector': { value: true, repeat: true },
};

async function openModel(args: ReturnType<typeof parseArgs>): Promise<Model> {
  const dtype = one(args, 'dtype') ?? 'f32';
  const device = one(args, 'device') ?? 'cpu';
  const threads = one(args, 'threads');
  return loadModel(required(args, 'model'), {
    dtype: dtype as 'f32',
    device: device as 'cpu',
    ...(threads !== undefined ? { threads: Number(threads) } : {}),
  });
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

async function cmdRun(argv: string[]): Promise<void> {
  const args = parseArgs(argv, { ...COMMON, ...STEERING, ...SAE_FLAGS, tokens: { value: true }, text: { value: true }, capture: { value: true, repeat: true }, out: { value: true } });
  const tokensSpec = one(args, 'tokens');
  const text = one(args, 'text');
  if ((tokensSpec === undefined) === (text === undefined)) throw new UsageError('give exactly one of --tokens and --text');
  const out = one(args, 'out');
  if (out) checkOutputFile(out);
  const model = await openModel(args);
  try {
    const input = tokensSpec !== undefined ? parseTokenRows(tokensSpec) : text!;
    const features = await saeFromFlags(model, args.flags);
    const hooks = mergeHooks(features as HookMap, steeringFromFlags(model, args.flags.get('steer') ?? [], args.flags.get('control-vector') ?? []));
    const result = await model.run(input, { capture: args.flags.get('capture') ?? [], hooks });
    if (out) {
      const tensors = new Map<string, TensorToWrite>();
      tensors.set('logits', result.logits!);
      for (const [name, t] of result.cache) tensors.set(name, t);
      writeOutputFile(out, () => writeSafetensors(out, tensors, { format: 'pt', producer: 'neurotap', model: model.dir }));
      process.stdout.write(`wrote ${tensors.size} tensors to ${out}\n`);
      return;
    }
    printSummary(model, result.tokens, result.logits!, result.cache);
  } finally {
    model.dispose();
  }
}

function printSummary(model: Model, tokens: number[][], logits: NonNullable<Awaited<ReturnType<Model['run']>>['logits']>, cache: Map<string, { shape: readonly number[]; data: Float32Array }>): void {
  const [batch, pos, vocab] = logits.shape as [number, number, number];
  const lines: string[] = [];
  lines.push(`model: ${model.dir} (${model.config.architecture}, ${model.config.nLayers} layers, d_model ${model.config.dModel})`);
  lines.push(`tokens: ${fmtShape([batch, pos])}`);
  lines.push(`logits: ${fmtShape(logits.shape)}`);
  for (const [name, t] of cache) {
    let sum = 0;
    for (const v of t.data) if (Number.isFinite(v)) sum += v * v;
    lines.push(`${name}: ${fmtShape(t.shape)} rms=${Math.sqrt(sum / t.data.length).toPrecision(4)}`);
  }
  for (let b = 0; b < batch; b++) {
    const row = logits.data.subarray((b * pos + pos - 1) * vocab, (b * pos + pos) * vocab);
    // log-softmax for probabilities of the top tokens at the last position
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    const top = [...row.keys()].sort((i, j) => row[j]! - row[i]!).slice(0, 5);
    const parts = top.map((id) => {
      const p = Math.exp(row[id]! - max) / z;
      const tok = model.tokenizer ? JSON.stringify(model.tokenizer.decode([id])) : '';
      return `${id}${tok ? ` ${tok}` : ''} (p=${p.toFixed(3)})`;
    });
    const prompt = model.tokenizer ? ` ${JSON.stringify(model.tokenizer.decode(tokens[b]!))}` : '';
    lines.push(`top next tokens [${b}]${prompt}: ${parts.join(', ')}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

async function cmdGenerate(argv: string[]): Promise<void> {
  const args = parseArgs(argv, {
    ...COMMON,
    ...STEERING,
    ...SAE_FLAGS,
    tokens: { value: true },
    text: { value: true },
    'max-new-tokens': { value: true },
    temperature: { value: true },
    'top-k': { value: true },
    'top-p': { value: true },
    seed: { value: true },
    'stop-token': { value: true, repeat: true },
    stream: { value: false },
  });
  const model = await openModel(args);
  try {
    await runGenerate(model, args);
  } finally {
    model.dispose();
  }
}

async function cmdGrad(argv: string[], attribute: boolean): Promise<void> {
  const args = parseArgs(argv, { ...COMMON, ...(attribute ? ATTRIBUTE_FLAGS : GRAD_FLAGS) });
  checkOutputFile(required(args, 'out'));
  metricFromFlags(args);  // usage errors before the model loads
  const model = await openModel(args);
  try {
    await (attribute ? runAttribute(model, args) : runGrad(model, args));
  } finally {
    model.dispose();
  }
}

async function cmdSteerTrain(argv: string[]): Promise<void> {
  const args = parseArgs(argv, { ...COMMON, pairs: { value: true }, layers: { value: true }, method: { value: true }, out: { value: true } });
  checkOutputFile(required(args, 'out'));
  const model = await openModel(args);
  try {
    await runSteerTrain(model, args);
  } finally {
    model.dispose();
  }
}

async function cmdExtract(argv: string[]): Promise<void> {
  const args = parseArgs(argv, {
    ...COMMON,
    input: { value: true, multi: true },
    tokens: { value: true, multi: true },
    'whole-file': { value: false },
    'text-field': { value: true },
    hooks: { value: true, multi: true, repeat: true },
    'seq-len': { value: true },
    out: { value: true },
    'batch-size': { value: true },
    'max-memory': { value: true },
    'stop-at-layer': { value: true },
    'max-tokens': { value: true },
    'out-dtype': { value: true },
    'pad-last': { value: false },
    'no-pack': { value: false },
    shard: { value: true },
    'shard-size': { value: true },
    overwrite: { value: false },
    quiet: { value: false },
  });
  const model = await openModel(args);
  try {
    await runExtract(model, args);
  } finally {
    model.dispose();
  }
}

async function cmdMerge(argv: string[]): Promise<void> {
  await runMerge(parseArgs(argv, { out: { value: true }, overwrite: { value: false } }));
}

async function cmdVerify(argv: string[]): Promise<void> {
  await runVerify(parseArgs(argv, {}));
}

async function cmdTokenize(argv: string[]): Promise<void> {
  const args = parseArgs(argv, { ...COMMON, text: { value: true } });
  const text = required(args, 'text');
  const model = await openModel(args);
  try {
    process.stdout.write(JSON.stringify(model.tokenize(text)[0]) + '\n');
  } finally {
    model.dispose();
  }
}

async function cmdHooks(argv: string[]): Promise<void> {
  const args = parseArgs(argv, COMMON);
  const model = await openModel(args);
  try {
    const width = Math.max(...model.hooks.map((h) => h.name.length));
    const lines = model.hooks.map((h) => `${h.name.padEnd(width)}  [${h.shape.join(', ')}]`);
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    model.dispose();
  }
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run':
        await cmdRun(rest);
        return 0;
      case 'generate':
        await cmdGenerate(rest);
        return 0;
      case 'grad':
        await cmdGrad(rest, false);
        return 0;
      case 'attribute':
        await cmdGrad(rest, true);
        return 0;
      case 'steer-train':
        await cmdSteerTrain(rest);
        return 0;
      case 'extract':
        await cmdExtract(rest);
        return 0;
      case 'merge':
        await cmdMerge(rest);
        return 0;
      case 'verify':
        await cmdVerify(rest);
        return 0;
      case 'tokenize':
        await cmdTokenize(rest);
        return 0;
      case 'hooks':
        await cmdHooks(rest);
        return 0;
      case 'build-cuda':
        await runBuildCuda(rest);
        return 0;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(USAGE + '\n');
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`neurotap: ${err.message}\n${USAGE}\n`);
      return 2;
    }
    // Every other failure is one line with its code; NEUROTAP_DEBUG=1 adds the stack.
    const coded = asCodedError(err);
    process.stderr.write(`neurotap: error [${coded.code}]: ${coded.message}\n`);
    if (process.env.NEUROTAP_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}
