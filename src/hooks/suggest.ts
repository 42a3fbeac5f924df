// "Did you mean" for hook names: the closest names to a misspelled one, and for a glob that
// matches nothing, the closest globs that do match. Tests: test/hook-types-glob-suggestions.test.ts.

/** One part of a glob: a literal character, `*` (within a dot-separated part), `**` (across parts) or `?`. */
type GlobToken = { kind: 'char'; c: string } | { kind: 'star' } | { kind: 'globstar' } | { kind: 'any' };

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** Up to `n` hook names closest to `name` by edit distance. */
export function suggestHooks(name: string, names: readonly string[], n = 3): string[] {
  return names
    .map((h) => ({ h, d: editDistance(name, h) }))
    .sort((a, b) => a.d - b.d || a.h.localeCompare(b.h))
    .slice(0, n)
    .map((x) => x.h);
}

function tokenize(glob: string): GlobToken[] {
  const out: GlobToken[] = [];
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      out.push({ kind: 'globstar' });
      i++;
    } else if (c === '*') out.push({ kind: 'star' });
    else if (c === '?') out.push({ kind: 'any' });
    else out.push({ kind: 'char', c });
  }
  return out;
}

function tokenText(t: GlobToken): string {
  return t.kind === 'char' ? t.c : t.kind === 'star' ? '*' : t.kind === 'globstar' ? '**' : '?';
}

/** Candidate last steps into cell (i, j) of {@link alignGlob}'s table: the cell they come from, their cost and what they add to the glob. */
function steps(tokens: readonly GlobToken[], name: string, i: number, j: number): { i: number; j: number; cost: number; emit: string }[] {
  const t = tokens[i - 1]!;
  const c = name[j - 1];
  const out: { i: number; j: number; cost: number; emit: string }[] = [];
  if (t.kind === 'star' || t.kind === 'globstar') {
    out.push({ i: i - 1, j, cost: 0, emit: tokenText(t) });  // the wildcard ends here
    if (j > 0 && (t.kind === 'globstar' || c !== '.')) out.push({ i, j: j - 1, cost: 0, emit: '' });  // it absorbs c
  }
  const same = j > 0 && (t.kind === 'char' ? t.c === c : t.kind === 'any' && c !== '.');
  if (same) out.push({ i: i - 1, j: j - 1, cost: 0, emit: tokenText(t) });
  // Of equally cheap corrections, deleting a character comes first: it keeps the glob general.
  out.push({ i: i - 1, j, cost: 1, emit: '' });  // delete the token
  if (j > 0 && !same && (t.kind === 'char' || t.kind === 'any')) out.push({ i: i - 1, j: j - 1, cost: 1, emit: c! });  // replace it by c
  if (j > 0) out.push({ i, j: j - 1, cost: 1, emit: c! });  // insert c
  return out;
}

/**
 * The fewest edits that make a glob match `name`: wildcards match for free (`*` any run without
 * a dot, `**` any run, `?` one character but a dot); inserting, deleting or replacing a
 * character costs 1. Returns the table, `d[i][j]` the cost of the first i tokens against the
 * first j characters.
 */
function alignGlob(tokens: readonly GlobToken[], name: string): Int32Array[] {
  const m = name.length;
  const d = [Int32Array.from({ length: m + 1 }, (_, j) => j)];
  for (let i = 1; i <= tokens.length; i++) {
    const t = tokens[i - 1]!;
    const wild = t.kind === 'star' || t.kind === 'globstar';
    const up = d[i - 1]!;
    const row = new Int32Array(m + 1);
    row[0] = up[0]! + (wild ? 0 : 1);
    for (let j = 1; j <= m; j++) {
      const c = name[j - 1]!;
      let best = Math.min(up[j]! + (wild ? 0 : 1), row[j - 1]! + 1);
      if (wild) {
        if (t.kind === 'globstar' || c !== '.') best = Math.min(best, row[j - 1]!);
      } else {
        best = Math.min(best, up[j - 1]! + ((t.kind === 'char' ? t.c === c : c !== '.') ? 0 : 1));
      }
      row[j] = best;
    }
    d.push(row);
  }
  return d;
}

/** The glob `tokens` corrected to match `name` along the cheapest path of its table `d`. */
function correctedGlob(tokens: readonly GlobToken[], name: string, d: readonly Int32Array[]): string {
  const parts: string[] = [];
  let i = tokens.length;
  let j = name.length;
  while (i > 0) {
    const s = steps(tokens, name, i, j).find((s) => d[s.i]![s.j]! + s.cost === d[i]![j]!)!;
    parts.push(s.emit);
    i = s.i;
    j = s.j;
  }
  parts.push(name.slice(0, j));
  return parts.reverse().join('');
}

/**
 * Up to `n` globs closest to `glob` (fewest edits, {@link alignGlob}) that match at least one of
 * `names`: `'blocks.*.attn.hook_patern'` gives `'blocks.*.attn.hook_pattern'`.
 */
export function suggestGlobs(glob: string, names: readonly string[], n = 3): string[] {
  const tokens = tokenize(glob);
  const ranked = names.map((name) => ({ name, cost: alignGlob(tokens, name)[tokens.length]![name.length]! })).sort((a, b) => a.cost - b.cost);
  const out: { glob: string; cost: number }[] = [];
  for (const r of ranked) {
    // Past the n-th distinct glob, only ties at its cost can still come in.
    if (out.length >= n && r.cost > out[n - 1]!.cost) break;
    const g = correctedGlob(tokens, r.name, alignGlob(tokens, r.name));
    if (!out.some((o) => o.glob === g)) out.push({ glob: g, cost: r.cost });
  }
  return out.sort((a, b) => a.cost - b.cost || a.glob.localeCompare(b.glob)).slice(0, n).map((o) => o.glob);
}
