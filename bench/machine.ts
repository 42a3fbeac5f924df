// What the benchmarks record about the machine: CPU model and ISA flags, the measured ceilings
// (bench/ceiling.cc, built once into bench/out/), and the FLOPs and weight bytes a model needs per token.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { cpuModel, cpuTimes, loadAvg1, waitForQuiet } from './common.js';

/** The ISA flags (as /proc/cpuinfo spells them) that decide which kernels can run. */
export const ISA_FLAGS = ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8'] as const;

/** Which of {@link ISA_FLAGS} this CPU has (empty off Linux). */
export function cpuFlags(): { present: string[]; absent: string[] } {
  let flags = new Set<string>();
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    if (line) flags = new Set(line.slice(line.indexOf(':') + 1).trim().split(/\s+/));
  } catch {
    // not Linux
  }
  return { present: ISA_FLAGS.filter((f) => flags.has(f)), absent: ISA_FLAGS.filter((f) => !flags.has(f)) };
}

/** One line naming the CPU, its core count and its ISA flags. */
export function machineLine(): string {
  const { present, absent } = cpuFlags();
  return `${cpuModel()}, ${availableParallelism()} logical CPUs; has ${present.join(' ') || '-'}; lacks ${absent.join(' ') || '-'}`;
}

/** GFLOP/s (or GB/s for read bandwidth) by thread count, or why it was not measured. */
export type Figure = Record<string, number> | { skipped: string };

export interface Ceilings {
  fp32_fma_512: Figure;
  fp32_fma_256: Figure;
  bf16_avx512: Figure;
  bf16_amx: Figure;
  read_gbs: Figure;
  /** CPU used by other processes while the ceilings were measured, in cores. */
  foreignCores: number;
  loadBefore: number;
  loadAfter: number;
}

