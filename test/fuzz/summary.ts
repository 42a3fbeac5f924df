// The fuzz report: which case ids a run covers, cases per kind, outcomes per code, and each
// failure with a one-line command that reproduces it.
import { KINDS, type Kind } from './cases.js';
import type { CaseResult } from './supervisor.js';

/** `count` case ids, round-robin over `kinds`, numbered from `from`: config:0, weights:0, ... */
export function caseIds(count: number, from = 0, kinds: readonly Kind[] = KINDS): string[] {
  return Array.from({ length: count }, (_, i) => `${kinds[i % kinds.length]}:${from + Math.floor(i / kinds.length)}`);
}

/** The outcome of a result as one label: `ok`, a code (with ` (run)` / ` (attach)` after a successful load), or the failure class. */
export function label(r: CaseResult): string {
  const o = r.outcome;
  if (o.status === 'ok') return 'ok';
  if (o.status === 'coded') return o.stage ? `${o.code} (${o.stage})` : o.code;
  return o.outcome;
}

export function failures(results: readonly CaseResult[]): CaseResult[] {
  return results.filter((r) => r.outcome.status === 'failure');
}

/** The shell command that reruns one case (against NEUROTAP_FUZZ_ROOT when set). */
export function reproducer(id: string): string {
  const root = process.env.NEUROTAP_FUZZ_ROOT ? `NEUROTAP_FUZZ_ROOT=${process.env.NEUROTAP_FUZZ_ROOT} ` : '';
  return `${root}npx tsx test/fuzz/main.ts --case ${id}`;
}

function counts(items: readonly string[]): [string, number][] {
  const m = new Map<string, number>();
  for (const x of items) m.set(x, (m.get(x) ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

/** The printed report. */
export function summarize(results: readonly CaseResult[], seconds: number): string {
  const bad = failures(results);
  const lines = [`neurotap fuzz: ${results.length} cases in ${seconds.toFixed(1)} s, ${bad.length} failure(s)`];
  lines.push('cases per kind: ' + counts(results.map((r) => r.kind)).map(([k, n]) => `${k} ${n}`).join(', '));
  lines.push('outcomes:');
  for (const [l, n] of counts(results.map(label))) {
    const these = results.filter((r) => label(r) === l);
    const kinds = counts(these.map((r) => r.kind)).map(([k, c]) => `${k} ${c}`).join(', ');
    lines.push(`  ${l.padEnd(32)} ${String(n).padStart(6)}   e.g. ${these[0]!.id.padEnd(16)} (${kinds})`);
  }
  const slow = [...results].sort((a, b) => b.ms - a.ms)[0];
  if (slow) lines.push(`slowest case: ${slow.id} ${slow.ms} ms (${label(slow)})`);
  if (bad.length) {
    lines.push('failures:');
    for (const r of bad) {
      const o = r.outcome as { outcome: string; message: string };
      lines.push(`  ${r.id}  ${r.kind}  ${o.outcome}: ${o.message}`);
      lines.push(`      mutation: ${r.what || '(not reported before the worker died)'}`);
      lines.push(`      reproduce: ${reproducer(r.id)}`);
    }
  }
  return lines.join('\n');
}
