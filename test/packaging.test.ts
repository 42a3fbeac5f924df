// The package as a user installs it: `npm pack`, an offline install of the tarball into fresh
// `npm init -y` projects with no compiler on PATH, then a model loaded through import, require and
// the README's TypeScript example under tsx; types for both module systems; the coded errors of a
// missing addon. Set NEUROTAP_TEST_PREBUILDIFY=1 to also pack with the real prebuildify (a full recompile).
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inspect } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readSafetensors } from '../src/index.js';
import { Tokenizer } from '../src/tokenizer.js';
import { compare, fixtureDir, ROOT } from './helpers.js';

const GPT2 = fixtureDir('gpt2');
// As prebuildify --napi --tag-libc names it: the package name, then the libc tag.
const PREBUILD = join('prebuilds', 'linux-x64', 'neurotap.glibc.node');
const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
const unsupported =
  process.platform !== 'linux' || process.arch !== 'x64' || !glibc
    ? `the packaging test packs a linux-x64 glibc prebuild; this is ${process.platform}-${process.arch}${glibc ? '' : ' without glibc'}`
    : !existsSync(join(ROOT, 'build', 'Release', 'neurotap.node')) || !existsSync(join(ROOT, 'dist', 'index.js'))
      ? 'build/Release/neurotap.node or dist/ is missing (run npm install, or npm run build)'
      : null;
if (unsupported) console.warn(`packaging: skipped, ${unsupported}`);
const prebuildify = process.env.NEUROTAP_TEST_PREBUILDIFY === '1';
if (!prebuildify) console.warn('packaging: the real prebuildify pack is skipped: it recompiles the whole addon (minutes); set NEUROTAP_TEST_PREBUILDIFY=1 to run it');

const tmp = mkdtempSync(join(tmpdir(), 'neurotap-pack-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// A user's PATH with node, npm and sh only: no python, make or C++ compiler, so any attempt to compile fails.
const userBin = join(tmp, 'bin');
const userEnv: NodeJS.ProcessEnv = {
  HOME: process.env.HOME,
  PATH: userBin,
  LANG: 'C.UTF-8',
  TMPDIR: tmpdir(),
  // An empty npm cache: with --offline, every package must come from the tarballs given.
  npm_config_cache: join(tmp, 'npm-cache'),
};

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = userEnv): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 240_000 });
}

