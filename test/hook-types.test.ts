// Hook names are typed wherever they are taken (capture, hooks, outputs, cache.get, backward's
// grads / seeds / capture / `_grad` hooks, extract, attribution, attachSae, generate), and editors
// complete block hooks: checked with the TypeScript compiler and language service over files
// that import the package source, as a user's project would.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const PRELUDE = `import { attributionPatching, edits, featureHooks, integratedGradients, mergeHooks, steeringHooks, Tensor, type AttachedSae, type Model, type Sae, type SteeringVector } from '../src/index.js';
declare const gpt2: Model<'gpt2'>;
declare const llama: Model<'llama'>;
declare const untyped: Model;
declare const ids: number[][];
declare const name: string;
declare const layer: number;
declare const t: Tensor;
declare const sae: Sae;
declare const sv: SteeringVector;
declare const attached: AttachedSae<'gpt2'>;
const src = { kind: 'text' as const, files: ['a.txt'] };
export async function uses(): Promise<void> {
`;

/** In-memory files over the real sources, type-checked with the repository's tsconfig.json. */
class VirtualProject {
  private readonly files = new Map<string, string>();
  readonly service: ts.LanguageService;

  constructor() {
    const fail = (d: ts.Diagnostic) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    };
    const config = ts.getParsedCommandLineOfConfigFile(join(ROOT, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: fail })!;
    const options = { ...config.options, noEmit: true };
    const read = (f: string) => this.files.get(f) ?? (existsSync(f) ? readFileSync(f, 'utf8') : undefined);
    const host: ts.LanguageServiceHost = {
      getScriptFileNames: () => [...this.files.keys()],
      getScriptVersion: (f) => String(this.files.get(f)?.length ?? 0),
      getScriptSnapshot: (f) => {
        const text = read(f);
        return text === undefined ? undefined : ts.ScriptSnapshot.fromString(text);
      },
      getCurrentDirectory: () => ROOT,
      getCompilationSettings: () => options,
      getDefaultLibFileName: (o) => ts.getDefaultLibFilePath(o),
      fileExists: (f) => this.files.has(f) || existsSync(f),
      readFile: read,
      readDirectory: ts.sys.readDirectory,
      directoryExists: ts.sys.directoryExists,
      getDirectories: ts.sys.getDirectories,
    };
    this.service = ts.createLanguageService(host, ts.createDocumentRegistry());
  }

  /** Adds `body` (statements) inside an async function after {@link PRELUDE}; returns its path and the line of body's first line. */
  add(name: string, body: string): { file: string; firstLine: number } {
    const file = join(ROOT, 'test', `__${name}__.ts`);
    this.files.set(file, `${PRELUDE}${body}\n}\n`);
    return { file, firstLine: PRELUDE.split('\n').length - 1 };
  }

  /** The completions offered at the `|` of each site (one statement each). */
  completions(name: string, sites: readonly string[]): string[][] {
    const { file } = this.add(name, sites.map((site) => site.replace('|', '')).join('\n'));
    const text = this.files.get(file)!;
    return sites.map((site) => {
      const pos = text.indexOf(site.replace('|', '')) + site.indexOf('|');
      return (this.service.getCompletionsAtPosition(file, pos, {})?.entries ?? []).map((e) => e.name);
    });
  }
}

let project: VirtualProject;
beforeAll(() => {
  project = new VirtualProject();
});
afterAll(() => project?.service.dispose());

/** Statements that compile, and statements that do not with TypeScript's exact error. */
const CASES: [code: string, error?: string][] = [
  // run: names, globs, computed names, SAE hooks, deep layers
  ["void gpt2.run(ids, { capture: ['blocks.0.attn.hook_pattern', 'blocks.47.hook_resid_post', 'hook_pos_embed', 'ln_final.hook_normalized'] });"],
  ["void gpt2.run(ids, { capture: ['blocks.*.hook_resid_pre', '**', 'blocks.?.attn.hook_z', 'blocks.1*.mlp.hook_post', 'blocks.**'] });"],
  ["void gpt2.run(ids, { capture: 'blocks.3.mlp.hook_post' });"],
  ['void gpt2.run(ids, { capture: [`blocks.${layer}.hook_resid_post`, `blocks.${layer}.hook_resid_post.hook_sae_acts_post`] });'],
  ["void gpt2.run(ids, { hooks: { 'blocks.0.attn.hook_z': edits.zero(), 'blocks.30.hook_resid_post': edits.scale(2), hook_embed: () => undefined } });"],
  ["void gpt2.run(ids, { outputs: { 'blocks.0.hook_resid_pre': new Float32Array(4) } });"],
  ["(await gpt2.run(ids)).cache.get('blocks.0.hook_resid_pre');"],
  ['(await gpt2.run(ids)).cache.get(`blocks.${layer}.mlp.hook_post`);'],
  ["void llama.run(ids, { capture: ['blocks.0.attn.hook_rot_q', 'blocks.0.mlp.hook_pre_linear'] });"],
  // an unknown family takes any string, but not a misspelled hooks key
  ["void untyped.run(ids, { capture: [name, 'blocks.0.anything', 'blocks.*.x'], outputs: { [name]: new Float32Array(1) } });"],
  ["(await untyped.run(ids)).cache.get(name);"],
  ["void untyped.run(ids, { hooks: { [name]: edits.zero(), 'blocks.0.attn.hook_rot_q': edits.zero() } });"],
  ["void untyped.run(ids, { outputs: { 'blocks.0.hook_resid_pr': new Float32Array(1) } });", "TS2353: Object literal may only specify known properties, and ''blocks.0.hook_resid_pr'' does not exist in type 'HookRecord<Family, Float32Array<ArrayBufferLike>>'."],
  ["void gpt2.run(ids, { hooks: { [name]: edits.zero() } });"],
  ['const z = `blocks.${layer}.attn.hook_z` as const; void gpt2.run(ids, { capture: z, hooks: { [z]: edits.zero() } });'],
  ['const w = `blocks.${layer}.attn.hook_z`; void gpt2.run(ids, { capture: w });', "TS2322: Type 'string' is not assignable to type 'HookPatternFor<\"gpt2\"> | readonly HookPatternFor<\"gpt2\">[] | undefined'."],
  ["void untyped.run(ids, { hooks: { 'blocks.0.attn.hook_patern': edits.zero() } });", "TS2353: Object literal may only specify known properties, and ''blocks.0.attn.hook_patern'' does not exist in type 'HookMap<Family>'."],
  // misspelled, or another family's, names
  ["void gpt2.run(ids, { capture: ['blocks.0.attn.hook_patern'] });", "TS2820: Type '\"blocks.0.attn.hook_patern\"' is not assignable to type 'HookPatternFor<\"gpt2\">'. Did you mean '\"blocks.0.attn.hook_pattern\"'?"],
  ["void gpt2.run(ids, { capture: 'blocks.0.attn.hook_rot_q' });", "TS2820: Type '\"blocks.0.attn.hook_rot_q\"' is not assignable to type 'HookPatternFor<\"gpt2\"> | readonly HookPatternFor<\"gpt2\">[] | undefined'. Did you mean '\"blocks.0.attn.hook_q\"'?"],
  ["void llama.run(ids, { capture: ['hook_pos_embed'] });", "TS2820: Type '\"hook_pos_embed\"' is not assignable to type 'HookPatternFor<\"llama\">'. Did you mean '\"hook_embed\"'?"],
  ["void gpt2.run(ids, { capture: [name] });", "TS2322: Type 'string' is not assignable to type 'HookPatternFor<\"gpt2\">'."],
  ["void gpt2.run(ids, { hooks: { 'blocks.0.attn.hook_zz': edits.zero() } });", "TS2353: Object literal may only specify known properties, and ''blocks.0.attn.hook_zz'' does not exist in type 'HookMap<\"gpt2\">'."],
  ["void gpt2.run(ids, { outputs: { 'blocks.0.hook_resid_pr': new Float32Array(4) } });", "TS2353: Object literal may only specify known properties, and ''blocks.0.hook_resid_pr'' does not exist in type 'HookRecord<\"gpt2\", Float32Array<ArrayBufferLike>>'."],
  ["(await gpt2.run(ids)).cache.get('blocks.0.hook_resid_pr');", "TS2345: Argument of type '\"blocks.0.hook_resid_pr\"' is not assignable to parameter of type 'HookKeyFor<\"gpt2\">'."],
  ["void gpt2.generate(ids, { maxNewTokens: 1, capture: ['blocks.0.hook_residpost'] });", "TS2820: Type '\"blocks.0.hook_residpost\"' is not assignable to type 'HookPatternFor<\"gpt2\">'. Did you mean '\"blocks.0.hook_resid_post\"'?"],
  // hook maps built by helpers (README examples)
  ["void llama.generate(ids, { maxNewTokens: 1, hooks: { ...steeringHooks(sv, 4), 'blocks.5.attn.hook_z': edits.zero({ heads: [3] }) } });"],
  ["void gpt2.run(ids, { hooks: mergeHooks(featureHooks(attached, { zero: [1] }), steeringHooks(sv), { 'blocks.0.attn.hook_z': edits.zero() }) });"],
  ["void gpt2.run(ids, { hooks: { ...featureHooks(attached, { zero: [1] }), 'blocks.0.attn.hook_z': edits.zero() } });"],
  // backward
  ["void gpt2.backward(ids, { metric: 'loss', grads: ['blocks.*.hook_resid_pre', 'blocks.1.attn.hook_z'], capture: 'blocks.0.hook_resid_post', hooks: { 'blocks.1.hook_resid_pre_grad': edits.zero(), 'blocks.0.attn.hook_pattern': edits.zero() } });"],
  ["void gpt2.backward(ids, { seeds: { 'blocks.1.hook_resid_post': t }, grads: 'blocks.0.hook_resid_pre' });"],
  ["(await gpt2.backward(ids, { metric: 'loss', grads: '**' })).grads.get('blocks.1.attn.hook_q');"],
  ["void gpt2.backward(ids, { metric: 'loss', grads: ['blocks.0.hook_resid_prre'] });", "TS2820: Type '\"blocks.0.hook_resid_prre\"' is not assignable to type 'HookPatternFor<\"gpt2\">'. Did you mean '\"blocks.0.hook_resid_pre\"'?"],
  ["void gpt2.backward(ids, { metric: 'loss', capture: ['blocks.0.hook_mlp_ot'] });", "TS2820: Type '\"blocks.0.hook_mlp_ot\"' is not assignable to type 'HookPatternFor<\"gpt2\">'. Did you mean '\"blocks.0.hook_mlp_out\"'?"],
  ["void gpt2.backward(ids, { seeds: { 'blocks.1.hook_resid_pst': t } });", "TS2353: Object literal may only specify known properties, and ''blocks.1.hook_resid_pst'' does not exist in type 'HookRecord<\"gpt2\", Tensor>'."],
  ["void gpt2.backward(ids, { metric: 'loss', hooks: { 'blocks.1.hook_resid_pre_grd': edits.zero() } });", "TS2353: Object literal may only specify known properties, and ''blocks.1.hook_resid_pre_grd'' does not exist in type 'BackwardHookMap<\"gpt2\">'."],
  ["(await gpt2.backward(ids, { metric: 'loss', grads: '**' })).grads.get('blocks.1.attn.hook_qq');", "TS2345: Argument of type '\"blocks.1.attn.hook_qq\"' is not assignable to parameter of type 'HookKeyFor<\"gpt2\">'."],
  // extract, attribution, SAEs
  ["for await (const b of gpt2.extract(src, { hooks: ['blocks.0.hook_resid_post', 'blocks.*.mlp.hook_post'], seqLen: 8 })) b.activations.get('blocks.0.hook_resid_post');"],
  ["for await (const b of gpt2.extract(src, { hooks: ['blocks.0.hook_resid_pots'], seqLen: 8 })) void b;", "TS2820: Type '\"blocks.0.hook_resid_pots\"' is not assignable to type 'HookPatternFor<\"gpt2\">'. Did you mean '\"blocks.0.hook_resid_post\"'?"],
  ["for await (const b of gpt2.extract(src, { hooks: ['**'], seqLen: 8 })) b.activations.get('blocks.0.hook_resid_pots');", "TS2345: Argument of type '\"blocks.0.hook_resid_pots\"' is not assignable to parameter of type 'HookKeyFor<\"gpt2\">'."],
  ["(await attributionPatching(gpt2, 'a', 'b', { metric: 'loss', hooks: ['blocks.*.attn.hook_z', 'blocks.0.hook_resid_pre'] })).scores.get('blocks.0.attn.hook_z');"],
  ["void attributionPatching(gpt2, 'a', 'b', { metric: 'loss', hooks: 'blocks.0.attn.hook_zz' });", "TS2820: Type '\"blocks.0.attn.hook_zz\"' is not assignable to type 'HookPatternFor<\"gpt2\"> | readonly HookPatternFor<\"gpt2\">[]'. Did you mean '\"blocks.0.attn.hook_z\"'?"],
  ["(await attributionPatching(gpt2, 'a', 'b', { metric: 'loss', hooks: '**' })).scores.get('blocks.0.attn.hook_zz');", "TS2345: Argument of type '\"blocks.0.attn.hook_zz\"' is not assignable to parameter of type 'HookKeyFor<\"gpt2\">'."],
  ["void integratedGradients(gpt2, 'a', { metric: 'loss', hook: 'blocks.0.hook_resid_post' });"],
  ["void integratedGradients(gpt2, 'a', { metric: 'loss', hook: 'blocks.0.hook_resid_posst' });", "TS2820: Type '\"blocks.0.hook_resid_posst\"' is not assignable to type 'HookKeyFor<\"gpt2\">'. Did you mean '\"blocks.0.hook_resid_post\"'?"],
  ["void gpt2.attachSae(sae, { hook: 'blocks.1.hook_resid_post' });"],
  ["void gpt2.attachSae(sae, { hook: 'blocks.1.hook_resid_pos' });", "TS2820: Type '\"blocks.1.hook_resid_pos\"' is not assignable to type 'HookKeyFor<\"gpt2\"> | undefined'. Did you mean '\"blocks.1.hook_resid_post\"'?"],
  ["void gpt2.run(ids, { saeFeatures: { k: 4, hooks: ['blocks.1.hook_resid_pos'] } });", "TS2820: Type '\"blocks.1.hook_resid_pos\"' is not assignable to type 'HookKeyFor<\"gpt2\">'. Did you mean '\"blocks.1.hook_resid_post\"'?"],
];

describe('typed hook names', () => {
  it('reject a misspelled name where the family is known, and take globs and computed names', () => {
    const { file, firstLine } = project.add('hook-names', CASES.map(([code]) => code).join('\n'));
    const diagnostics = [...project.service.getSyntacticDiagnostics(file), ...project.service.getSemanticDiagnostics(file)];
    const program = project.service.getProgram()!;
    const source = program.getSourceFile(file)!;
    const byLine = new Map<number, string[]>();
    for (const d of diagnostics) {
      const line = source.getLineAndCharacterOfPosition(d.start!).line - firstLine;
      const head = ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n')[0]!;
      byLine.set(line, [...(byLine.get(line) ?? []), `TS${d.code}: ${head}`]);
    }
    const got = CASES.map(([code], i) => ({ code, errors: byLine.get(i) ?? [] }));
    expect(got).toEqual(CASES.map(([code, error]) => ({ code, errors: error ? [error] : [] })));
  });

  it('editors complete the block hooks after `blocks.0.`, as the model has them', async () => {
    // Where a user's cursor stands (|), each site offers every block hook GPT-2 has.
    const sites = [
      "void gpt2.run(ids, { capture: ['blocks.0.|'] });",
      "void gpt2.run(ids, { capture: 'blocks.0.|' });",
      "void gpt2.run(ids, { hooks: { 'blocks.0.|': edits.zero() } });",
      "(await gpt2.run(ids)).cache.get('blocks.0.|');",
      "void gpt2.generate(ids, { maxNewTokens: 1, capture: ['blocks.0.|'] });",
      "void gpt2.backward(ids, { metric: 'loss', grads: ['blocks.0.|'], capture: ['blocks.0.'] });",
      "void gpt2.backward(ids, { metric: 'loss', hooks: { 'blocks.0.|': edits.zero() } });",
      "for await (const b of gpt2.extract(src, { hooks: ['blocks.0.|'], seqLen: 8 })) void b;",
      "void attributionPatching(gpt2, 'a', 'b', { metric: 'loss', hooks: ['blocks.0.|'] });",
      "void integratedGradients(gpt2, 'a', { metric: 'loss', hook: 'blocks.0.|' });",
    ];
    const offered = project.completions('hook-completions', sites);
    // The reference: GPT-2's block hooks in the native hook table.
    const model = await loadModel(fixtureDir('gpt2'), { family: 'gpt2' });
    const native = model.hookNames.filter((h) => h.startsWith('blocks.0.')).map((h) => h.slice('blocks.0.'.length)).sort();
    model.dispose();
    expect(native.length).toBeGreaterThan(20);
    const suffixes = (names: string[], prefix: string) => names.filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length)).sort();
    sites.forEach((site, i) => expect({ site, offered: suffixes(offered[i]!, 'blocks.0.') }).toEqual({ site, offered: native }));
    // Completion reaches layer 23 (CompletedLayer); deeper layers type-check without it.
    const [deep, llama] = project.completions('hook-completions-more', ["void gpt2.run(ids, { capture: ['blocks.23.|'] });", "void llama.run(ids, { capture: ['blocks.0.|'] });"]);
    expect(suffixes(deep!, 'blocks.23.')).toEqual(native);
    expect(deep!.some((n) => n.startsWith('blocks.24.'))).toBe(false);
    expect(llama).toContain('blocks.0.attn.hook_rot_q');
    expect(llama).toContain('blocks.0.mlp.hook_pre_linear');
    expect(llama).not.toContain('blocks.0.attn.q_norm.hook_scale');
    expect(llama).not.toContain('hook_pos_embed');
  });
});
