// `neurotap serve`: a Fastify server over one model. OpenAI-compatible completions and chat
// completions (continuously batched by serve/batcher.ts, each request with its own `neurotap`
// interventions), forwards with captures, SAE features, health, models and Prometheus metrics.
// Errors are JSON `{ error: { message, type, code } }` with the neurotap error code; the server
// keeps serving after any of them. README "Serving"; tests: test/serve.test.ts.
import { timingSafeEqual } from 'node:crypto';
import { basename } from 'node:path';

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

import { NeurotapError, UnknownHookError } from '../errors.js';
import type { Model } from '../model/Model.js';
import type { SteeringVector } from '../steering/vectors.js';
import { Batcher } from './batcher.js';
import { completionRoutes } from './completions.js';
import { forwardRoutes } from './forward.js';
import { ServerMetrics } from './metrics.js';
import type { ServeContext } from './requests.js';

/** Options for {@link createServer}. */
export interface ServeOptions {
  /** Requests must send `Authorization: Bearer KEY` (all routes but `/health`). Defaults to none. */
  apiKey?: string;
  /** Requests decoded together at most. Defaults to 16. */
  maxBatch?: number;
  /** Positions a generation request may use (prompt + max_tokens). Defaults to the model's context, at most 2048. */
  capacity?: number;
  /** Generation requests waiting beyond this many get 503 with Retry-After. Defaults to 256. */
  maxQueue?: number;
  /** Largest request body in bytes (413 beyond). Defaults to 16 MiB. */
  bodyLimit?: number;
  /** Tokens a `/v1/run`, `/v1/features`, `/v1/grad` or `/v1/attribute` input may hold in all. Defaults to 8 x capacity. */
  maxRunTokens?: number;
  /** Steering vectors requests may name (`neurotap.steering[].name`). Defaults to none. */
  vectors?: ReadonlyMap<string, SteeringVector>;
  /** The model id `/v1/models` lists. Defaults to the model folder's name. */
  modelId?: string;
  /** Fastify's logger option. Defaults to off. */
  logger?: boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The batcher generation requests share. */
    batcher: Batcher;
    /** The server's metrics. */
    metrics: ServerMetrics;
  }
}

/** HTTP status of an error a request caused (or 500). */
export function statusOf(err: unknown): number {
  const code = (err as { code?: unknown }).code;
  if (code === 'ERR_QUEUE_FULL' || code === 'ERR_SHUTTING_DOWN') return 503;
  if (code === 'ERR_ABORTED') return 499;  // the client closed the connection (nginx's code; nobody reads it but the metrics)
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return 413;
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return 415;
  if (err instanceof UnknownHookError) return 400;
  if (err instanceof NeurotapError) return err.name === 'InvalidInputError' || String(code).startsWith('ERR_TOKEN') ? 400 : 500;
  const status = (err as { statusCode?: unknown }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : 500;
}

const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'ERR_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'ERR_INVALID_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'ERR_INVALID_JSON',
};

/** The JSON error body; `code` is the neurotap error code. */
export function errorBody(err: unknown, status: number): { error: { message: string; type: string; code: string } } {
  const raw = String((err as { code?: unknown }).code ?? '');
  const code = raw.startsWith('ERR_') ? raw : (FASTIFY_CODES[raw] ?? (err instanceof SyntaxError ? 'ERR_INVALID_JSON' : status >= 500 ? 'ERR_INTERNAL' : 'ERR_INVALID_INPUT'));
  const type = status === 401 ? 'authentication_error' : status === 503 ? 'overloaded_error' : status >= 500 ? 'server_error' : 'invalid_request_error';
  return { error: { message: err instanceof Error ? err.message : String(err), type, code } };
}

function sameKey(given: string, want: string): boolean {
  const a = Buffer.from(given), b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Creates (but does not start) the server: `await server.listen({ port, host })`. `server.close()` drains it. */
export function createServer(model: Model, options: ServeOptions = {}): FastifyInstance {
  const metrics = new ServerMetrics();
  const batcher = new Batcher(model, {
    ...(options.maxBatch !== undefined ? { maxBatch: options.maxBatch } : {}),
    ...(options.capacity !== undefined ? { capacity: options.capacity } : {}),
    ...(options.maxQueue !== undefined ? { maxQueue: options.maxQueue } : {}),
    onStep: (rows) => metrics.batchSize.observe(rows),
  });
  const maxRunTokens = options.maxRunTokens ?? 8 * batcher.capacity;
  const ctx: ServeContext = { model, vectors: options.vectors ?? new Map() };
  const modelId = options.modelId ?? basename(model.dir);
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: options.bodyLimit ?? 16 << 20 });
  app.removeContentTypeParser('text/plain');  // JSON only: anything else is 415
  app.decorate('batcher', batcher);
  app.decorate('metrics', metrics);

  app.addHook('onRequest', async (req, reply) => {
    // Counted when the response ends, streamed (hijacked) ones included.
    const started = performance.now();
    reply.raw.once('close', () => {
      const route = req.routeOptions.url ?? 'unknown';
      metrics.requests.inc({ route, status: String(reply.raw.statusCode) });
      metrics.latency.observe((performance.now() - started) / 1000, { route });
    });
    if (!options.apiKey || req.url === '/health') return;
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ') || !sameKey(auth.slice(7), options.apiKey)) {
      reply.code(401).header('www-authenticate', 'Bearer');
      return reply.send(errorBody(new NeurotapError('ERR_UNAUTHORIZED', 'a valid "Authorization: Bearer KEY" header is required'), 401));
    }
  });
  app.addHook('onClose', async () => {
    await batcher.close();
  });
  app.setErrorHandler((err, _req, reply) => {
    const status = statusOf(err);
    if (status === 503) reply.header('retry-after', '1');
    if (status >= 500 && status !== 503) app.log.error(err);
    void reply.code(status).send(errorBody(err, status));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(errorBody(new NeurotapError('ERR_NOT_FOUND', `no route ${req.method} ${req.url}`), 404));
  });

  app.get('/health', async () => ({ status: 'ok', model: modelId, active: batcher.active, queued: batcher.queued }));
  app.get('/v1/models', async () => ({ object: 'list', data: [{ id: modelId, object: 'model', created: 0, owned_by: 'neurotap' }] }));
  app.get('/metrics', async (_req, reply) => {
    reply.type('text/plain; version=0.0.4');
    return metrics.text({
      neurotap_active_requests: { help: 'Generation requests in the batch.', value: batcher.active },
      neurotap_queued_requests: { help: 'Generation requests waiting for a batch row.', value: batcher.queued },
    });
  });

  completionRoutes(app, ctx, batcher, metrics, modelId);

  forwardRoutes(app, ctx, maxRunTokens);

  return app;
}

/** An AbortController aborted when the client goes away before the response is sent. */
export function abortOnClose(req: FastifyRequest, reply: FastifyReply): AbortController {
  const ac = new AbortController();
  void req;
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort(new NeurotapError('ERR_ABORTED', 'the client closed the connection'));
  });
  return ac;
}
