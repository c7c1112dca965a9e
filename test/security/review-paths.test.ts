/**
 * Checks of the review (shared/reviews/2026-12-06-review.md, "Checked and found sound") that no other suite
 * made: path tricks never get past authentication. Over a real Node server and raw HTTP, so that nothing
 * normalizes the path on the way.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../../functions/domain/auth.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';
import { CLI_PRINCIPAL } from './support.ts';

const backends = await availableBackends();
const factory = backends.find((b) => b.name === 'postgres+redis') ?? backends.at(-1)!;

/** One raw request: the path goes on the wire as written. */
function raw(
  server: RunningServer,
  method: string,
  path: string,
  options: { token?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: server.port,
        method,
        path,
        headers: options.token ? { authorization: `Bearer ${options.token}` } : {},
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (part: Buffer) => parts.push(part));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe(`review checks over HTTP on ${factory.name}`, () => {
  let backend: Backend;
  let server: RunningServer;
  let admin: string;
  beforeAll(async () => {
    backend = await factory.create();
    server = await startTestServer(backend, testConfig({ submitRatePerSecond: 0 }));
    admin = (await createToken(backend.db.db, { name: 'paths-admin', scopes: ['admin'] }, CLI_PRINCIPAL))
      .token;
  });
  afterAll(async () => {
    await server?.close();
    await backend?.close();
  });

  it('path tricks without a token get 401 or 404, never the route behind them', async () => {
    const tricks: [string, string][] = [
      ['GET', '//api/v1/jobs'],
      ['GET', '/api/v1//jobs'],
      ['GET', '/api/v1/%6aobs'],
      ['GET', '/api/v1/jobs/'],
      ['GET', '/api/v1/./jobs'],
      ['GET', '/api/v1/health/../jobs'],
      ['GET', '/api/v1/health/%2e%2e/jobs'],
      ['GET', '/API/V1/JOBS'],
      ['GET', '/api/v1/jobs?x=/api/v1/health'],
      ['GET', '/api/v1/jobs#/api/v1/health'],
      ['GET', '/api/v1/tokens;/api/v1/health'],
      ['OPTIONS', '/api/v1/jobs'],
      ['HEAD', '/api/v1/jobs'],
      ['HEAD', '/api/v1/tokens'],
      ['POST', '/api/v1/tokens/'],
      ['GET', '/api/v1/workers/../tokens'],
    ];
    for (const [method, path] of tricks) {
      const res = await raw(server, method, path);
      expect([401, 404], `${method} ${path} -> ${res.status} ${res.body.slice(0, 80)}`).toContain(res.status);
      expect(res.body).not.toContain('"jobs"');
      expect(res.body).not.toContain('"tokens"');
    }
    // The same routes with the token: the server was serving them all along.
    expect((await raw(server, 'GET', '/api/v1/jobs', { token: admin })).status).toBe(200);
    expect((await raw(server, 'GET', '/api/v1/health')).status).toBe(200);
  });
});
