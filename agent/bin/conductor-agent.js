#!/usr/bin/env node
// `conductor-agent` from a checkout of the repository: runs the TypeScript sources through tsx. The published
// package's bin is the compiled agent/dist/cli.js instead (npm run build:agent).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli.ts');
process.exitCode = await main();
