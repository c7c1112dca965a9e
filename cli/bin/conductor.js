#!/usr/bin/env node
// Runs the CLI's TypeScript sources through tsx, like conductor-agent.
import { register } from 'tsx/esm/api';

register();
await import('../conductor.ts');