/** Builds bench/ceiling.cc with g++ -O3 into bench/out/ (once per source version) and returns the binary's path. */
export function ceilingBinary(here: string): string {
  const src = join(here, 'ceiling.cc');
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 12);
  const dir = join(here, 'out');
  const bin = join(dir, `ceiling-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  console.log(`building ${bin} (g++ -O3) ...`);
  const r = spawnSync('g++', ['-std=c++17', '-O3', '-pthread', src, '-o', bin], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`g++ failed to build bench/ceiling.cc (status ${r.status}); is g++ installed?`);
  return bin;
}

/**
 * Measures the ceilings on 1..`threads` threads, after waiting (up to `quietWait` s) for a quiet
 * second; other processes' CPU use during the measurement comes back with it. Each figure is
 * the best of 5 short trials, so load lowers it less than it lowers a single timing. A busy
 * measurement is retried (`tries` in all); with none quiet, each figure is the best over the tries.
 */
export async function measureCeilings(here: string, threads: number, quiet: { maxForeign: number; quietWait: number }, tries = 3): Promise<Ceilings> {
  let best: Ceilings | undefined;
  for (let i = 0; i < tries; i++) {
    const c = await measureCeilingsOnce(here, threads, quiet);
    if (c.foreignCores <= quiet.maxForeign) return c;
    best = best
      ? {
          fp32_fma_512: bestOf(best.fp32_fma_512, c.fp32_fma_512),
          fp32_fma_256: bestOf(best.fp32_fma_256, c.fp32_fma_256),
          bf16_avx512: bestOf(best.bf16_avx512, c.bf16_avx512),
          bf16_amx: bestOf(best.bf16_amx, c.bf16_amx),
          read_gbs: bestOf(best.read_gbs, c.read_gbs),
          foreignCores: Math.min(best.foreignCores, c.foreignCores),
          loadBefore: best.loadBefore,
          loadAfter: c.loadAfter,
        }
      : c;
  }
  return best!;
}

async function measureCeilingsOnce(here: string, threads: number, quiet: { maxForeign: number; quietWait: number }): Promise<Ceilings> {
  const bin = ceilingBinary(here);
  await waitForQuiet(quiet.maxForeign, quiet.quietWait);
  const loadBefore = loadAvg1();
  const c0 = cpuTimes();
  const t0 = performance.now();
  const r = spawnSync(bin, ['--threads', String(threads)], { encoding: 'utf8' });
  const wall = (performance.now() - t0) / 1000;
  const c1 = cpuTimes();
  if (r.status !== 0) throw new Error(`${bin} failed (status ${r.status}): ${r.stderr}`);
  const out = JSON.parse(r.stdout) as Omit<Ceilings, 'foreignCores' | 'loadBefore' | 'loadAfter'> & { cpu_seconds: number };
  const foreignCores = c0 && c1 ? Math.max(0, c1.busy - c0.busy - out.cpu_seconds) / wall : 0;
  const { cpu_seconds: _, ...figures } = out;
  return { ...figures, foreignCores, loadBefore, loadAfter: loadAvg1() };
}

/** The figure at `threads`, or undefined when skipped. */
export function at(f: Figure, threads: number): number | undefined {
  return 'skipped' in f ? undefined : f[String(threads)];
}

/** The higher of two measurements of one figure (load only ever lowers a peak). */
export function bestOf(a: Figure, b: Figure): Figure {
  if ('skipped' in a || 'skipped' in b) return a;
  return Object.fromEntries(Object.keys(a).map((k) => [k, Math.max(a[k]!, b[k] ?? 0)]));
}

/** The fp32 FMA peak at `threads`: the faster of the 512- and 256-bit loops. */
export function fp32Peak(c: Pick<Ceilings, 'fp32_fma_512' | 'fp32_fma_256'>, threads: number): number | undefined {
  const xs = [at(c.fp32_fma_512, threads), at(c.fp32_fma_256, threads)].filter((x): x is number => x !== undefined);
  return xs.length ? Math.max(...xs) : undefined;
}

/** The bf16 peak at `threads`: AMX where measured, else AVX512_BF16. */
export function bf16Peak(c: Pick<Ceilings, 'bf16_amx' | 'bf16_avx512'>, threads: number): number | undefined {
  return at(c.bf16_amx, threads) ?? at(c.bf16_avx512, threads);
}

function figureText(f: Figure, unit: string): string {
  return 'skipped' in f ? `skipped (${f.skipped})` : Object.entries(f).map(([t, v]) => `${v.toFixed(0)} ${unit} on ${t} thread${t === '1' ? '' : 's'}`).join(', ');
}

/** The ceilings as printable lines; measured while others used over `maxForeign` cores, they are marked BUSY (they then read low). */
export function ceilingLines(c: Ceilings, maxForeign: number): string[] {
  return [
    `ceiling fp32 FMA 512-bit: ${figureText(c.fp32_fma_512, 'GFLOP/s')}`,
    `ceiling fp32 FMA 256-bit: ${figureText(c.fp32_fma_256, 'GFLOP/s')}`,
    `ceiling bf16 vdpbf16ps 512-bit: ${figureText(c.bf16_avx512, 'GFLOP/s')}`,
    `ceiling bf16 AMX tdpbf16ps: ${figureText(c.bf16_amx, 'GFLOP/s')}`,
    `ceiling read bandwidth: ${figureText(c.read_gbs, 'GB/s')}`,
    `  (others used ${c.foreignCores.toFixed(2)} cores meanwhile; load ${c.loadBefore.toFixed(2)} -> ${c.loadAfter.toFixed(2)})` +
      (c.foreignCores > maxForeign ? ' BUSY (each try): these ceilings may read low' : ''),
  ];
}

/** The parts of a decoder's shape that set its arithmetic, read from an HF config.json (GPT-2 or Llama-like). */
export interface ModelShape {
  layers: number;
  dModel: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  dMlp: number;
  /** SwiGLU-style MLP: three matrices (gate, up, down) instead of two. */
  gated: boolean;
  vocab: number;
}

export function modelShape(modelDir: string): ModelShape {
  const c = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as Record<string, number | null | undefined>;
  if (c.n_embd !== undefined) {
    const d = c.n_embd!;
    return { layers: c.n_layer!, dModel: d, heads: c.n_head!, kvHeads: c.n_head!, headDim: d / c.n_head!, dMlp: c.n_inner ?? 4 * d, gated: false, vocab: c.vocab_size! };
  }
  const d = c.hidden_size!;
  const heads = c.num_attention_heads!;
  return {
    layers: c.num_hidden_layers!,
    dModel: d,
    heads,
    kvHeads: c.num_key_value_heads ?? heads,
    headDim: c.head_dim ?? d / heads,
    dMlp: c.intermediate_size!,
    gated: true,
    vocab: c.vocab_size!,
  };
}

/** Weights a token's matrix products read: every linear of every block plus the LM head. */
export function matmulParams(s: ModelShape): number {
  const attn = s.dModel * s.headDim * (2 * s.heads + 2 * s.kvHeads);
  const mlp = (s.gated ? 3 : 2) * s.dModel * s.dMlp;
  return s.layers * (attn + mlp) + s.dModel * s.vocab;
}

/**
 * FLOPs for one token attending to `keys` earlier positions (itself included): 2 per weight
 * of every matrix product, plus q.k and p.v. A causal prefill of T tokens averages (T + 1) / 2 keys.
 * Without `lmHead` the LM head is left out (a prefill that returns the last position's logits
 * runs it once, not per token). Norms, activations and softmax are left out (a few per cent).
 */
export function flopsPerToken(s: ModelShape, keys: number, lmHead = true): number {
  const params = matmulParams(s) - (lmHead ? 0 : s.dModel * s.vocab);
  return 2 * params + s.layers * 4 * s.heads * s.headDim * keys;
}

/**
 * What the loaded model says about a `compute` option passed through to loadModel: loadModel
 * ignores options it does not know, so a build without the option would silently run its default.
 */
export function computeNote(model: object, compute: string): string {
  const reported = (model as { compute?: unknown }).compute;
  if (reported === undefined) return `WARNING: the model does not report a compute mode: this build of neurotap may ignore compute '${compute}'`;
  return reported === compute ? `model.compute is '${compute}'` : `WARNING: asked for compute '${compute}', model.compute is '${String(reported)}'`;
}
