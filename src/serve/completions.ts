// `POST /v1/completions` and `POST /v1/chat/completions`, OpenAI-compatible: prompt or messages
// (through the model's chat template), max_tokens, temperature, top_p, seed, stop strings,
// stream (server-sent events), logprobs, plus the `neurotap` interventions object. Both run
// through the shared Batcher; a client that disconnects aborts its request and frees its row.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { applyChatTemplate, type ChatMessage } from '../analysis/chat.js';
import type { Model } from '../model/Model.js';
import type { Batcher, BatchResult, GeneratedToken } from './batcher.js';
import type { ServerMetrics } from './metrics.js';
import { bad, fields, interventions, optBoolean, optNumber, promptTokens, type ServeContext } from './requests.js';
import { abortOnClose, errorBody, statusOf } from './server.js';

type Kind = 'text' | 'chat';

interface Parsed {
  prompt: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** Top alternatives per token; undefined: no logprobs. */
  logprobs?: number;
  hooks: ReturnType<typeof interventions>['hooks'];
  capture: string[];
}

// Fields clients send that have no effect here at their neutral value, and are refused otherwise.
const NEUTRAL: Record<string, unknown> = { n: 1, presence_penalty: 0, frequency_penalty: 0, best_of: 1, echo: false };

function parse(ctx: ServeContext, kind: Kind, raw: unknown, capacity: number): Parsed {
  const common = ['model', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'stream', 'stream_options', 'logprobs', 'user', 'neurotap', ...Object.keys(NEUTRAL)];
  const body = fields(raw, 'body', kind === 'text' ? ['prompt', ...common] : ['messages', 'top_logprobs', 'max_completion_tokens', ...common]);
  for (const [k, v] of Object.entries(NEUTRAL))
    if (body[k] !== undefined && body[k] !== null && body[k] !== v) bad(`${k} = ${JSON.stringify(body[k])} is not supported (only ${JSON.stringify(v)})`);
  if (body.user !== undefined && typeof body.user !== 'string') bad('user must be a string');
  const { model } = ctx;
  let prompt: number[];
  if (kind === 'text') {
    if (body.prompt === undefined) bad("'prompt' is required");
    prompt = promptTokens(model, body.prompt, 'prompt');
  } else {
    if (!Array.isArray(body.messages) || body.messages.length === 0) bad("'messages' must be a non-empty array");
    body.messages.forEach((m, i) => {
      if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string') bad(`messages[${i}] needs a string 'role'`);
    });
    if (!model.tokenizer) bad('chat needs the model folder to have tokenizer.json', 'ERR_NO_TOKENIZER');
    const text = applyChatTemplate(model, body.messages as ChatMessage[], { addGenerationPrompt: true });
    prompt = model.tokenize(text, false)[0]!;
    if (prompt.length === 0) bad('the chat template rendered an empty prompt');
  }
  const room = capacity - prompt.length;
  if (room < 1) bad(`the ${prompt.length}-token prompt leaves no room in the ${capacity} positions a request may use`, 'ERR_TOO_MANY_TOKENS');
  const asked = optNumber(body.max_completion_tokens ?? body.max_tokens, 'max_tokens', 1, Number.MAX_SAFE_INTEGER, true);
  const maxTokens = asked ?? (kind === 'text' ? Math.min(16, room) : room);
  if (maxTokens > room)
    bad(`a ${prompt.length}-token prompt plus max_tokens ${maxTokens} exceeds the ${capacity} positions a request may use`, 'ERR_TOO_MANY_TOKENS');
  const stop = body.stop === undefined || body.stop === null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  if (!Array.isArray(stop) || stop.length > 4 || !stop.every((s) => typeof s === 'string' && s.length > 0)) bad('stop must be a non-empty string or an array of up to 4 of them');
  let logprobs: number | undefined;
  if (kind === 'text') {
    logprobs = optNumber(body.logprobs, 'logprobs', 0, 20, true);
  } else {
    const top = optNumber(body.top_logprobs, 'top_logprobs', 0, 20, true);
    if (optBoolean(body.logprobs, 'logprobs')) logprobs = top ?? 0;
    else if (top !== undefined) bad('top_logprobs needs logprobs: true');
  }
  const streamOptions = body.stream_options === undefined || body.stream_options === null ? {} : fields(body.stream_options, 'stream_options', ['include_usage']);
  const iv = interventions(ctx, body.neurotap);
  const seed = optNumber(body.seed, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, true);
  return {
    prompt,
    maxTokens,
    temperature: optNumber(body.temperature, 'temperature', 0, 2) ?? 1,
    topP: optNumber(body.top_p, 'top_p', Number.MIN_VALUE, 1) ?? 1,
    ...(seed !== undefined ? { seed } : {}),
    stop: stop as string[],
    stream: optBoolean(body.stream, 'stream') ?? false,
    includeUsage: optBoolean(streamOptions.include_usage, 'stream_options.include_usage') ?? false,
    ...(logprobs !== undefined ? { logprobs } : {}),
    hooks: iv.hooks,
    capture: iv.capture,
  };
}

/** Text of the new tokens so far: what is safe to send (no partial character or possible stop-string start), and whether a stop string ended it. */
class TextTracker {
  private ids: number[] = [];
  sent = 0;
  text = '';
  stopped = false;
  constructor(
    private readonly model: Model,
    private readonly stops: readonly string[],
  ) {}

