// Forward-pass routes of `neurotap serve`: `/v1/run` (captures and edits), `/v1/features` (top-k
// SAE features per token), `/v1/grad` (d metric / d activation) and `/v1/attribute` (attribution
// patching). Tensors come back as JSON `{shape, data}` or, with `Accept: application/octet-stream`,
// as one safetensors body. These run directly on the model (its runs serialize with the
// batcher's forwards), not through the batcher. Tests: test/serve.test.ts.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { attributionPatching } from '../attribution.js';
import { encodeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { Model } from '../model/Model.js';
import type { Metric } from '../model/metric.js';
import { bad, fields, interventions, optNumber, promptTokens, type ServeContext } from './requests.js';
import { abortOnClose } from './server.js';

/** `top` plus named tensors: JSON, or a safetensors body (float32; `top` in its metadata) when the client accepts octet-stream. */
function tensorsReply(
  req: FastifyRequest,
  reply: FastifyReply,
  top: Record<string, unknown>,
  direct: Record<string, TensorToWrite>,
  group: string,
  tensors: ReadonlyMap<string, TensorToWrite>,
): unknown {
  if ((req.headers.accept ?? '').includes('application/octet-stream')) {
    reply.type('application/octet-stream');
    const all = new Map<string, TensorToWrite>([...Object.entries(direct), ...tensors]);
    return Buffer.concat(encodeSafetensors(all, Object.fromEntries(Object.entries(top).map(([k, v]) => [k, JSON.stringify(v)]))));
  }
  const json = (t: TensorToWrite) => ({ shape: t.shape, data: Array.from(t.data) });
  return {
    ...top,
    ...Object.fromEntries(Object.entries(direct).map(([k, t]) => [k, json(t)])),
    [group]: Object.fromEntries([...tensors].map(([name, t]) => [name, json(t)])),
  };
}

/** A metric as JSON: 'loss', or { logit | logProb: { token, position? } }, or { logitDiff: { correct, wrong, position? } }. */
function metricOf(v: unknown): Metric {
  if (v === 'loss') return 'loss';
  const o = fields(v, 'metric', ['logit', 'logProb', 'logitDiff', 'loss']);
  if (Object.keys(o).length !== 1) bad("metric must be 'loss' or hold exactly one of logit, logProb, logitDiff");
  return o as Metric;  // the engine checks tokens and positions (ERR_INVALID_INPUT)
}

function hookList(v: unknown, name: string): string[] {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || !list.every((h) => typeof h === 'string')) bad(`${name} must be a hook name or glob, or a non-empty array of them`);
  return list as string[];
}

