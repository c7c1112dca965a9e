// Text modules (wrangler.toml's [[rules]]): the Worker carries these files as strings, having no file system.
import css from 'swagger-ui-dist/swagger-ui.css';
import bundle from 'swagger-ui-dist/swagger-ui-bundle.js';
import type { SwaggerUiAssets } from './api-docs.ts';

const FILES = { 'swagger-ui.css': css, 'swagger-ui-bundle.js': bundle };
export const workerSwaggerUiAssets: SwaggerUiAssets = async (file) => FILES[file];
