// `neurotap generate` and `neurotap steer-train` (README "CLI").
import { InvalidInputError } from '../errors.js';
import type { HookMap, Model } from '../model/Model.js';
import { trainSteeringVector, type ContrastivePair } from '../steering/steer.js';
import { saveControlVector, saveSteeringSafetensors } from '../steering/vectors.js';
import { num, one, quote, required, UsageError, type ParsedArgs } from './args.js';
import { checkOutputFile, readInputFile, writeOutputFile } from './io.js';
import { checkSteeringFlags, steeringFromFlags } from './steering-flags.js';
import { featureEditsFromFlags, saeFromFlags } from './sae-flags.js';
import { mergeHooks } from '../steering/steer.js';

/** Token rows from --tokens (one array or an array of arrays; rows may differ in length), or from `@FILE`. */
export function parseTokenRows(spec: string, flag = '--tokens'): number[][] {
  const text = spec.startsWith('@') ? readInputFile(spec.slice(1), `${flag} file`) : spec;
  const given = spec.startsWith('@') ? `${spec.slice(1)} holds ${quote(text)}` : `got ${quote(spec)}`;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${flag} is not valid JSON (${given}): ${(err as Error).message}`);
  }
  if (Array.isArray(value) && value.every((x) => typeof x === 'number')) return [value as number[]];
  if (Array.isArray(value) && value.every((r) => Array.isArray(r) && r.every((x) => typeof x === 'number'))) return value as number[][];
  throw new UsageError(`${flag} must be a JSON array of token ids or an array of such arrays, ${given}`);
}

/** Usage errors before the model loads: one input, --steer, --control-vector and SAE feature values. Numbers were checked by the parser. */
export function checkGenerateFlags(args: ParsedArgs): void {
  const tokens = one(args, 'tokens');
  if ((tokens === undefined) === (one(args, 'text') === undefined)) throw new UsageError('give exactly one of --tokens and --text');
  if (tokens !== undefined) parseTokenRows(tokens);
  checkSteeringFlags(args.flags.get('steer') ?? [], args.flags.get('control-vector') ?? []);
  featureEditsFromFlags(args.flags);
}

export async function runGenerate(model: Model, args: ParsedArgs): Promise<void> {
  const tokensSpec = one(args, 'tokens');
  const text = one(args, 'text');
  const maxNewTokens = num(args, 'max-new-tokens')!;
  const temperature = num(args, 'temperature');
  const topK = num(args, 'top-k');
  const topP = num(args, 'top-p');
  const seed = num(args, 'seed');
  const stopTokens = (args.flags.get('stop-token') ?? []).map(Number);
  const features = await saeFromFlags(model, args.flags);
  const hooks = mergeHooks(features as HookMap, steeringFromFlags(model, args.flags.get('steer') ?? [], args.flags.get('control-vector') ?? []));
  const input = tokensSpec !== undefined ? parseTokenRows(tokensSpec) : text!;
  const opts = {
    maxNewTokens,
    hooks,
    stopTokens,
    ...(temperature !== undefined ? { temperature } : {}),
    ...(topK !== undefined ? { topK } : {}),
    ...(topP !== undefined ? { topP } : {}),
    ...(seed !== undefined ? { seed } : {}),
  };
  const stream = model.generateStream(input, opts);
  const streaming = args.flags.has('stream');
  for (;;) {
    const r = await stream.next();
    if (r.done) {
      const out: { tokens: number[][]; text?: string[] } = { tokens: r.value.tokens };
      if (r.value.text) out.text = r.value.text;
      process.stdout.write(JSON.stringify(out) + '\n');
      return;
    }
    if (streaming) {
      const line: { step: number; tokens: number[]; text?: string[] } = { step: r.value.step, tokens: r.value.tokens };
      if (model.tokenizer) line.text = r.value.tokens.map((t) => model.tokenizer!.decode([t]));
      process.stdout.write(JSON.stringify(line) + '\n');
    }
  }
}

/** Parses `A-B`, `A,B,C` or `A` (a layer at or past `nLayers` is a coded error). */
export function parseLayers(spec: string, nLayers: number): number[] {
  const out: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UsageError(`--layers expects A-B, A,B,C or A, got '${spec}'`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new UsageError(`--layers range '${part}' is empty (in '${spec}')`);
    for (let l = a; l <= b; l++) out.push(l);
  }
  for (const l of out) if (l >= nLayers) throw new InvalidInputError('ERR_INVALID_INPUT', `--layers: layer ${l} is outside [0, ${nLayers})`);
  return out;
}

/** Before the model loads: the --out extension and folder, the --layers syntax. */
export function checkSteerTrainFlags(args: ParsedArgs): void {
  const out = required(args, 'out');
  if (!/\.(safetensors|gguf)$/.test(out)) throw new UsageError(`--out must end in .safetensors or .gguf, got '${out}'`);
  checkOutputFile(out);
  parseLayers(required(args, 'layers'), Infinity);
}

export async function runSteerTrain(model: Model, args: ParsedArgs): Promise<void> {
  const pairsPath = required(args, 'pairs');
  const out = required(args, 'out');
  const method = one(args, 'method') as 'mean' | 'pca';
  const layers = parseLayers(required(args, 'layers'), model.config.nLayers);
  const pairs: ContrastivePair[] = [];
  readInputFile(pairsPath, '--pairs file')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        throw new InvalidInputError('ERR_INVALID_INPUT', `${pairsPath}:${i + 1}: not valid JSON`);
      }
      const p = v as Partial<ContrastivePair>;
      const ok = (x: unknown) => typeof x === 'string' || (Array.isArray(x) && x.every((t) => typeof t === 'number'));
      if (!p || !ok(p.positive) || !ok(p.negative))
        throw new InvalidInputError('ERR_INVALID_INPUT', `${pairsPath}:${i + 1}: expected {"positive": text or ids, "negative": text or ids}`);
      pairs.push({ positive: p.positive!, negative: p.negative! });
    });
  const sv = await trainSteeringVector(model, pairs, { layers, method });
  writeOutputFile(out, () => (out.endsWith('.gguf') ? saveControlVector(out, sv, { modelHint: model.config.family }) : saveSteeringSafetensors(out, sv)));
  const norms = [...sv.directions].map(([h, v]) => `${h} |v|=${Math.hypot(...v).toPrecision(4)}`);
  process.stdout.write(`wrote ${sv.directions.size} directions (${method}, ${pairs.length} pairs) to ${out}\n${norms.join('\n')}\n`);
}