export function forwardRoutes(app: FastifyInstance, ctx: ServeContext, maxRunTokens: number): void {
  const { model } = ctx;

  // A forward with captures and edits: JSON arrays, or safetensors with Accept: application/octet-stream.
  app.post('/v1/run', async (req: FastifyRequest, reply: FastifyReply) => {
    const body = fields(req.body, 'body', ['tokens', 'text', 'capture', 'logits', 'neurotap']);
    const rows = runInput(model, body, maxRunTokens);
    const iv = interventions(ctx, body.neurotap);
    const capture = [...iv.capture, ...(body.capture === undefined ? [] : [body.capture].flat())];
    if (!capture.every((c) => typeof c === 'string')) bad('capture must be a string or an array of hook names and globs');
    const logits = body.logits ?? 'last';
    if (logits !== 'last' && logits !== 'all' && logits !== 'none') bad(`logits must be 'last', 'all' or 'none', got ${JSON.stringify(logits)}`);
    const ac = abortOnClose(req, reply);
    const r = await model.run(rows, { capture: capture as string[], hooks: iv.hooks as never, returnLogits: logits === 'all' ? true : logits === 'last' ? 'last' : false, signal: ac.signal });
    return tensorsReply(req, reply, { tokens: rows, pad: r.pad }, r.logits ? { logits: r.logits } : {}, 'activations', r.cache);
  });

  // The k largest SAE features per token.
  app.post('/v1/features', async (req: FastifyRequest, reply: FastifyReply) => {
    const body = fields(req.body, 'body', ['tokens', 'text', 'k', 'sae']);
    const attached = [...model.saes.values()];
    if (attached.length === 0) bad('no SAE is attached (start the server with --sae DIR)', 'ERR_NO_SAE');
    const sae = body.sae === undefined ? attached[0]! : attached.find((a) => a.hook === body.sae);
    if (!sae) bad(`sae must name the hook of an attached SAE (${attached.map((a) => a.hook).join(', ')})`);
    const k = optNumber(body.k, 'k', 1, sae.sae.cfg.dSae, true) ?? Math.min(10, sae.sae.cfg.dSae);
    const rows = runInput(model, body, maxRunTokens);
    const ac = abortOnClose(req, reply);
    const r = await model.run(rows, { returnLogits: false, saeFeatures: { k, hooks: [sae.hook as never] }, signal: ac.signal });
    const f = r.features.get(sae.hook)!;
    const [B, T] = f.shape;
    return {
      sae: sae.hook,
      k,
      rows: Array.from({ length: B }, (_, b) =>
        Array.from({ length: T - r.pad[b]! }, (_, i) => {
          const t = r.pad[b]! + i;
          const at = (b * T + t) * k;
          return {
            token: rows[b]![i],
            ...(model.tokenizer ? { text: model.tokenizer.decode([rows[b]![i]!]) } : {}),
            features: Array.from({ length: k }, (_, j) => ({ index: f.indices[at + j]!, value: f.values[at + j]! })),
          };
        }),
      ),
    };
  });

  // d metric / d activation at the `grads` hooks, after the request's edits.
  app.post('/v1/grad', async (req: FastifyRequest, reply: FastifyReply) => {
    const body = fields(req.body, 'body', ['tokens', 'text', 'metric', 'grads', 'neurotap']);
    const rows = runInput(model, body, maxRunTokens);
    const iv = interventions(ctx, body.neurotap);
    const r = await model.backward(rows, { metric: metricOf(body.metric), grads: hookList(body.grads, 'grads') as never, hooks: iv.hooks as never });
    return tensorsReply(req, reply, { tokens: rows, metric: r.metric }, {}, 'grads', r.grads);
  });

  // Attribution patching: (clean - corrupted) . d metric / d activation at the corrupted input, per hook.
  app.post('/v1/attribute', async (req: FastifyRequest, reply: FastifyReply) => {
    const body = fields(req.body, 'body', ['clean', 'clean_tokens', 'corrupted', 'corrupted_tokens', 'metric', 'hooks']);
    const clean = runInput(model, body, maxRunTokens, 'clean', 'clean_tokens');
    const corrupted = runInput(model, body, maxRunTokens, 'corrupted', 'corrupted_tokens');
    const r = await attributionPatching(model, clean, corrupted, { metric: metricOf(body.metric), hooks: hookList(body.hooks, 'hooks') as never });
    return tensorsReply(req, reply, { metric_clean: r.metricClean, metric_corrupted: r.metricCorrupted }, {}, 'scores', r.scores);
  });
}

/** Rows of token ids from a text field (a string or strings) or a tokens field (ids, or an array of id arrays): exactly one of them. */
function runInput(model: Model, body: Record<string, unknown>, maxTokens: number, textField = 'text', tokensField = 'tokens'): number[][] {
  const text = body[textField], tokens = body[tokensField];
  if ((tokens === undefined) === (text === undefined)) bad(`give exactly one of '${tokensField}' and '${textField}'`);
  let rows: number[][];
  if (text !== undefined) {
    const texts = Array.isArray(text) ? text : [text];
    if (texts.length === 0 || !texts.every((t) => typeof t === 'string')) bad(`${textField} must be a string or a non-empty array of strings`);
    rows = texts.map((t, i) => promptTokens(model, t, `${textField}[${i}]`));
  } else {
    rows = Array.isArray(tokens) && tokens.length > 0 && Array.isArray(tokens[0]) ? (tokens as unknown[]).map((r, i) => promptTokens(model, r, `${tokensField}[${i}]`)) : [promptTokens(model, tokens, tokensField)];
  }
  const n = rows.reduce((a, r) => a + r.length, 0);
  const longest = Math.max(...rows.map((r) => r.length));
  if (n > maxTokens || longest * rows.length > maxTokens)
    bad(`the request holds ${rows.length} x ${longest} padded tokens, more than the ${maxTokens} a request may`, 'ERR_TOO_MANY_TOKENS');
  if (model.config.positionalEmbedding === 'standard' && longest > model.config.nCtx)
    bad(`a ${longest}-token sequence exceeds the model's ${model.config.nCtx} positions`, 'ERR_TOO_MANY_TOKENS');
  return rows;
}

