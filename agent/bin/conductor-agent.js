#!/usr/bin/env node
// Runs the agent's TypeScript sources through tsx until the agent ships as its own compiled package.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