function output(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`;
}

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv = userEnv): SpawnSyncReturns<string> {
  return run(join(userBin, 'npm'), args, cwd, env);
}

/** `npm pack` of `dir` into a new folder; the tarball's path. */
function pack(dir: string, into: string, scripts = false): string {
  mkdirSync(into, { recursive: true });
  const r = npm(['pack', '--json', '--pack-destination', into, ...(scripts ? [] : ['--ignore-scripts'])], dir, scripts ? process.env : userEnv);
  expect(r.status, output(r)).toBe(0);
  const [info] = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as { filename: string }[];
  return join(into, info!.filename);
}

/** The package's dependencies (and theirs), packed from this checkout's node_modules. */
function packDependencies(into: string): string[] {
  const seen = new Set<string>();
  const visit = (pkgDir: string) => {
    const deps = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {};
    for (const name of Object.keys(deps)) {
      if (seen.has(name)) continue;
      seen.add(name);
      visit(join(ROOT, 'node_modules', name));
    }
  };
  visit(ROOT);
  return [...seen].map((name) => pack(join(ROOT, 'node_modules', name), into));
}

let deps: string[] = [];

/** A fresh `npm init -y` project with `tgz` installed offline (and no compiler); the install's result. */
function install(name: string, tgz: string, flags: string[] = []): { dir: string; result: SpawnSyncReturns<string> } {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const init = npm(['init', '-y'], dir);
  expect(init.status, output(init)).toBe(0);
  const result = npm(['install', '--offline', '--no-audit', '--no-fund', ...flags, tgz, ...deps], dir);
  return { dir, result };
}

function node(args: string[], cwd: string): SpawnSyncReturns<string> {
  return run(join(userBin, 'node'), args, cwd);
}

/** The fixture's reference logits (HF transformers) and input ids. */
function reference(): { tokens: number[][]; logits: Float32Array } {
  const ref = readSafetensors(join(GPT2, 'reference.safetensors'));
  const ids = ref.get('input_ids')!;
  const [B, T] = ids.shape as [number, number];
  const flat = Array.from(ids.data as Int32Array, Number);
  return { tokens: Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T)), logits: ref.get('logits')!.data as Float32Array };
}

function expectReferenceLogits(file: string): void {
  const ref = reference().logits;
  const b = readFileSync(file);
  const ours = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const c = compare(ours, ref, 1e-5);
  expect(c.relError, `rel error ${c.relError}; ${c.firstMismatches.join('; ')}`).toBeLessThanOrEqual(1e-5);
}

// Loads the fixture and writes its logits for the reference ids (argv: model dir, output file).
const LOAD_BODY = `
  const [dir, out] = process.argv.slice(2);
  const ref = readSafetensors(dir + '/reference.safetensors');
  const ids = ref.get('input_ids');
  const [B, T] = ids.shape;
  const flat = Array.from(ids.data, Number);
  const tokens = Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
  const model = await loadModel(dir, { threads: 2 });
  const { logits } = await model.run(tokens);
  writeFileSync(out, logits.data);
  model.dispose();`;

describe.skipIf(unsupported !== null)('the packed package, installed offline with no compiler', () => {
  let withPrebuild: string;
  let noPrebuild: string;
  let user: string;

  beforeAll(() => {
    mkdirSync(userBin);
    const npmCli = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
    if (!npmCli) throw new Error('npm is not on PATH');
    symlinkSync(process.execPath, join(userBin, 'node'));
    symlinkSync(realpathSync(npmCli), join(userBin, 'npm'));
    symlinkSync('/bin/sh', join(userBin, 'sh'));

    deps = packDependencies(join(tmp, 'deps'));
    // The package as `npm pack` selects it, unpacked; packed again without, then with, a prebuilt
    // binary laid out as prebuildify writes it (this checkout's build, which is what prebuildify compiles).
    const first = pack(ROOT, join(tmp, 'pack'));
    mkdirSync(join(tmp, 'stage'));
    const x = run('tar', ['xzf', first, '-C', join(tmp, 'stage')], tmp, process.env);
    expect(x.status, output(x)).toBe(0);
    const stage = join(tmp, 'stage', 'package');
    rmSync(join(stage, 'prebuilds'), { recursive: true, force: true });
    noPrebuild = pack(stage, join(tmp, 'pack-no-prebuild'));
    mkdirSync(dirname(join(stage, PREBUILD)), { recursive: true });
    cpSync(join(ROOT, 'build', 'Release', 'neurotap.node'), join(stage, PREBUILD));
    withPrebuild = pack(stage, join(tmp, 'pack-prebuild'));

    const { dir, result } = install('user', withPrebuild);
    expect(result.status, output(result)).toBe(0);
    user = dir;
  }, 240_000);

  it('ships a LICENSE, the types, the install script and self-contained source maps, and no src/', () => {
    const stage = join(tmp, 'stage', 'package');
    for (const f of ['LICENSE', 'package.json', 'dist/index.js', 'dist/index.d.ts', 'scripts/install.js', 'binding.gyp']) expect(existsSync(join(stage, f)), f).toBe(true);
    expect(existsSync(join(stage, 'src'))).toBe(false);
    const maps = readdirSync(join(stage, 'dist'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js.map'));
    expect(maps.length).toBeGreaterThan(10);
    for (const m of maps) {
      const map = JSON.parse(readFileSync(join(stage, 'dist', m), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
      expect(map.sourcesContent?.length, `${m} has no sourcesContent`).toBe(map.sources.length);
      expect(map.sourcesContent!.every((s) => typeof s === 'string' && s.length > 0), m).toBe(true);
    }
    const pkg = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg.repository).toBeTruthy();
    expect(pkg.homepage).toBeTruthy();
    expect(pkg.bugs).toBeTruthy();
    expect((pkg.keywords as string[]).length).toBeGreaterThan(0);
    expect(readFileSync(join(stage, 'LICENSE'), 'utf8')).toMatch(/MIT License[\s\S]*neurotap contributors/);
  });

  it('installs from the prebuilt binary without compiling, and loads a model through import', () => {
    const installed = join(user, 'node_modules', 'neurotap');
    expect(existsSync(join(installed, PREBUILD))).toBe(true);
    expect(existsSync(join(installed, 'build')), 'the install compiled the addon').toBe(false);
    expect(JSON.parse(readFileSync(join(user, 'package.json'), 'utf8')).type).toBe('commonjs');
    writeFileSync(join(user, 'esm.mjs'), `import { writeFileSync } from 'node:fs';\nimport { loadModel, readSafetensors } from 'neurotap';\n${LOAD_BODY}\n`);
    const r = node(['esm.mjs', GPT2, join(user, 'esm.bin')], user);
    expect(r.status, output(r)).toBe(0);
    expectReferenceLogits(join(user, 'esm.bin'));
  }, 120_000);

  it('neurotap serve without its optional peer fastify is one coded error, before loading the model', () => {
    expect(existsSync(join(user, 'node_modules', 'fastify')), 'fastify is an optional peer: not installed with neurotap').toBe(false);
    const r = node([join(user, 'node_modules', 'neurotap', 'bin', 'neurotap.js'), 'serve', '--model', join(user, 'no-such-model')], user);
    expect(r.status, output(r)).toBe(1);
    expect(r.stderr.trim()).toBe('neurotap: error [ERR_MISSING_DEPENDENCY]: neurotap serve needs fastify 5 next to neurotap: npm install fastify@5');
  }, 60_000);

  it("require('neurotap') gives the same module, with a working loadModel", () => {
    writeFileSync(
      join(user, 'cjs.cjs'),
      `const { writeFileSync } = require('node:fs');\nconst { loadModel, readSafetensors } = require('neurotap');\n` +
        `async function main() {${LOAD_BODY}\n  const esm = await import('neurotap');\n  console.log(JSON.stringify({ same: esm.NeurotapError === require('neurotap').NeurotapError }));\n}\nmain();\n`,
    );
    const r = node(['cjs.cjs', GPT2, join(user, 'cjs.bin')], user);
    expect(r.status, output(r)).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual({ same: true });
    expect(r.stderr).not.toMatch(/Error/);
    expectReferenceLogits(join(user, 'cjs.bin'));
  }, 120_000);

  it("runs the README's TypeScript example under tsx in a CommonJS and an ES module project", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('\n## TypeScript'));
    const example = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    expect(example, 'no ```ts block under "## TypeScript" in README.md').toBeTruthy();
    expect(example).toContain("'path/to/hf-model'");
    const code = example!.replace("'path/to/hf-model'", JSON.stringify(GPT2));
    const text = /model\.run\('([^']*)'/.exec(code)?.[1];
    const patternHook = /cache\.get\('(blocks\.\d+\.attn\.hook_pattern)'\)/.exec(code)?.[1];
    expect(text && patternHook, 'the example runs a text and prints a pattern shape').toBeTruthy();

    // What it prints, from the fixture's config and tokenizer.
    const config = JSON.parse(readFileSync(join(GPT2, 'config.json'), 'utf8')) as { vocab_size: number; n_head: number; n_embd: number };
    const T = Tokenizer.fromDir(GPT2)!.encode(text!).length;
    const expected = [inspect([1, T, config.vocab_size]), inspect([1, config.n_head, T, T]), `${inspect([1, T, config.n_embd])} ${T * config.n_embd}`].join('\n');

    const tsx = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
    for (const file of ['example.ts', 'example.mts']) {
      writeFileSync(join(user, file), code);
      const r = node([tsx, file], user);
      expect(r.status, `${file}: ${output(r)}`).toBe(0);
      expect(r.stdout.trim(), file).toBe(expected);
    }
  }, 120_000);

  it('gives TypeScript the types from ES module and CommonJS files', () => {
    // Each @ts-expect-error is an error only when the types resolved (with `any`, tsc reports it unused).
    writeFileSync(
      join(user, 'types.mts'),
      "import { loadModel, NativeAddonError, type Model } from 'neurotap';\n" +
        'export async function layers(dir: string): Promise<number> {\n  const model: Model = await loadModel(dir);\n' +
        '  // @ts-expect-error nLayers is a number\n  const s: string = model.config.nLayers;\n  return new NativeAddonError("E", s).code.length + model.config.nLayers;\n}\n',
    );
    writeFileSync(
      join(user, 'types.cts'),
      "import neurotap = require('neurotap');\n" +
        'export async function layers(dir: string): Promise<number> {\n  const model = await neurotap.loadModel(dir);\n' +
        '  // @ts-expect-error nLayers is a number\n  const s: string = model.config.nLayers;\n  return s.length;\n}\n',
    );
    writeFileSync(
      join(user, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          target: 'es2022',
          lib: ['es2022', 'esnext.disposable'],
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules', '@types')],
        },
        files: ['types.mts', 'types.cts'],
      }),
    );
    const r = node([join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], user);
    expect(r.status, output(r)).toBe(0);
  }, 120_000);

  it('with --ignore-scripts and no prebuilt binary: the package loads, loadModel throws ERR_NATIVE_ADDON_MISSING naming the fix', () => {
    const { dir, result } = install('ignore-scripts', noPrebuild, ['--ignore-scripts']);
    expect(result.status, output(result)).toBe(0);
    writeFileSync(
      join(dir, 'missing.mjs'),
      "import { loadModel, readSafetensors, NativeAddonError } from 'neurotap';\n" +
        'const keys = [...readSafetensors(process.argv[2] + "/model.safetensors").keys()].length;\n' +
        'const err = await loadModel(process.argv[2]).then(() => null, (e) => e);\n' +
        'console.log(JSON.stringify({ keys, isClass: err instanceof NativeAddonError, name: err?.name, code: err?.code, message: err?.message }));\n',
    );
    const check = (why: RegExp) => {
      const r = node(['missing.mjs', GPT2], dir);
      expect(r.status, output(r)).toBe(0);
      const got = JSON.parse(r.stdout) as { keys: number; isClass: boolean; name: string; code: string; message: string };
      expect(got.keys, 'the TypeScript safetensors reader works without the addon').toBeGreaterThan(0);
      expect(got).toMatchObject({ isClass: true, name: 'NativeAddonError', code: 'ERR_NATIVE_ADDON_MISSING' });
      expect(got.message).toMatch(why);
      expect(got.message).toContain('linux-x64');
      expect(got.message).toContain('npm rebuild neurotap');
      expect(got.message).toMatch(/python3, make and a C\+\+17 compiler/);
    };
    check(/not installed for linux-x64 \(glibc [\d.]+\)/);

    // The CLI says the same in its one-line format.
    const cli = node([join(dir, 'node_modules', 'neurotap', 'bin', 'neurotap.js'), 'hooks', '--model', GPT2], dir);
    expect(cli.status, output(cli)).toBe(1);
    expect(cli.stderr).toMatch(/^neurotap: error \[ERR_NATIVE_ADDON_MISSING\]: .*npm rebuild neurotap/);

    // A binary that is there but does not load (here: not an ELF file) is the same coded error, with the loader's reason.
    const bad = join(dir, 'node_modules', 'neurotap', PREBUILD);
    mkdirSync(dirname(bad), { recursive: true });
    writeFileSync(bad, 'not a shared library');
    check(/does not load on linux-x64.*: .*(invalid ELF header|too short)/s);
  }, 120_000);

  it('with no prebuilt binary and no compiler, the install fails with one coded line, not gyp errors', () => {
    const { result } = install('no-compiler', noPrebuild);
    const out = output(result);
    expect(result.status, out).not.toBe(0);
    expect(out).toMatch(/neurotap: error \[ERR_NATIVE_ADDON_MISSING\]: no prebuilt binary matches this platform, and it cannot be compiled here: python3, make, a C\+\+ compiler .* not found/);
    expect(out).toContain('npm rebuild neurotap');
    expect(out).not.toMatch(/gyp ERR!/);
  }, 120_000);

  it.skipIf(!prebuildify)('npm pack builds the prebuilt binary itself (prepack runs prebuildify), and the tarball installs with no compiler', () => {
    // A copy of the checkout (its packed files, sources and tsconfig), so the recompile leaves build/ alone.
    const src = join(tmp, 'release-src');
    cpSync(join(tmp, 'stage', 'package'), src, { recursive: true });
    rmSync(join(src, 'prebuilds'), { recursive: true, force: true });
    for (const f of ['src', 'tsconfig.json', 'tsconfig.build.json']) cpSync(join(ROOT, f), join(src, f), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
    const tgz = pack(src, join(tmp, 'pack-release'), true);
    const list = run('tar', ['tzf', tgz], tmp, process.env);
    expect(list.stdout.split('\n')).toContain(`package/${PREBUILD}`);
    const { dir, result } = install('release', tgz);
    expect(result.status, output(result)).toBe(0);
    expect(existsSync(join(dir, 'node_modules', 'neurotap', 'build'))).toBe(false);
    writeFileSync(join(dir, 'esm.mjs'), `import { writeFileSync } from 'node:fs';\nimport { loadModel, readSafetensors } from 'neurotap';\n${LOAD_BODY}\n`);
    const r = node(['esm.mjs', GPT2, join(dir, 'esm.bin')], dir);
    expect(r.status, output(r)).toBe(0);
    expectReferenceLogits(join(dir, 'esm.bin'));
  }, 1_800_000);
});
