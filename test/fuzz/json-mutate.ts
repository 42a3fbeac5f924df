// JSON-aware mutations for the fuzz harness: delete a key, change a value's type, huge /
// negative / NaN-ish numbers, deep nesting, duplicate keys, wrong strings, huge arrays. The
// tree may hold Raw text (`1e999`, `NaN`, lone surrogates) and Dup objects (repeated keys).
import type { Rng } from './rng.js';

/** JSON text emitted verbatim (a value JSON.stringify cannot produce). */
export class Raw {
  constructor(readonly text: string) {}
}
/** An object whose entries may repeat a key. */
export class Dup {
  constructor(readonly entries: [string, Node][]) {}
}
export type Node = null | boolean | number | string | Raw | Dup | Node[] | { [k: string]: Node };
type Path = (string | number)[];

/** Serializes a (mutated) tree; `indent` pretty-prints ordinary objects as the fixtures are. */
export function stringify(n: Node, indent = 0, depth = 0): string {
  const nl = indent ? '\n' + ' '.repeat(indent * (depth + 1)) : '';
  const end = indent ? '\n' + ' '.repeat(indent * depth) : '';
  if (n instanceof Raw) return n.text;
  if (n instanceof Dup) return '{' + n.entries.map(([k, v]) => `${nl}${JSON.stringify(k)}:${stringify(v, indent, depth + 1)}`).join(',') + (n.entries.length ? end : '') + '}';
  if (Array.isArray(n)) return n.length === 0 ? '[]' : '[' + n.map((v) => nl + stringify(v, indent, depth + 1)).join(',') + end + ']';
  if (n !== null && typeof n === 'object') {
    const keys = Object.keys(n);
    return keys.length === 0 ? '{}' : '{' + keys.map((k) => `${nl}${JSON.stringify(k)}:${stringify(n[k]!, indent, depth + 1)}`).join(',') + end + '}';
  }
  if (typeof n === 'number' && !Number.isFinite(n)) return String(n);
  return JSON.stringify(n);
}

function isObject(n: Node | undefined): n is { [k: string]: Node } {
  return n !== null && typeof n === 'object' && !Array.isArray(n) && !(n instanceof Raw) && !(n instanceof Dup);
}

/** Every path in the tree (breadth-first, at most `limit`), the root excluded. */
function paths(root: Node, limit = 20000): Path[] {
  const out: Path[] = [];
  const queue: [Node, Path][] = [[root, []]];
  while (queue.length && out.length < limit) {
    const [n, p] = queue.shift()!;
    if (p.length) out.push(p);
    if (Array.isArray(n)) n.forEach((v, i) => queue.push([v, [...p, i]]));
    else if (isObject(n)) for (const k of Object.keys(n)) queue.push([n[k]!, [...p, k]]);
  }
  return out;
}

function get(root: Node, p: Path): Node {
  let n = root;
  for (const k of p) n = (n as Record<string | number, Node>)[k]!;
  return n;
}

function set(root: Node, p: Path, v: Node | undefined): Node {
  if (p.length === 0) return v ?? null;
  const parent = get(root, p.slice(0, -1)) as Record<string | number, Node> | Node[];
  const k = p[p.length - 1]!;
  if (v === undefined) {
    if (Array.isArray(parent)) parent.splice(k as number, 1);
    else delete (parent as Record<string, Node>)[k];
  } else (parent as Record<string | number, Node>)[k] = v;
  return root;
}

/**
 * Numbers chosen to break size arithmetic, parsers and bounds checks; `v` is the current value.
 * Edge values, huge values and non-JSON spellings are equally likely.
 */
