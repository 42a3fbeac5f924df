// `neurotap serve`: loads the model (main.ts), attaches --sae SAEs and --vector steering vectors,
// and serves src/serve/server.ts until SIGTERM or SIGINT, which stop new connections, let
// in-flight requests finish, then exit 0. Prints one line with the address once listening.
// Fastify is an optional peer dependency: without it the command is ERR_MISSING_DEPENDENCY,
// found before the model loads.
import { createRequire } from 'node:module';

import { NeurotapError } from '../errors.js';
import type { Model } from '../model/Model.js';
import { loadSae } from '../sae/Sae.js';
import { loadSteeringSafetensors, type SteeringVector } from '../steering/vectors.js';
import { num, one, UsageError, type ParsedArgs } from './args.js';

export function checkServeFlags(args: ParsedArgs): void {
  const saes = args.flags.get('sae') ?? [];
  const hooks = args.flags.get('sae-hook') ?? [];
  if (hooks.length > 0 && hooks.length !== saes.length) throw new UsageError(`give --sae-hook once per --sae (${saes.length}) or not at all, got ${hooks.length}`);
  if (args.flags.has('sae-error-term') && saes.length === 0) throw new UsageError('--sae-error-term needs --sae DIR');
  for (const v of args.flags.get('vector') ?? []) if (!/^[^=]+=.+$/.test(v)) throw new UsageError(`--vector takes NAME=FILE.safetensors, got '${v}'`);
  try {
    createRequire(import.meta.url).resolve('fastify');
  } catch {
    throw new NeurotapError('ERR_MISSING_DEPENDENCY', 'neurotap serve needs fastify 5 next to neurotap: npm install fastify@5');
  }
}

export async function runServe(model: Model, args: ParsedArgs): Promise<void> {
  const saes = args.flags.get('sae') ?? [];
  const hooks = args.flags.get('sae-hook') ?? [];
  for (const [i, dir] of saes.entries()) {
    const hook = hooks[i];
    const sae = await loadSae(dir, hook ? { hook } : {});
    await model.attachSae(sae, { ...(hook ? { hook } : {}), useErrorTerm: args.flags.has('sae-error-term') });
  }
  const vectors = new Map<string, SteeringVector>();
  for (const v of args.flags.get('vector') ?? []) {
    const eq = v.indexOf('=');
    vectors.set(v.slice(0, eq), loadSteeringSafetensors(v.slice(eq + 1)));
  }
  const capacity = num(args, 'capacity');
  const { createServer } = await import('../serve/server.js');
  const server = createServer(model, {
    maxBatch: num(args, 'max-batch') ?? 16,
    maxQueue: num(args, 'max-queue') ?? 256,
    bodyLimit: num(args, 'body-limit') ?? 16 << 20,
    ...(capacity !== undefined ? { capacity } : {}),
    ...((one(args, 'api-key') ?? process.env.NEUROTAP_API_KEY) ? { apiKey: (one(args, 'api-key') ?? process.env.NEUROTAP_API_KEY)! } : {}),
    vectors,
  });
  const address = await server.listen({ host: one(args, 'host') ?? '127.0.0.1', port: num(args, 'port') ?? 8080 });
  process.stdout.write(`neurotap serve: listening on ${address}\n`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`neurotap serve: ${signal}: finishing ${server.batcher.active + server.batcher.queued} request(s)\n`);
      void server.close().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
