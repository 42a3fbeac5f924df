// Model folders as people have them: a local folder, a Hugging Face hub id (`ORG/NAME`,
// `ORG/NAME@REVISION`) or a hub cache folder (`models--ORG--NAME`), resolved offline to the
// snapshot folder the hub's client wrote. Nothing is downloaded. Tests: test/hub.test.ts.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

import { ModelLoadError } from '../errors.js';

/** The hub cache folder: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (huggingface_hub's order). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return resolve(env.HF_HUB_CACHE);
  if (env.HUGGINGFACE_HUB_CACHE) return resolve(env.HUGGINGFACE_HUB_CACHE);
  if (env.HF_HOME) return join(resolve(env.HF_HOME), 'hub');
  return join(env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache'), 'huggingface', 'hub');
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?$/;

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The folder to load for `spec`: an existing folder as it is (a `models--ORG--NAME` cache folder
 * becomes its `main` snapshot), else a hub id looked up in {@link hubCacheDir}. A path that is
 * neither is returned resolved, for the loader to report. Throws ModelLoadError
 * ERR_MODEL_NOT_FOUND for a hub id (or revision) that is not in the cache.
 */
export function resolveModelDir(spec: string, env: NodeJS.ProcessEnv = process.env): string {
  const abs = resolve(spec);
  if (isDir(abs)) {
    if (!existsSync(join(abs, 'config.json')) && isDir(join(abs, 'snapshots'))) return snapshot(abs, 'main', spec);
    return abs;
  }
  if (!HUB_ID.test(spec) || spec.includes('..')) return abs;
  const at = spec.indexOf('@');
  const id = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? 'main' : spec.slice(at + 1);
  const cache = hubCacheDir(env);
  const repo = join(cache, `models--${id.replace('/', '--')}`);
  if (!isDir(repo))
    throw new ModelLoadError(
      'ERR_MODEL_NOT_FOUND',
      `'${spec}' is not a folder, and the Hugging Face cache (${cache}) has no ${id}. neurotap reads models offline: ` +
        `download it first (\`hf download ${id}\` or \`huggingface-cli download ${id}\`, or transformers' from_pretrained), ` +
        `point HF_HUB_CACHE / HF_HOME at the cache that has it, or pass the model's folder`,
    );
  return snapshot(repo, revision, spec);
}

/** `repo`'s snapshot folder for `revision`: a ref (refs/REVISION holds a commit) or a commit itself. */
function snapshot(repo: string, revision: string, spec: string): string {
  const ref = join(repo, 'refs', revision);
  let commit = revision;
  if (!revision.includes('..') && existsSync(ref) && statSync(ref).isFile()) commit = readFileSync(ref, 'utf8').trim();
  const dir = join(repo, 'snapshots', commit);
  if (/^[\w.-]+$/.test(commit) && isDir(dir)) return dir;
  const list = (p: string) => (isDir(p) ? readdirSync(p) : []);
  const refs = list(join(repo, 'refs'));
  const snaps = list(join(repo, 'snapshots'));
  throw new ModelLoadError(
    'ERR_MODEL_NOT_FOUND',
    `'${spec}': revision '${revision}' is not in the cached ${repo} (refs: ${refs.join(', ') || 'none'}; snapshots: ${snaps.join(', ') || 'none'}); ` +
      'download that revision first or name one of these',
  );
}
