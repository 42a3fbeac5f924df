// Hub ids and cache folders: a Hugging Face cache laid out as huggingface_hub writes it (blobs,
// snapshots of symlinks, refs) resolves offline to the snapshot folder; a missing model or
// revision is ERR_MODEL_NOT_FOUND with where it looked.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { hubCacheDir, loadModel, ModelLoadError, resolveModelDir } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const OLD = 'fedcba9876543210fedcba9876543210fedcba98';
let cache: string;
let repo: string;

/** models--ORG--NAME as huggingface_hub lays it out: files in blobs/, symlinked from snapshots/COMMIT/. */
function cacheModel(root: string, id: string, source: string, commits: string[]): string {
  const repoDir = join(root, `models--${id.replace('/', '--')}`);
  mkdirSync(join(repoDir, 'blobs'), { recursive: true });
  for (const commit of commits) {
    mkdirSync(join(repoDir, 'snapshots', commit), { recursive: true });
    for (const f of readdirSync(source)) {
      const blob = join(repoDir, 'blobs', `${commit.slice(0, 8)}-${f}`);
      copyFileSync(join(source, f), blob);
      symlinkSync(join('..', '..', 'blobs', `${commit.slice(0, 8)}-${f}`), join(repoDir, 'snapshots', commit, f));
    }
  }
  mkdirSync(join(repoDir, 'refs'), { recursive: true });
  writeFileSync(join(repoDir, 'refs', 'main'), commits[0]!);
  return repoDir;
}

beforeAll(() => {
  cache = mkdtempSync(join(tmpdir(), 'neurotap-hub-'));
  repo = cacheModel(join(cache, 'hub'), 'test-org/tiny-gpt2', fixtureDir('gpt2'), [COMMIT, OLD]);
  writeFileSync(join(repo, 'refs', 'v1'), OLD);
});
afterAll(() => rmSync(cache, { recursive: true, force: true }));

describe('hub cache folder', () => {
  it("follows huggingface_hub's environment order", () => {
    expect(hubCacheDir({ HF_HUB_CACHE: '/a', HF_HOME: '/b' })).toBe('/a');
    expect(hubCacheDir({ HF_HOME: '/b' })).toBe('/b/hub');
    expect(hubCacheDir({ XDG_CACHE_HOME: '/c' })).toBe('/c/huggingface/hub');
    expect(hubCacheDir({})).toMatch(/\.cache\/huggingface\/hub$/);
  });
});

describe('resolveModelDir / loadModel with hub ids', () => {
  const env = () => ({ HF_HOME: cache });

  it('resolves ids, revisions (ref or commit) and cache folders to snapshots', () => {
    expect(resolveModelDir('test-org/tiny-gpt2', env())).toBe(join(repo, 'snapshots', COMMIT));
    expect(resolveModelDir('test-org/tiny-gpt2@v1', env())).toBe(join(repo, 'snapshots', OLD));
    expect(resolveModelDir(`test-org/tiny-gpt2@${OLD}`, env())).toBe(join(repo, 'snapshots', OLD));
    expect(resolveModelDir(repo, env())).toBe(join(repo, 'snapshots', COMMIT));
    expect(resolveModelDir(fixtureDir('gpt2'), env())).toBe(fixtureDir('gpt2'));  // a folder stays itself
  });

  it('loads a cached model by id, as from its folder', async () => {
    const saved = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = join(cache, 'hub');
    try {
      const byId = await loadModel('test-org/tiny-gpt2');
      const byDir = await loadModel(fixtureDir('gpt2'));
      expect(byId.dir).toBe(join(repo, 'snapshots', COMMIT));
      const a = await byId.run('hello world');
      const b = await byDir.run('hello world');
      expect(a.tokens).toEqual(b.tokens);  // the tokenizer came along
      expect(a.logits!.data).toEqual(b.logits!.data);
      byId.dispose();
      byDir.dispose();
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
  });

  it('says where it looked when an id or revision is not cached', async () => {
    let err: unknown;
    try {
      resolveModelDir('test-org/missing-model', env());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err).toMatchObject({ code: 'ERR_MODEL_NOT_FOUND' });
    expect((err as Error).message).toContain(join(cache, 'hub'));
    expect((err as Error).message).toMatch(/download test-org\/missing-model/);
    expect(() => resolveModelDir('test-org/tiny-gpt2@v9', env())).toThrow(/revision 'v9'.*refs: main, v1/);
    const saved = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = join(cache, 'hub');
    try {
      await expect(loadModel('test-org/missing-model')).rejects.toMatchObject({ code: 'ERR_MODEL_NOT_FOUND' });
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
  });

  it('the CLI takes a hub id for --model (dist/ built by pretest)', () => {
    const run = (id: string) =>
      spawnSync(process.execPath, [join(ROOT, 'bin', 'neurotap.js'), 'run', '--model', id, '--tokens', '[1,2,3]'], {
        encoding: 'utf8',
        env: { ...process.env, HF_HUB_CACHE: join(cache, 'hub') },
      });
    const ok = run('test-org/tiny-gpt2@v1');
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    const missing = run('test-org/nothing-here');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/error \[ERR_MODEL_NOT_FOUND\]/);
  });

  it('leaves paths that are not hub ids to the loader', async () => {
    await expect(loadModel('./no/such/folder/here')).rejects.toMatchObject({ code: 'ERR_FILE_NOT_FOUND' });
  });
});
