/**
 * What a web page can make a browser send to the open local cluster (review C1): cross-site "simple" requests
 * (text/plain or form bodies, no preflight) and DNS rebinding (a foreign Host). Each is refused before it
 * does anything; the same-origin dashboard, curl and the CLI (JSON, no Origin) keep working, and no answer
 * ever grants CORS.
 */
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { errorOf, type SecureApp, secureApp } from './support.ts';

const backends = await availableBackends();
const SUBMIT = '/api/v1/jobs/submit';
const JOB = JSON.stringify({ script: 'id > pwned', cpus: 1 });

describe.each(backends)('requests a browser can be made to send, on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const raw = (url: string, init: RequestInit = {}) => s.app.request(url, init);
  const jobCount = async () =>
    ((await (await s.request('GET', '/api/v1/jobs')).json()) as { jobs: unknown[] }).jobs.length;

  it('refuses a body that is not JSON with 415 on every JSON route, and creates nothing', async () => {
    // The exact bytes a script-free <form enctype=text/plain> sends, and the other "simple" content types.
    for (const [type, body] of <[string, string][]>[
      ['text/plain', '{"script":"id > pwned #=","cpus":1}\r\n'],
      ['text/plain;charset=UTF-8', JOB],
      ['application/x-www-form-urlencoded', JOB],
      [
        'multipart/form-data; boundary=x',
        `--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n${JOB}\r\n--x--\r\n`,
      ],
    ]) {
      const res = await raw(SUBMIT, { method: 'POST', headers: { 'content-type': type }, body });
      expect(res.status, type).toBe(415);
      const error = await errorOf(res);
      expect(error.code).toBe('unsupported_media_type');
      expect(error.message).toContain('application/json');
    }
    for (const path of [
      '/api/v1/jobs/batch',
      '/api/v1/tokens',
      '/api/v1/webhooks',
      '/api/v1/agents/register',
    ]) {
      const res = await raw(path, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
      expect(res.status, path).toBe(415);
    }
    // No Content-Type at all is not JSON either (a Blob body carries none).
    const untyped = await raw(SUBMIT, { method: 'POST', body: new Blob([JOB]) });
    expect(untyped.status).toBe(415);
    expect(await jobCount()).toBe(0);
    expect((await s.request('GET', '/api/v1/tokens')).status).toBe(200);
    expect(
      ((await (await s.request('GET', '/api/v1/tokens')).json()) as { tokens: unknown[] }).tokens,
    ).toEqual([]);
  });

  it('accepts JSON and its +json variants, with or without a charset', async () => {
    for (const type of ['application/json', 'Application/JSON; charset=utf-8', 'application/vnd.api+json']) {
      const res = await raw(SUBMIT, { method: 'POST', headers: { 'content-type': type }, body: JOB });
      expect(res.status, type).toBe(201);
    }
  });

  it('refuses a non-JSON Content-Type on body-less writes (cancel, drain), which need none', async () => {
    const { id } = (await (
      await s.request('POST', SUBMIT, { body: { script: 'true', cpus: 1 } })
    ).json()) as {
      id: number;
    };
    const form = await raw(`/api/v1/jobs/${id}/cancel`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
    });
    expect(form.status).toBe(415);
    const drain = await raw('/api/v1/workers/w1/drain', {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: '',
    });
    expect(drain.status).toBe(415);
    expect(((await (await s.request('GET', `/api/v1/jobs/${id}`)).json()) as { state: string }).state).toBe(
      'PENDING',
    );
    // curl -X POST .../cancel, the CLI and the dashboard send no body and no Content-Type.
    expect((await raw(`/api/v1/jobs/${id}/cancel`, { method: 'POST' })).status).toBe(200);
  });

  it('refuses a cross-site Origin or Sec-Fetch-Site on writes with 403, and creates nothing', async () => {
    const before = await jobCount();
    const json = { 'content-type': 'application/json' };
    for (const headers of <Record<string, string>[]>[
      { origin: 'http://evil.example' },
      { origin: 'http://evil.example:8000' },
      { origin: 'null' },
      // Another port of this machine is another origin (same-site, for a browser): another local web app.
      { origin: 'http://localhost:3000' },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { 'sec-fetch-site': 'cross-site', origin: 'http://localhost' },
    ]) {
      const res = await raw(SUBMIT, { method: 'POST', headers: { ...json, ...headers }, body: JOB });
      expect(res.status, JSON.stringify(headers)).toBe(403);
      expect((await errorOf(res)).code).toBe('cross_site_request');
      expect(res.headers.get('access-control-allow-origin')).toBeNull();
    }
    const token = await raw('/api/v1/tokens', {
      method: 'POST',
      headers: { ...json, origin: 'http://evil.example' },
      body: JSON.stringify({ name: 'evil', scopes: ['admin'] }),
    });
    expect(token.status).toBe(403);
    expect(await jobCount()).toBe(before);
    expect(
      ((await (await s.request('GET', '/api/v1/tokens')).json()) as { tokens: unknown[] }).tokens,
    ).toEqual([]);
  });

  it('refuses a foreign Host (DNS rebinding) on the open cluster, for writes and reads alike', async () => {
    const before = await jobCount();
    const write = await raw(`http://evil.example:8000${SUBMIT}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        origin: 'http://evil.example:8000',
        'sec-fetch-site': 'same-origin',
      },
      body: JOB,
    });
    expect(write.status).toBe(403);
    const error = await errorOf(write);
    expect(error.code).toBe('host_not_allowed');
    expect(error.message).toContain('CONDUCTOR_PUBLIC_URL');
    expect(await jobCount()).toBe(before);
    for (const path of ['/api/v1/jobs/1', '/api/v1/jobs', '/api/v1/dashboard', '/api/v1/tokens', '/']) {
      const read = await raw(`http://evil.example:8000${path}`, { headers: { accept: 'text/html' } });
      expect(read.status, path).toBe(403);
      expect(read.headers.get('access-control-allow-origin')).toBeNull();
    }
  });

  it("answers this machine's own names and addresses, on any port", async () => {
    for (const host of ['127.0.0.1:8000', 'localhost:8000', '[::1]:8000', 'localhost', '127.0.0.2:9000']) {
      expect((await raw(`http://${host}/api/v1/dashboard`)).status, host).toBe(200);
    }
  });

  it('serves a same-origin dashboard request (Origin of the server itself, Sec-Fetch-Site: same-origin)', async () => {
    const port = 8123;
    const own = { origin: `http://127.0.0.1:${port}`, 'content-type': 'application/json' };
    const res = await raw(`http://127.0.0.1:${port}${SUBMIT}`, {
      method: 'POST',
      headers: { ...own, 'sec-fetch-site': 'same-origin' },
      body: JOB,
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const { id } = (await res.json()) as { id: number };
    // An older browser sends Origin without Sec-Fetch-Site; it is compared with the Host.
    const cancel = await raw(`http://127.0.0.1:${port}/api/v1/jobs/${id}/cancel`, {
      method: 'POST',
      headers: { origin: own.origin },
    });
    expect(cancel.status).toBe(200);
    const page = await raw(`http://localhost:${port}/`, {
      headers: { accept: 'text/html', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' },
    });
    expect(page.status).toBe(200);
  });

  it('grants no CORS: a preflight is refused and carries no Access-Control-* header', async () => {
    for (const origin of ['http://evil.example', 'http://127.0.0.1:8000']) {
      const res = await raw(SUBMIT, {
        method: 'OPTIONS',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type',
        },
      });
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect([...res.headers.keys()].filter((k) => k.startsWith('access-control-'))).toEqual([]);
    }
  });

  it('keeps taking signed webhook deliveries as providers send them (any Content-Type, any Host)', async () => {
    const created = await s.request('POST', '/api/v1/webhooks', {
      body: { name: 'hook', template: { script: 'echo hi', cpus: 1 }, secret: 's'.repeat(32) },
    });
    expect(created.status).toBe(201);
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const signature = `sha256=${createHmac('sha256', 's'.repeat(32)).update(body).digest('hex')}`;
    const res = await raw('http://tunnel.example/api/v1/webhooks/hook', {
      method: 'POST',
      headers: {
        'content-type': 'text/plain',
        'x-hub-signature-256': signature,
        'x-github-event': 'push',
        'x-github-delivery': 'd-1',
      },
      body,
    });
    expect(res.status).toBe(201);
  });
});

describe.each(backends)('a deployed server (tokens required) behind a real hostname, on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend, { auth: 'required' });
    admin = (await s.token(['admin'])).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  it('answers its own name, and still refuses cross-site writes and non-JSON bodies', async () => {
    const base = 'https://conductor.example.com';
    const auth = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
    expect((await s.app.request(`${base}/api/v1/health`)).status).toBe(200);
    const ok = await s.app.request(`${base}${SUBMIT}`, {
      method: 'POST',
      headers: { ...auth, origin: base },
      body: JOB,
    });
    expect(ok.status).toBe(201);
    const cross = await s.app.request(`${base}${SUBMIT}`, {
      method: 'POST',
      headers: { ...auth, origin: 'https://evil.example' },
      body: JOB,
    });
    expect(cross.status).toBe(403);
    const text = await s.app.request(`${base}${SUBMIT}`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'text/plain' },
      body: JOB,
    });
    expect(text.status).toBe(415);
  });

  it('behind a proxy that rewrites Host, the public URL (CONDUCTOR_PUBLIC_URL) is its own origin', async () => {
    const proxied = secureApp(backend, { auth: 'auto', publicOrigins: ['https://conductor.example.com'] });
    const res = await proxied.app.request(`http://127.0.0.1:8000${SUBMIT}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${admin}`,
        'content-type': 'application/json',
        origin: 'https://conductor.example.com',
      },
      body: JOB,
    });
    expect(res.status).toBe(201);
    // Its name is allowed as a Host on a loopback server too (a local proxy in front of it).
    const named = await proxied.app.request('https://conductor.example.com/api/v1/health');
    expect(named.status).toBe(200);
    await proxied.harness.settle();
  });
});
