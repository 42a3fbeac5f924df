// `neurotap run`: a forward pass that prints a summary (shapes, RMS per capture, top next
// tokens) or writes logits and captures to a safetensors file (README "CLI"). Tests: test/cli.test.ts.
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { HookMap, Model } from '../model/Model.js';
import { mergeHooks } from '../steering/steer.js';
import { one, UsageError, type ParsedArgs } from './args.js';
import { parseTokenRows } from './generate.js';
import { checkOutputFile, writeOutputFile } from './io.js';
import { featureEditsFromFlags, saeFromFlags } from './sae-flags.js';
import { checkSteeringFlags, steeringFromFlags } from './steering-flags.js';

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Checks what can be checked before the model loads: one input, --steer, --control-vector and SAE feature values, a writable --out. */
export function checkRunFlags(args: ParsedArgs): void {
  const tokens = one(args, 'tokens');
  if ((tokens === undefined) === (one(args, 'text') === undefined)) throw new UsageError('give exactly one of --tokens and --text');
  if (tokens !== undefined) parseTokenRows(tokens);
  checkSteeringFlags(args.flags.get('steer') ?? [], args.flags.get('control-vector') ?? []);
  featureEditsFromFlags(args.flags);
  const out = one(args, 'out');
  if (out) checkOutputFile(out);
}

export async function runRun(model: Model, args: ParsedArgs): Promise<void> {
  const tokensSpec = one(args, 'tokens');
  const out = one(args, 'out');
  const input = tokensSpec !== undefined ? parseTokenRows(tokensSpec) : one(args, 'text')!;
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
