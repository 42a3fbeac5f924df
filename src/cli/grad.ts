// `neurotap grad` (d metric / d activation at hooks) and `neurotap attribute` (attribution
// patching), written as float32 safetensors (README "CLI"). Tests: test/cli-grad.test.ts.
import { attributionPatching } from '../attribution.js';
import { InvalidInputError } from '../errors.js';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { Metric, MetricPositions } from '../model/metric.js';
import type { Model, ModelInput } from '../model/Model.js';
import { Tensor } from '../tensor.js';
import { one, required, UsageError, type ParsedArgs } from './args.js';
import { parseTokenRows } from './generate.js';
import { checkOutputFile, writeOutputFile } from './io.js';

function tokenId(s: string, what: string): number {
  const n = Number(s);
  if (s.trim() === '' || !Number.isInteger(n) || n < 0) throw new UsageError(`--metric ${what}: '${s}' is not a token id`);
  return n;
}

/** `--metric logit:ID | logit-diff:A,B | log-prob:ID | loss` with `--position last | N`. */
export function metricFromFlags(args: ParsedArgs): Metric {
  const spec = required(args, 'metric');
  const posFlag = one(args, 'position');
  let position: MetricPositions = 'last';
  if (posFlag !== undefined && posFlag !== 'last') {
    const n = Number(posFlag);
    if (posFlag.trim() === '' || !Number.isInteger(n)) throw new UsageError(`--position must be last or an integer, got '${posFlag}'`);
    position = [n];
  }
  const [kind, rest] = spec.includes(':') ? [spec.slice(0, spec.indexOf(':')), spec.slice(spec.indexOf(':') + 1)] : [spec, undefined];
  if (kind === 'loss') {
    if (rest !== undefined || posFlag !== undefined) throw new UsageError('--metric loss takes no token and no --position (it averages over every position)');
    return 'loss';
  }
  if (rest === undefined) throw new UsageError(`--metric must be logit:ID, logit-diff:A,B, log-prob:ID or loss, got '${spec}'`);
  if (kind === 'logit') return { logit: { token: tokenId(rest, 'logit'), position } };
  if (kind === 'log-prob') return { logProb: { token: tokenId(rest, 'log-prob'), position } };
  if (kind === 'logit-diff') {
    const parts = rest.split(',');
    if (parts.length !== 2) throw new UsageError(`--metric logit-diff takes two token ids A,B, got '${rest}'`);
    return { logitDiff: { correct: tokenId(parts[0]!, 'logit-diff'), wrong: tokenId(parts[1]!, 'logit-diff'), position } };
  }
  throw new UsageError(`--metric must be logit:ID, logit-diff:A,B, log-prob:ID or loss, got '${spec}'`);
}

/** One of --TEXT_FLAG and --TOKENS_FLAG as model input. */
function inputFrom(args: ParsedArgs, textFlag: string, tokensFlag: string): ModelInput {
  const text = one(args, textFlag);
  const tokens = one(args, tokensFlag);
  if ((text === undefined) === (tokens === undefined)) throw new UsageError(`give exactly one of --${textFlag} and --${tokensFlag}`);
  return tokens !== undefined ? parseTokenRows(tokens, `--${tokensFlag}`) : text!;
}

function hooksFrom(args: ParsedArgs): string[] {
  const hooks = args.flags.get('hooks') ?? [];
  if (hooks.length === 0) throw new UsageError('--hooks is required');
  return hooks;
}

function scalar(v: number | null): TensorToWrite {
  if (v === null || !Number.isFinite(v)) throw new InvalidInputError('ERR_INVALID_INPUT', `the metric is not a finite number (${String(v)})`);
  return new Tensor([1], Float32Array.of(v));
}

/** Before the model loads: a writable --out, then the metric's syntax and the inputs. */
export function checkGradFlags(args: ParsedArgs): void {
  checkOutputFile(required(args, 'out'));
  metricFromFlags(args);
  if (args.command?.name === 'attribute') {
    inputFrom(args, 'clean', 'clean-tokens');
    inputFrom(args, 'corrupted', 'corrupted-tokens');
  } else {
    inputFrom(args, 'text', 'tokens');
  }
}

export async function runGrad(model: Model, args: ParsedArgs): Promise<void> {
  const out = required(args, 'out');
  const metric = metricFromFlags(args);
  const hooks = hooksFrom(args);
  const result = await model.backward(inputFrom(args, 'text', 'tokens'), { metric, grads: hooks });
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, t] of result.grads) tensors.set(name, t);
  tensors.set('metric', scalar(result.metric));
  writeOutputFile(out, () => writeSafetensors(out, tensors, { format: 'pt', producer: 'neurotap', model: model.dir }));
  process.stdout.write(`metric ${result.metric}\nwrote ${tensors.size} tensors to ${out}\n`);
}

export async function runAttribute(model: Model, args: ParsedArgs): Promise<void> {
  const out = required(args, 'out');
  const metric = metricFromFlags(args);
  const hooks = hooksFrom(args);
  const clean = inputFrom(args, 'clean', 'clean-tokens');
  const corrupted = inputFrom(args, 'corrupted', 'corrupted-tokens');
  const r = await attributionPatching(model, clean, corrupted, { metric, hooks });
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, t] of r.scores) tensors.set(name, t);
  tensors.set('metric_clean', scalar(r.metricClean));
  tensors.set('metric_corrupted', scalar(r.metricCorrupted));
  writeOutputFile(out, () => writeSafetensors(out, tensors, { format: 'pt', producer: 'neurotap', model: model.dir }));
  process.stdout.write(`metric clean ${r.metricClean} corrupted ${r.metricCorrupted}\nwrote ${tensors.size} tensors to ${out}\n`);
}