export function interestingNumber(rng: Rng, v: number): Node {
  const edge: (() => Node)[] = [() => 0, () => -1, () => 1, () => v + 1, () => v - 1, () => -v, () => v + 0.5, () => 1e-320, () => new Raw('-0')];
  const huge: (() => Node)[] = [
    () => v * 2,
    () => v * 1000,
    () => 65536,
    () => 1e8,
    () => 1e9,
    () => 1073741824,
    () => 2 ** 31 - 1,
    () => 2 ** 31,
    () => 2 ** 32,
    () => 2 ** 32 + 1,
    () => 2 ** 53,
    () => 1e308,
    () => -1e308,
    () => new Raw('9007199254740993'),
    () => new Raw('18446744073709551616'),
  ];
  const odd: (() => Node)[] = ['-9223372036854775809', '1e999', '-1e999', 'NaN', 'Infinity', '01', '1.', '+1', '0x10', '1e'].map((t) => () => new Raw(t));
  return rng.pick(rng.pick([edge, huge, odd]))();
}

const WRONG_STRINGS = ['', 'x', 'bogus', 'NaN', '1e999', '-1', '../../../../etc/passwd', '/etc/passwd', '.', '\u0000', 'é\u{1F600}', 'model.safetensors', 'GPT2LMHeadModel'];

function interestingString(rng: Rng, v: string, pool: readonly string[]): Node {
  return rng.pick<() => Node>([
    () => rng.pick(WRONG_STRINGS),
    () => rng.pick(pool.length ? pool : WRONG_STRINGS),
    () => v + 'x',
    () => v.toUpperCase(),
    () => v.slice(0, Math.max(0, v.length - 1)),
    () => 'a'.repeat(rng.pick([256, 65536, 1 << 20])),
    () => new Raw('"\\ud800"'),
    () => new Raw('"\\x41"'),
    () => new Raw('"\u0001"'),
  ])();
}

/** A value of another JSON type than `v`. */
function otherType(rng: Rng, v: Node): Node {
  const options: Node[] = [null, true, false, [], {}, '', typeof v === 'number' ? String(v) : 7, [v], { v }];
  if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) options.push(Number(v));
  return rng.pick(options);
}

function nested(rng: Rng): Raw {
  const depth = rng.pick([64, 200, 1000, 10000, 100000]);
  if (rng.chance(0.5)) return new Raw('['.repeat(depth) + ']'.repeat(depth));
  return new Raw('{"a":'.repeat(depth) + '1' + '}'.repeat(depth));
}

function hugeArray(rng: Rng): Raw {
  const n = rng.pick([1000, 100000, 1000000]);
  return new Raw('[' + new Array(n).fill(rng.pick(['0', '1', '-1', '1e308', '"x"'])).join(',') + ']');
}

/** Random value for a new or replaced entry. */
function randomValue(rng: Rng, pool: readonly string[]): Node {
  return rng.pick<() => Node>([
    () => interestingNumber(rng, rng.pick([1, 64, 4096])),
    () => interestingString(rng, 'x', pool),
    () => otherType(rng, 1),
    () => nested(rng),
  ])();
}

export interface JsonMutateOptions {
  /** Keys worth adding or duplicating (the format's known keys). */
  keys?: readonly string[];
  /** Strings worth substituting (the format's enum values, file names, hook names). */
  strings?: readonly string[];
  /** Number of edits; defaults to 1-3. */
  edits?: number;
  /** Probability of choosing among shallow paths (depth <= 2) rather than any path. */
  shallow?: number;
  /** Probability that an edit is a number edit of a numeric value (sizes in a config). */
  numbers?: number;
}

/**
 * Mutates `root` in place (possibly replacing it) with 1-3 JSON-aware edits; returns the new
 * root and a short description of each edit.
 */
