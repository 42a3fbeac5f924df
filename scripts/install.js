#!/usr/bin/env node
// The package's install step: keeps a prebuilt (or already built) addon that loads here, else compiles
// native/ with node-gyp; with no compiler, one clear line instead of gyp's errors (test/packaging.test.ts).
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);
const PREBUILT = 'linux-x64 (glibc 2.34+, libstdc++ of GCC 12+)';

/** Why the addon node-gyp-build would pick does not load here, or null when it loads. */
function loadFailure() {
  let file;
  try {
    file = require('node-gyp-build').path(root);
  } catch {
    return 'no prebuilt binary matches this platform';
  }
  // In a child process, as node-gyp-build-test does: a binary that crashes on load fails only the check.
  const r = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], { encoding: 'utf8' });
  if (r.status === 0) return null;
  return `${file} does not load: ${(r.stderr || `exit ${r.status ?? r.signal}`).trim().split('\n').find((l) => /Error/.test(l)) ?? 'error'}`;
}

function onPath(cmd) {
  if (cmd.includes('/')) return canRun(cmd);
  return (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && canRun(join(d, cmd)));
}

function canRun(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The tools node-gyp needs that are not found, as node-gyp looks for them (Windows: left to node-gyp). */
function missingTools() {
  if (process.platform === 'win32') return [];
  const missing = [];
  const python = process.env.npm_config_python || process.env.PYTHON;
  if (!(python ? onPath(python) : onPath('python3') || onPath('python'))) missing.push('python3');
  const make = process.env.MAKE || (/bsd$/.test(process.platform) ? 'gmake' : 'make');
  if (!onPath(make.split(' ')[0])) missing.push(make);
  const cxx = process.env.CXX?.trim().split(/\s+/)[0];
  if (!(cxx ? onPath(cxx) : ['c++', 'g++', 'clang++'].some(onPath))) missing.push(cxx ? `a C++ compiler (CXX=${cxx})` : 'a C++ compiler (c++, g++ or clang++)');
  return missing;
}

function fail(message) {
  process.stderr.write(
    `neurotap: error [ERR_NATIVE_ADDON_MISSING]: ${message}.\n` +
      `  Prebuilt binaries ship for ${PREBUILT}; elsewhere the addon is compiled at install, which needs python3, make\n` +
      '  and a C++17 compiler. Install them and run `npm rebuild neurotap`. An install with --ignore-scripts succeeds\n' +
      "  without the addon: neurotap's TypeScript utilities work, and loadModel throws ERR_NATIVE_ADDON_MISSING.\n",
  );
  process.exit(1);
}

const fromSource = process.env.npm_config_build_from_source === 'true';
const why = fromSource ? 'a build from source was asked for' : loadFailure();
if (why === null) process.exit(0);

const missing = missingTools();
if (missing.length > 0) fail(`${why}, and it cannot be compiled here: ${missing.join(', ')} not found`);

// npm runs install scripts with npm_config_node_gyp set to its own node-gyp and that node-gyp on PATH.
const gyp = process.env.npm_config_node_gyp;
const r = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: 'inherit' })
  : spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (r.status !== 0) fail(`${why}, and compiling it failed (node-gyp's output is above)`);
