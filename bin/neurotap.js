#!/usr/bin/env node
// CLI entry: the compiled TypeScript lives in dist/ (built by `npm install` via `prepare`).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