export function mutateJson(rng: Rng, root: Node, opts: JsonMutateOptions = {}): { root: Node; what: string[] } {
  const keys = opts.keys ?? [];
  const strings = opts.strings ?? [];
  const what: string[] = [];
  const edits = opts.edits ?? rng.weighted([[1, 6], [2, 3], [3, 1]]);
  for (let e = 0; e < edits; e++) {
    const all = paths(root);
    const shallow = all.filter((p) => p.length <= 2);
    const pool = shallow.length && rng.chance(opts.shallow ?? 0.6) ? shallow : all;
    if (pool.length === 0) {
      root = rng.chance(0.5) ? {} : nested(rng);
      what.push('replace root');
      continue;
    }
    const numeric = pool.filter((q) => typeof get(root, q) === 'number');
    const numberEdit = numeric.length > 0 && rng.chance(opts.numbers ?? 0);
    const p = rng.pick(numberEdit ? numeric : pool);
    const v = get(root, p);
    const name = p.join('.');
    let detail = '';
    const put = (nv: Node) => {
      detail = ' = ' + stringify(nv).slice(0, 40);
      root = set(root, p, nv);
    };
    const op = numberEdit ? 'number' : rng.weighted<string>([
      ['delete', 3],
      ['number', typeof v === 'number' ? 6 : 1],
      ['type', 3],
      ['string', typeof v === 'string' ? 5 : 1],
      ['nest', 1],
      ['dup', 2],
      ['add', keys.length ? 2 : 1],
      ['array', Array.isArray(v) ? 4 : 0.5],
      ['swap', 1],
    ]);
    switch (op) {
      case 'delete':
        root = set(root, p, undefined);
        break;
      case 'number':
        put(interestingNumber(rng, typeof v === 'number' ? v : rng.pick([1, 64, 4096])));
        break;
      case 'type':
        put(otherType(rng, v));
        break;
      case 'string':
        put(interestingString(rng, typeof v === 'string' ? v : 'x', strings));
        break;
      case 'nest':
        put(nested(rng));
        break;
      case 'dup': {
        // Repeat this entry's key in its parent object with another value, before or after.
        const parentPath = p.slice(0, -1);
        const parent = get(root, parentPath);
        const key = p[p.length - 1]!;
        if (!isObject(parent)) {
          root = set(root, p, otherType(rng, v));
          break;
        }
        const entries = Object.entries(parent) as [string, Node][];
        const i = entries.findIndex(([k]) => k === key);
        const copy: [string, Node] = [String(key), rng.chance(0.5) ? otherType(rng, v) : typeof v === 'number' ? interestingNumber(rng, v) : randomValue(rng, strings)];
        entries.splice(rng.chance(0.5) ? i : i + 1, 0, copy);
        root = set(root, parentPath, new Dup(entries));
        break;
      }
      case 'add': {
        const parentPath = rng.chance(0.7) ? [] : p.slice(0, -1);
        const parent = get(root, parentPath);
        if (isObject(parent)) parent[keys.length && rng.chance(0.8) ? rng.pick(keys) : 'unknown_key_' + rng.int(100)] = randomValue(rng, strings);
        break;
      }
      case 'array': {
        if (!Array.isArray(v)) {
          root = set(root, p, rng.chance(0.5) ? [v, v] : hugeArray(rng));
          break;
        }
        const kind = rng.pick(['empty', 'dup', 'drop', 'huge', 'reverse', 'grow']);
        if (kind === 'empty') v.length = 0;
        else if (kind === 'dup' && v.length) v.splice(rng.int(v.length), 0, v[rng.int(v.length)]!);
        else if (kind === 'drop' && v.length) v.splice(rng.int(v.length), 1);
        else if (kind === 'reverse') v.reverse();
        else if (kind === 'grow') v.push(...new Array(rng.pick([1, 10, 100])).fill(v[0] ?? 0));
        else root = set(root, p, hugeArray(rng));
        break;
      }
      case 'swap': {
        const q = rng.pick(all);
        const a = get(root, p), b = get(root, q);
        if (q.join('.').startsWith(name) || name.startsWith(q.join('.'))) break;
        root = set(root, p, b);
        root = set(root, q, a);
        detail = ` <-> ${q.join('.')}`;
        break;
      }
    }
    what.push(`${op} ${name}${detail}`);
  }
  return { root, what };
}

/** Parses JSON text into a mutable tree (the fixtures hold no duplicate keys). */
export function parseJson(text: string): Node {
  return JSON.parse(text) as Node;
}
