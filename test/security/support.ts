/** Helpers of the security suites: an app over a backend, tokens minted straight in the database, requests. */
import { createApp } from '../../functions/app.ts';
import { createToken, type Principal, type TokenScope } from '../../functions/domain/auth.ts';
import type { ConductorConfig } from '../../functions/domain/ports.ts';
import { checkResponses } from '../http/response-checks.ts';
import { type Backend, testConfig, testContext } from '../support/cluster.ts';

export const CLI_PRINCIPAL: Principal = {
  kind: 'cli',
  tokenId: null,
  name: 'test',
  owner: null,
  scopes: ['admin', 'jobs:write', 'jobs:read', 'agent'],
};

export interface SecureApp {
  app: ReturnType<typeof createApp>;
  harness: ReturnType<typeof testContext>;
  /** Mints a token straight in the database (as the CLI would). */
  token(scopes: TokenScope[], name?: string, owner?: string): Promise<{ id: number; token: string }>;
  request(
    method: string,
    path: string,
    options?: { token?: string | undefined; body?: unknown; headers?: Record<string, string> },
  ): Promise<Response>;
}

let counter = 0;

export function secureApp(backend: Backend, overrides: Partial<ConductorConfig> = {}): SecureApp {
  const harness = testContext(backend, testConfig({ submitRatePerSecond: 0, ...overrides }));
  const app = createApp(harness.ctx);
  // Every answer is checked against its route's declared schema (a mismatch fails the request's test).
  checkResponses(app);
  return {
    app,
    harness,
    async token(scopes, name = `t${++counter}-${scopes.join('+')}`, owner) {
      const created = await createToken(
        backend.db.db,
        { name, scopes, ...(owner !== undefined ? { owner } : {}) },
        CLI_PRINCIPAL,
      );
      return { id: created.id, token: created.token };
    },
    async request(method, path, options = {}) {
      const headers: Record<string, string> = { ...(options.headers ?? {}) };
      if (options.token) headers.authorization = `Bearer ${options.token}`;
      let body: string | undefined;
      if (options.body !== undefined) {
        headers['content-type'] ??= 'application/json';
        body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
      }
      return app.request(path, { method, headers, ...(body !== undefined ? { body } : {}) });
    },
  };
}

export async function errorOf(res: Response): Promise<{ code: string; message: string }> {
  return ((await res.json()) as { error: { code: string; message: string } }).error;
}
