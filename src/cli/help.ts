// Usage and help text, rendered from the command table (commands.ts): `neurotap --help`,
// `neurotap CMD --help`, and the usage printed after a usage error. Tests: test/cli-usage.test.ts.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describeValue } from './args.js';
import { COMMANDS, type CommandDef, type FlagDef } from './commands.js';

/** A flag as usage shows it: `--dtype f32|f16|bf16`, `--hooks NAME_OR_GLOB...`, `--quiet`. */
export function flagUsage(f: FlagDef): string {
  if (f.type === 'boolean') return `--${f.name}`;
  const arg = f.choices ? f.choices.join('|') : (f.arg ?? (f.type === 'int' ? 'N' : 'VALUE'));
  return `--${f.name} ${arg}${f.multi ? '...' : ''}`;
}

/** The usage lines of one command, `{flag}` expanded from its table entry. */
export function synopsis(c: CommandDef): string {
  const head = `neurotap ${c.name} `;
  const lines = c.synopsis.map((s) =>
    s.replace(/\{([a-z-]+)\}/g, (_, name: string) => {
      const f = c.flags.find((x) => x.name === name);
      if (!f) throw new Error(`synopsis of ${c.name} names an unknown flag --${name}`);
      return flagUsage(f);
    }),
  );
  // Continuation lines line up under the first flag of `neurotap run`, as for every command.
  return lines.map((l, i) => (i === 0 ? head : ' '.repeat(13)) + l).join('\n');
}

/** Every command's usage lines. */
function allUsage(): string {
  return ['usage:', ...COMMANDS.map((c) => synopsis(c).replace(/^/gm, '  '))].join('\n');
}

/** `neurotap --help`: every command's usage, then what each does. */
export function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    allUsage(),
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    "Run 'neurotap COMMAND --help' (or 'neurotap help COMMAND') for a command's flags, 'neurotap --version' for the version.",
    'Exit status: 0 success, 1 an error (one line: neurotap: error [CODE]: message), 2 a usage error.',
  ].join('\n');
}

/** One help line's text for a flag: its help, then what it accepts and its default. */
function flagNote(f: FlagDef): string {
  const notes: string[] = [];
  if (f.required) notes.push('required');
  const value = describeValue(f);
  if (value) notes.push(value);
  if (f.default !== undefined) notes.push(`default ${f.default}`);
  if (f.repeat || f.multi) notes.push('repeatable');
  return notes.length ? `${f.help} [${notes.join('; ')}]` : f.help;
}

/** `neurotap CMD --help`: usage, what it does, then one line per flag. */
export function commandHelp(c: CommandDef): string {
  const rows = [...c.flags.map((f) => [flagUsage(f), flagNote(f)] as const), ['--help, -h', 'print this help'] as const];
  const width = Math.min(34, Math.max(...rows.map(([u]) => u.length)));
  const lines = rows.map(([u, note]) => (u.length > width ? `  ${u}\n  ${' '.repeat(width)}  ${note}` : `  ${u.padEnd(width)}  ${note}`));
  return [`usage: ${synopsis(c)}`, '', `${c.summary[0]!.toUpperCase()}${c.summary.slice(1)}.`, '', 'flags:', ...lines].join('\n');
}

/** The text after a usage error's message: every command's usage, then where to find more. */
export function usageHint(c: CommandDef | undefined): string {
  return `${allUsage()}\n${c ? `Run 'neurotap ${c.name} --help' for every flag of ${c.name}.` : "Run 'neurotap --help' for what each command does."}`;
}

/** The package's version, from the package.json above this file (src/cli or dist/cli). */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'neurotap' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here: look one folder up
    }
    const up = dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}
