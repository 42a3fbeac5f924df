// Parses one command's argv with node:util parseArgs against its entry in the command table
// (commands.ts): unknown flags with suggestions, flag values checked by type and choices, all as
// usage errors (exit 2). Tests: test/cli-usage.test.ts.
import { parseArgs as parseTokens } from 'node:util';

import { InvalidInputError } from '../errors.js';
import type { CommandDef, FlagDef } from './commands.js';
import { closest } from './suggest.js';

/** A command line that does not fit the command's table: exit 2, the message, then the usage. */
export class UsageError extends InvalidInputError {
  /** The command whose usage to print; none for a top-level error. */
  command: CommandDef | undefined;
  constructor(message: string, command?: CommandDef) {
    super('ERR_USAGE', message);
    this.command = command;
  }
}

export interface ParsedArgs {
  /** The command these flags belong to (for defaults). */
  command?: CommandDef;
  /** Flag name -> the values given, in order (`'true'` for a switch). Defaults are not filled in. */
  flags: Map<string, string[]>;
  positional: string[];
  /** `--help` or `-h` was given. */
  help: boolean;
}

/** What a numeric flag accepts, in words: "an integer >= 1", "a number in (0, 1]". */
export function describeValue(f: FlagDef): string | undefined {
  if (f.type === 'int') return f.min !== undefined ? `an integer >= ${f.min}` : 'an integer';
  if (f.type === 'number') {
    if (f.min !== undefined && f.max !== undefined) return `a number in ${f.minExclusive ? '(' : '['}${f.min}, ${f.max}]`;
    return f.min !== undefined ? `a number >= ${f.min}` : 'a number';
  }
  return undefined;
}

/** Checks one value against the flag's type and choices; throws a UsageError quoting it. */
function checkValue(f: FlagDef, value: string, command: CommandDef): void {
  if (f.choices && !f.choices.includes(value)) {
    const near = closest(value, f.choices);
    throw new UsageError(`--${f.name} must be one of ${f.choices.join(', ')}, got '${value}'${near ? `; did you mean '${near}'?` : ''}`, command);
  }
  if (f.type !== 'int' && f.type !== 'number') return;
  const n = Number(value);
  const ok =
    value.trim() !== '' &&
    Number.isFinite(n) &&
    (f.type !== 'int' || Number.isInteger(n)) &&
    (f.min === undefined || (f.minExclusive ? n > f.min : n >= f.min)) &&
    (f.max === undefined || n <= f.max);
  if (!ok) throw new UsageError(`--${f.name} must be ${describeValue(f)}, got '${value}'`, command);
}

/** An unknown flag: a usage error naming the closest flag of `command`, or the command that has it. */
function unknownFlag(raw: string, command: CommandDef, all: readonly CommandDef[]): UsageError {
  const name = raw.replace(/^-+/, '');
  const owners = all.filter((c) => c !== command && c.flags.some((f) => f.name === name)).map((c) => c.name);
  if (owners.length) return new UsageError(`unknown option ${raw} for ${command.name} (it is a flag of ${owners.join(', ')})`, command);
  const near = closest(name, [...command.flags.map((f) => f.name), 'help']);
  return new UsageError(`unknown option ${raw} for ${command.name}${near ? `; did you mean --${near}?` : ''}`, command);
}

/**
 * Parses `argv` (the arguments after the command name) against `command`'s flags:
 * `--flag value`, `--flag=value`, switches, repeatable flags, and `multi` flags that take every
 * following argument up to the next flag (`--input a.txt b.txt`). Checks values against each
 * flag's type and choices, refuses unknown flags, repeated single flags, stray arguments and
 * missing required flags (UsageError). With `--help` nothing else is checked.
 */
export function parseArgs(argv: readonly string[], command: CommandDef, all: readonly CommandDef[] = [command]): ParsedArgs {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const f of command.flags) options[f.name] = { type: f.type === 'boolean' ? 'boolean' : 'string' };
  // Not strict: a value may start with '-' (`--text "-x"`, `--position -1`) as before; unknown
  // flags and misplaced values are refused below, from the tokens.
  const { tokens } = parseTokens({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const byName = new Map(command.flags.map((f) => [f.name, f]));
  const flags = new Map<string, string[]>();
  const positional: string[] = [];
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help')) return { command, flags, positional, help: true };

  let multi: FlagDef | null = null;  // the multi flag that takes the following plain arguments
  let stray: string | undefined;  // the first plain argument no flag takes, and what came before it
  let previous: FlagDef | undefined;
  for (const t of tokens) {
    if (t.kind === 'option-terminator') {
      multi = null;
      continue;
    }
    if (t.kind === 'positional') {
      if (multi) flags.get(multi.name)!.push(t.value);
      else {
        if (stray === undefined && !command.positionals) {
          const hint = previous && previous.type !== 'boolean' ? `; --${previous.name} takes one value${previous.repeat ? ', give it again for each' : ''}` : '';
          stray = `unexpected argument '${t.value}' (${command.name} takes no positional arguments${hint})`;
        }
        positional.push(t.value);
      }
      previous = undefined;
      continue;
    }
    const f = byName.get(t.name);
    if (!f || !t.rawName.startsWith('--')) throw unknownFlag(t.rawName, command, all);
    multi = null;
    previous = f;
    const list = flags.get(f.name) ?? [];
    if (f.type === 'boolean') {
      if (t.inlineValue) throw new UsageError(`--${f.name} takes no value, got '${t.value}'`, command);
      if (list.length) throw new UsageError(`--${f.name} given more than once`, command);
      flags.set(f.name, ['true']);
      continue;
    }
    if (f.multi) {
      if (t.value !== undefined) list.push(t.value);
      flags.set(f.name, list);
      multi = f;
      continue;
    }
    if (t.value === undefined) throw new UsageError(`--${f.name} needs a value`, command);
    if (list.length && !f.repeat) throw new UsageError(`--${f.name} given more than once`, command);
    list.push(t.value);
    flags.set(f.name, list);
  }

  for (const f of command.flags) {
    const values = flags.get(f.name);
    if (f.multi && values?.length === 0) throw new UsageError(`--${f.name} needs at least one value`, command);
    for (const v of values ?? []) if (f.type !== 'boolean') checkValue(f, v, command);
  }
  if (stray !== undefined) throw new UsageError(stray, command);
  for (const f of command.flags) if (f.required && !flags.has(f.name)) throw new UsageError(`--${f.name} is required`, command);
  return { command, flags, positional, help: false };
}

/** The value of a single flag: the one given, else the table's default. */
export function one(args: ParsedArgs, name: string): string | undefined {
  return args.flags.get(name)?.[0] ?? args.command?.flags.find((f) => f.name === name)?.default;
}

/** A flag's value, a UsageError when absent. */
export function required(args: ParsedArgs, name: string): string {
  const v = one(args, name);
  if (v === undefined) throw new UsageError(`--${name} is required`, args.command);
  return v;
}

/** A numeric flag's value (checked by the parser against its type), or undefined. */
export function num(args: ParsedArgs, name: string): number | undefined {
  const v = one(args, name);
  return v === undefined ? undefined : Number(v);
}

/** A value for an error message: in quotes, cut short past 60 characters. */
export function quote(value: string): string {
  return `'${value.length > 60 ? `${value.slice(0, 57)}...` : value}'`;
}
