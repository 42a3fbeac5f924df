#!/usr/bin/env node
// CLI entry: the compiled TypeScript lives in dist/ (built by `npm install` via `prepare`).
import { main } from '../dist/cli/main.js';

// A reader that stops early (`neurotap generate --stream | head -1`) closes stdout: the command
// ends quietly with exit 0; any other stdout failure is a coded one-line error.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  process.stderr.write(`neurotap: error [ERR_FILE_WRITE]: cannot write to stdout: ${err.message}\n`);
  process.exit(1);
});

process.exitCode = await main(process.argv.slice(2));