  push(id: number): void {
    this.ids.push(id);
    const text = this.model.tokenizer ? this.model.tokenizer.decode(this.ids) : '';
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.text = text.slice(0, cut);
      this.stopped = true;
    } else {
      this.text = text;
    }
  }

  /** The next piece that can be sent now (all of it once `final`). */
  take(final: boolean): string {
    let end = this.text.length;
    if (!final && !this.stopped) {
      if (this.text.endsWith('\uFFFD')) end -= 1;  // a character whose bytes are not all here
      const hold = Math.max(0, ...this.stops.map((s) => s.length - 1));
      end = Math.max(this.sent, end - hold);
    }
    const piece = this.text.slice(this.sent, end);
    this.sent = Math.max(this.sent, end);
    return piece;
  }
}

let nextId = 0;

export function completionRoutes(app: FastifyInstance, ctx: ServeContext, batcher: Batcher, metrics: ServerMetrics, modelId: string): void {
  const { model } = ctx;
  const tokenText = (id: number) => (model.tokenizer ? model.tokenizer.decode([id]) : String(id));
  const logprobsText = (toks: GeneratedToken[], offset: number) => {
    const offsets: number[] = [];
    let at = offset;
    for (const t of toks) {
      offsets.push(at);
      at += tokenText(t.token).length;
    }
    return {
      tokens: toks.map((t) => tokenText(t.token)),
      token_logprobs: toks.map((t) => t.logprob!),
      top_logprobs: toks.map((t) => Object.fromEntries((t.top ?? []).map((x) => [tokenText(x.token), x.logprob]))),
      text_offset: offsets,
    };
  };
  const logprobsChat = (toks: GeneratedToken[]) => ({
    content: toks.map((t) => ({
      token: tokenText(t.token),
      logprob: t.logprob!,
      bytes: [...Buffer.from(tokenText(t.token))],
      top_logprobs: (t.top ?? []).map((x) => ({ token: tokenText(x.token), logprob: x.logprob, bytes: [...Buffer.from(tokenText(x.token))] })),
    })),
  });

  const handle = (kind: Kind) => async (req: FastifyRequest, reply: FastifyReply) => {
    const p = parse(ctx, kind, req.body, batcher.capacity);
    const id = `${kind === 'text' ? 'cmpl' : 'chatcmpl'}-${Date.now().toString(36)}${(nextId++).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const object = kind === 'text' ? 'text_completion' : 'chat.completion';
    const tracker = new TextTracker(model, p.stop);
    const ac = abortOnClose(req, reply);
    const toks: GeneratedToken[] = [];
    const sse = (data: unknown) => reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
    const chunk = (text: string, lp: GeneratedToken[], finish: string | null) =>
      kind === 'text'
        ? { id, object, created, model: modelId, choices: [{ index: 0, text, logprobs: p.logprobs !== undefined && lp.length ? logprobsText(lp, 0) : null, finish_reason: finish }] }
        : {
            id,
            object: 'chat.completion.chunk',
            created,
            model: modelId,
            choices: [{ index: 0, delta: text ? { content: text } : {}, logprobs: p.logprobs !== undefined && lp.length ? logprobsChat(lp) : null, finish_reason: finish }],
          };
    let pending: GeneratedToken[] = [];
    if (p.stream) {
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      if (kind === 'chat') sse({ id, object: 'chat.completion.chunk', created, model: modelId, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
    }
    let result: BatchResult;
    try {
      result = await batcher.submit({
        prompt: p.prompt,
        maxNewTokens: p.maxTokens,
        temperature: p.temperature,
        topP: p.topP,
        ...(p.seed !== undefined ? { seed: p.seed } : {}),
        hooks: p.hooks,
        capture: p.capture,
        ...(p.logprobs !== undefined ? { logprobs: p.logprobs } : {}),
        signal: ac.signal,
        onToken: (t) => {
          metrics.generatedTokens.inc();
          toks.push(t);
          tracker.push(t.token);
          if (p.stream) {
            pending.push(t);
            const piece = tracker.take(false);
            if (piece) {
              sse(chunk(piece, pending, null));
              pending = [];
            }
          }
          return tracker.stopped;  // a stop string ends the request
        },
      });
    } catch (err) {
      if (!p.stream) throw err;
      if (!reply.raw.writableEnded && !ac.signal.aborted) {
        sse({ error: errorBody(err, statusOf(err)).error });
        reply.raw.end('data: [DONE]\n\n');
      }
      return;
    }
    const finish = result.stopReason;
    const usage = { prompt_tokens: p.prompt.length, completion_tokens: toks.length, total_tokens: p.prompt.length + toks.length };
    metrics.queueSeconds.observe(result.queueMs / 1000);
    metrics.promptTokens.inc({}, p.prompt.length);
    if (!p.stream) {
      const text = tracker.take(true);
      const lp = p.logprobs === undefined ? null : kind === 'text' ? logprobsText(toks, 0) : logprobsChat(toks);
      const choice = kind === 'text' ? { index: 0, text, logprobs: lp, finish_reason: finish } : { index: 0, message: { role: 'assistant', content: text }, logprobs: lp, finish_reason: finish };
      const activations = Object.fromEntries([...result.captures].map(([name, t]) => [name, { shape: t.shape, data: Array.from(t.data) }]));
      return { id, object, created, model: modelId, choices: [choice], usage, ...(p.capture.length ? { neurotap: { activations } } : {}) };
    }
    // The stream's end: what was held back, the finish reason, usage if asked, [DONE].
    sse(chunk(tracker.take(true), pending, finish));
    if (p.includeUsage) sse({ id, object: kind === 'text' ? object : 'chat.completion.chunk', created, model: modelId, choices: [], usage });
    reply.raw.end('data: [DONE]\n\n');
  };

  app.post('/v1/completions', handle('text'));
  app.post('/v1/chat/completions', handle('chat'));
}
