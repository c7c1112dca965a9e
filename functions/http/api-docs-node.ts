import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { SwaggerUiAssets } from './api-docs.ts';

/**
 * Swagger UI's files from node_modules/swagger-ui-dist, found as Node finds packages from this module: the
 * source file under tsx or vitest, dist/server.mjs in the bundle `npm start` runs (which leaves packages in
 * node_modules).
 */
const require = createRequire(import.meta.url);
export const nodeSwaggerUiAssets: SwaggerUiAssets = (file) =>
  readFile(require.resolve(`swagger-ui-dist/${file}`), 'utf8');
