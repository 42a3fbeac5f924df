// A small argv parser for the CLI contract: `--flag value`, `--flag=value`, repeatable flags.
import { InvalidInputError } from '../errors.js';

export interface FlagSpec {
  /** Takes a value (else a boolean switch). */
  value: boolean;
  /** May be given more than once. */
  repeat?: boolean;
  /** Takes every following argument up to the next `--flag` (`--input a.txt b.txt`). */
  multi?: boolean;
}

export interface ParsedArgs {
  flags: Map<string, string[]>;
  positional: string[];
}

export class UsageError extends InvalidInputError {
  constructor(message: string) {
    super('ERR_USAGE', message);
  }
}

export function parseArgs(argv: readonly string[], spec: Record<string, FlagSpec>): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq >= 0 ? eq : undefined);
    const s = spec[name];
    if (!s) throw new UsageError(`unknown option --${name}`);
    let value = 'true';
    if (s.multi) {
      const list = flags.get(name) ?? [];
      if (eq >= 0) list.push(arg.slice(eq + 1));
      while (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) list.push(argv[++i]!);
      if (list.length === 0) throw new UsageError(`--${name} needs at least one value`);
      flags.set(name, list);
      continue;
    }
    if (s.value) {
      if (eq >= 0) value = arg.slice(eq + 1);
      else if (i + 1 < argv.length) value = argv[++i]!;
      else throw new UsageError(`--${name} needs a value`);
    } else if (eq >= 0) {
      throw new UsageError(`--${name} takes no value`);
    }
    const list = flags.get(name) ?? [];
    if (list.length && !s.repeat) throw new UsageError(`--${name} given more than once`);
    list.push(value);
    flags.set(name, list);
  }
  return { flags, positional };
}

export function one(args: ParsedArgs, name: string): string | undefined {
  return args.flags.get(name)?.[0];
}

export function required(args: ParsedArgs, name: string): string {
  const v = one(args, name);
  if (v === undefined) throw new UsageError(`--${name} is required`);
  return v;
}
