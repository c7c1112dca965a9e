/**
 * Property-based fuzzing of EVERY route (fast-check, fixed seed, fixed number of runs per route): hostile
 * paths, queries, headers and bodies, from garbage to almost-valid requests with a field or two changed,
 * mostly with the token the route is meant for, else another kind or none. The properties: no response is
 * a 5xx, and every 4xx is the JSON error envelope whose message names the problem (for invalid requests:
 * every offending field).
 */
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { type SecureApp, secureApp } from './support.ts';

const FUZZ_SEED = 20_251_111;
const FUZZ_RUNS = 60;

const backends = await availableBackends();
const SECRET = 'fuzz-webhook-secret-0123456789';

type TokenKind = 'admin' | 'agent' | 'reader' | 'writer';

interface Route {
  method: string;
  /** The path; `:id` is filled from `ids` (values that exist) or random segments. */
  path: string;
  /** A valid body to mutate (undefined: the route takes none). */
  body?: Record<string, unknown>;
  /** Query keys worth trying. */
  query?: string[];
  /** Query values worth trying besides the common ones. */
  values?: string[];
  /** The token the route is meant for: most requests carry it. */
  token?: TokenKind;
  ids?: string[];
}

const AGENT = { token: 'agent' as const, ids: ['1', '2'] };
const ROUTES: Route[] = [
  { method: 'GET', path: '/' },
  { method: 'GET', path: '/api/v1/health' },
  { method: 'GET', path: '/api/v1/dashboard', token: 'reader' },
  { method: 'GET', path: '/api/v1/workers', query: ['all'], token: 'admin' },
  { method: 'POST', path: '/api/v1/workers/:id/drain', token: 'admin', ids: ['fuzz-node'] },
  { method: 'POST', path: '/api/v1/workers/:id/undrain', token: 'admin', ids: ['fuzz-node'] },
  { method: 'GET', path: '/api/v1/audit', query: ['limit', 'before', 'action', 'token_id'], token: 'admin' },
  {
    method: 'POST',
    path: '/api/v1/jobs/submit',
    token: 'writer',
    body: {
      script: 'echo fuzz',
      cpus: 1,
      name: 'fuzz',
      account: 'acct',
      partition: 'batch',
      time_limit: '0:30',
      work_dir: '/tmp',
      environment: { A: 'b' },
      priority: 1,
      requeue: false,
    },
  },
  {
    method: 'POST',
    path: '/api/v1/jobs/batch',
    token: 'writer',
    // Two jobs: the sweep and the mutations reach into the second one (jobs[1]).
    body: {
      jobs: [
        { script: 'echo fuzz-0', cpus: 1 },
        {
          script: 'echo fuzz',
          cpus: 1,
          name: 'fuzz',
          account: 'acct',
          partition: 'batch',
          time_limit: '0:30',
          work_dir: '/tmp',
          environment: { A: 'b' },
          priority: 1,
          requeue: false,
        },
      ],
    },
  },
  { method: 'GET', path: '/api/v1/jobs', query: ['state', 'limit', 'before'], token: 'reader' },
  { method: 'GET', path: '/api/v1/jobs/:id', token: 'reader', ids: ['1', '2'] },
  { method: 'POST', path: '/api/v1/jobs/:id/cancel', token: 'writer', ids: ['1', '2', '3'] },
  { method: 'GET', path: '/api/v1/jobs/:id/logs', token: 'reader', ids: ['1', '2'] },
  // The dashboard's own routes (functions/routes/ui.ts).
  {
    method: 'GET',
    path: '/api/v1/ui/jobs',
    query: ['state', 'q', 'limit', 'before'],
    values: ['%', '_', '\\', "%' OR 1=1 --", 'COMPLETED,NOPE', ''],
    token: 'reader',
  },
  { method: 'GET', path: '/api/v1/ui/workers', query: ['all'], token: 'reader' },
  {
    method: 'GET',
    path: '/api/v1/ui/utilization',
    query: ['window'],
    values: ['1h', '24h', '7d', ''],
    token: 'reader',
  },
  { method: 'GET', path: '/api/v1/ui/:id', token: 'reader', ids: ['jobs', 'workers', 'utilization', 'nope'] },
  {
    method: 'POST',
    path: '/api/v1/agents/register',
    ...AGENT,
    body: {
      worker_id: 'fuzz-node',
      hostname: 'h',
      cpus: 4,
      labels: { rack: '1' },
      agent_version: '0',
      running: [],
    },
  },
  {
    method: 'POST',
    path: '/api/v1/agents/heartbeat',
    ...AGENT,
    body: { worker_id: 'fuzz-node', session: 's' },
  },
  {
    method: 'POST',
    path: '/api/v1/agents/claim',
    ...AGENT,
    body: { worker_id: 'fuzz-node', session: 's', wait_s: 0 },
  },
  {
    method: 'POST',
    path: '/api/v1/agents/unregister',
    ...AGENT,
    body: { worker_id: 'fuzz-node', session: 's' },
  },
  {
    method: 'POST',
    path: '/api/v1/agents/jobs/:id/started',
    ...AGENT,
    body: { worker_id: 'fuzz-node', attempt: 1 },
  },
  {
    method: 'POST',
    path: '/api/v1/agents/jobs/:id/output',
    ...AGENT,
    body: { worker_id: 'fuzz-node', attempt: 1, stream: 'stdout', offset: 0, data: 'x', bytes: 1 },
  },
  {
    method: 'POST',
    path: '/api/v1/agents/jobs/:id/finish',
    ...AGENT,
    body: { worker_id: 'fuzz-node', attempt: 1, exit_code: '0:0', outcome: 'exited', message: 'm' },
  },
  {
    method: 'POST',
    path: '/api/v1/tokens',
    token: 'admin',
    body: { name: 'fuzzed', scopes: ['jobs:read'], owner: 'o' },
  },
  { method: 'GET', path: '/api/v1/tokens', query: ['limit', 'before', 'revoked'], token: 'admin' },
  { method: 'DELETE', path: '/api/v1/tokens/:id', token: 'admin', ids: ['6', '7', '8'] },
  {
    method: 'POST',
    path: '/api/v1/webhooks',
    token: 'admin',
    body: {
      name: 'fuzz-hook',
      secret: 'a-secret-of-sixteen+',
      template: { script: 'true', cpus: 1, environment: { X: 'y' } },
      mapping: { ref: 'GIT_REF' },
      events: ['push'],
      owner: 'o',
    },
  },
  { method: 'GET', path: '/api/v1/webhooks', token: 'admin' },
  { method: 'DELETE', path: '/api/v1/webhooks/:id', token: 'admin', ids: ['fuzz-hook', 'nope'] },
  // Deliveries: signed (or not) below; the body is the payload.
  {
    method: 'POST',
    path: '/api/v1/webhooks/:id',
    ids: ['on-push'],
    body: { ref: 'refs/heads/main', repository: { full_name: 'a/b' }, commits: [{ id: 'c1' }] },
  },
  // Wrong methods and unknown paths.
  { method: 'PUT', path: '/api/v1/jobs/:id', token: 'admin' },
  { method: 'GET', path: '/api/v1/:id', token: 'admin' },
];

const nasty = fc.constantFrom(
  '',
  '\u0000',
  'a\u0000b',
  '\t\n\r',
  '\u001b[31m',
  '../../etc/passwd',
  '%00',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
  '${IFS}',
  '$(id)',
  "'; DROP TABLE jobs; --",
  '😀😀😀',
  '\ud800',
  'x'.repeat(300),
  'CONDUCTOR_TOKEN',
);
const number = fc.oneof(
  fc.integer(),
  fc.constantFrom(0, -1, 1.5, 1e20, Number.MAX_SAFE_INTEGER + 2, 2 ** 31, 65_537, -0, 99_999_999),
  fc.double(),
);
const anyValue = fc.oneof(
  { weight: 3, arbitrary: nasty },
  { weight: 2, arbitrary: number },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.anything({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, ['a'], { a: 1 }) },
);

/** A valid body with up to two fields replaced or dropped, sometimes an unknown one added. */
function mutated(valid: Record<string, unknown>) {
  return mutatedObject(valid).map((body) => JSON.stringify(body));
}

/** The same, one level down: the last object of a list field (a batch's jobs) mutated, the list kept. */
function mutatedItems(valid: Record<string, unknown>) {
  const lists = Object.entries(valid).filter(
    ([, v]) => Array.isArray(v) && v.length > 0 && v.every((item) => item && typeof item === 'object'),
  );
  if (lists.length === 0) return undefined;
  return fc.constantFrom(...lists).chain(([field, list]) => {
    const items = list as Record<string, unknown>[];
    return fc.tuple(fc.integer({ min: 0, max: 2 }), mutatedObject(items.at(-1)!)).map(([copies, item]) => {
      const kept = structuredClone(items.slice(0, -1));
      for (let i = 0; i < copies; i++) kept.push(structuredClone(items[0]!));
      return JSON.stringify({ ...structuredClone(valid), [field]: [...kept, item] });
    });
  });
}

function mutatedObject(valid: Record<string, unknown>) {
  const fields = Object.keys(valid);
  return fc
    .record({
      changes: fc.array(fc.tuple(fc.constantFrom(...fields), fc.option(anyValue, { nil: undefined })), {
        maxLength: 2,
      }),
      extra: fc.option(fc.tuple(fc.string({ maxLength: 12 }), anyValue), { nil: undefined, freq: 4 }),
    })
    .map(({ changes, extra }) => {
      const body: Record<string, unknown> = structuredClone(valid);
      for (const [field, value] of changes) {
        if (value === undefined) delete body[field];
        else body[field] = value;
      }
      if (extra) body[extra[0]] = extra[1];
      return body;
    });
}

function bodyFor(route: Route) {
  const garbage = fc.oneof(
    fc.json({ maxDepth: 3 }),
    fc.string({ maxLength: 200 }),
    fc.string({ unit: 'binary', maxLength: 50 }),
    fc.constantFrom('', '{', 'null', '[]', '{"__proto__": {"x": 1}}', '{"a":'.repeat(50)),
    anyValue.map((v) => JSON.stringify(v) ?? ''),
  );
  if (!route.body) return fc.option(garbage, { nil: undefined });
  const inItems = mutatedItems(route.body);
  if (inItems) {
    return fc.oneof(
      { weight: 2, arbitrary: mutated(route.body) },
      { weight: 3, arbitrary: inItems },
      { weight: 1, arbitrary: garbage },
    );
  }
  return fc.oneof({ weight: 4, arbitrary: mutated(route.body) }, { weight: 1, arbitrary: garbage });
}

const segment = fc.oneof(
  fc.constantFrom(
    '0',
    '-1',
    '1e3',
    '99999999999999999999',
    '9007199254740993',
    'abc',
    '%00',
    '%2e%2e',
    'a%2Fb',
  ),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
  fc.integer().map(String),
);
const printable = fc.string({ unit: 'grapheme-ascii', maxLength: 60 });

/** Every field of every body route gets each of these, one at a time (a deterministic sweep). */
const BOUNDARY: unknown[] = [
  0,
  -1,
  1.5,
  2 ** 31,
  -(2 ** 31) - 1,
  2 ** 53 + 2,
  1e20,
  -1e20,
  1e308,
  65_537,
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\t',
  '\n',
  '\u007f',
  '\ud800',
  'x'.repeat(256),
  'x'.repeat(70_000),
  '1e99',
  '-5',
  '999999999-0',
  '99999999999:00',
  '/tmp/../../etc',
  null,
  true,
  [],
  [null],
  {},
  { '\u0000': 'x' },
  { A: '\u0000' },
  { ['x'.repeat(300)]: 'y' },
  { A: 1 },
  { 'a.b': 'C' },
  Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`V${i}`, 'x'])),
];
/** The dashboard's query strings: each key of each route, swept with every value below (as sent, raw). */
const UI_QUERIES = [
  { path: '/api/v1/ui/jobs', keys: ['state', 'q', 'limit', 'before', 'unknown'] },
  { path: '/api/v1/ui/workers', keys: ['all', 'unknown'] },
  { path: '/api/v1/ui/utilization', keys: ['window', 'unknown'] },
];
const NASTY_QUERY_VALUES = [
  '',
  '%',
  '%zz',
  '%00',
  'a%00b',
  '%ff',
  '%ED%A0%80', // a lone surrogate, UTF-8 encoded
  '%C0%AF', // overlong
  '%E2%80%AE', // right-to-left override
  '%0A%0D',
  '-1',
  '0',
  '1e99',
  '9007199254740993',
  '99999999999999999999999',
  'NaN',
  'Infinity',
  '0x10',
  '1.5',
  ' 1',
  'PENDING,',
  ',,,',
  'PENDING%2CNOPE',
  'pending',
  '24h%00',
  '1H',
  '%25',
  '%5F',
  '%5C',
  "'%20OR%201=1--",
  '%22%3B%20DROP%20TABLE%20jobs%3B--',
  'x'.repeat(5000),
  '%F0%9F%92%A9'.repeat(200),
];

const SIGNATURES = [
  'good-github',
  'good-timestamped',
  'good-github',
  'old-timestamped',
  'garbage',
  'none',
] as const;

describe.each(backends)('fuzzing every route on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  const tokens: Record<string, string> = {};
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend, { claimWaitSeconds: 0 });
    tokens.admin = (await s.token(['admin'], 'fuzz-admin')).token;
    tokens.agent = (await s.token(['agent'], 'fuzz-agent')).token;
    tokens.reader = (await s.token(['jobs:read'], 'fuzz-reader')).token;
    tokens.writer = (await s.token(['jobs:write'], 'fuzz-writer')).token;
    // Something to hit: a worker of the agent token, jobs, a webhook with a known secret.
    await s.request('POST', '/api/v1/agents/register', {
      token: tokens.agent,
      body: { worker_id: 'fuzz-node', hostname: 'h', cpus: 4 },
    });
    for (let i = 0; i < 2; i++) {
      await s.request('POST', '/api/v1/jobs/submit', {
        token: tokens.admin,
        body: { script: 'true', cpus: 1 },
      });
    }
    await s.request('POST', '/api/v1/webhooks', {
      token: tokens.admin,
      body: {
        name: 'on-push',
        secret: SECRET,
        template: { script: 'true', cpus: 1 },
        mapping: { ref: 'GIT_REF' },
      },
    });
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const authorization = (route: Route) =>
    fc.oneof(
      { weight: 6, arbitrary: fc.constant(route.token ?? 'admin').map((k) => `Bearer ${tokens[k]}`) },
      {
        weight: 2,
        arbitrary: fc.constantFrom('admin', 'agent', 'reader', 'writer').map((k) => `Bearer ${tokens[k]}`),
      },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          undefined,
          'Bearer cnd_forged',
          'Basic Zm9vOmJhcg==',
          'Bearer',
          `Bearer ${'x'.repeat(600)}`,
        ),
      },
      { weight: 1, arbitrary: printable },
    );

  const reader = () => ({ headers: { authorization: `Bearer ${tokens.reader}` } });

  /** The properties every response must have. */
  async function check(res: Response, what: string): Promise<void> {
    const text = await res.text();
    expect(res.status, `${what} -> ${text}`).toBeLessThan(500);
    if (res.status < 400) return;
    let parsed: { error?: { code?: unknown; message?: unknown; details?: { issues?: { path: string }[] } } };
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`${what}: ${res.status} is not JSON: ${text}`);
    }
    const error = parsed.error;
    expect(typeof error?.code, text).toBe('string');
    expect(typeof error?.message, text).toBe('string');
    expect(String(error?.message).length, text).toBeGreaterThan(10);
    for (const issue of error?.details?.issues ?? [])
      expect(String(error?.message), text).toContain(issue.path);
  }

  it.each(ROUTES.filter((r) => r.body))('boundary sweep: $method $path, every field', async (route) => {
    const body = route.body!;
    const path = route.path.replace(':id', route.ids?.[0] ?? '1');
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      authorization: `Bearer ${tokens[route.token ?? 'admin']}`,
    };
    const nested = Object.entries(body).flatMap(([k, v]) =>
      v && typeof v === 'object' && !Array.isArray(v) ? Object.keys(v).map((inner) => [k, inner]) : [],
    );
    // A list of objects (a batch's jobs): every field of its last item, and that item's own objects.
    const inLists = Object.entries(body).flatMap(([k, v]) => {
      const last = Array.isArray(v) ? v.at(-1) : undefined;
      if (!last || typeof last !== 'object' || Array.isArray(last)) return [];
      return Object.entries(last as Record<string, unknown>).flatMap(([field, inner]) => [
        [k, field],
        ...(inner && typeof inner === 'object' && !Array.isArray(inner)
          ? Object.keys(inner).map((deeper) => [k, field, deeper])
          : []),
      ]);
    });
    for (const value of BOUNDARY) {
      const variants: Record<string, unknown>[] = [
        ...Object.keys(body).map((field) => ({ ...structuredClone(body), [field]: value })),
        ...nested.map(([outer, inner]) => {
          const copy = structuredClone(body) as Record<string, Record<string, unknown>>;
          copy[outer!]![inner!] = value;
          return copy;
        }),
        ...inLists.map(([list, field, deeper]) => {
          const copy = structuredClone(body) as Record<string, Record<string, unknown>[]>;
          const item = copy[list!]!.at(-1)!;
          if (deeper === undefined) item[field!] = value;
          else (item[field!] as Record<string, unknown>)[deeper] = value;
          return copy;
        }),
      ];
      for (const variant of variants) {
        const text = JSON.stringify(variant);
        const signed: Record<string, string> = route.path.startsWith('/api/v1/webhooks/')
          ? {
              'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(text).digest('hex')}`,
              'x-github-delivery': crypto.randomUUID(),
            }
          : {};
        const res = await s.app.request(path, {
          method: route.method,
          headers: { ...headers, ...signed },
          body: text,
        });
        await check(res, `${route.method} ${path} ${text.slice(0, 200)}`);
      }
    }
  });

  it.each(UI_QUERIES)('dashboard query sweep: GET $path, every key with every nasty value', async (route) => {
    const tokenFor = [tokens.reader, tokens.admin, tokens.writer, tokens.agent, undefined];
    for (const key of route.keys) {
      for (const raw of NASTY_QUERY_VALUES) {
        for (const token of tokenFor) {
          const path = `${route.path}?${key}=${raw}`;
          const res = await s.app.request(path, {
            headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
          });
          await check(res, `GET ${path}`);
        }
      }
      // Repeated keys, and every key at once.
      await check(
        await s.app.request(`${route.path}?${key}=1&${key}=2`, reader()),
        `${route.path} ${key} twice`,
      );
    }
    const all = route.keys.map((k) => `${k}=%ff`).join('&');
    await check(await s.app.request(`${route.path}?${all}`, reader()), `${route.path}?${all}`);
  });

  it.each(ROUTES)('$method $path', async (route) => {
    const request = fc.record({
      segment: route.ids
        ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...route.ids) }, segment)
        : segment,
      query: fc.dictionary(
        fc.oneof(fc.constantFrom(...(route.query ?? ['x'])), fc.string({ maxLength: 8 })),
        fc.oneof(
          fc.constantFrom(
            '1',
            '0',
            'true',
            '50',
            'RUNNING,PENDING',
            'job.submit',
            '-5',
            '1e99',
            ...(route.values ?? []),
          ),
          printable,
        ),
        { maxKeys: 3 },
      ),
      authorization: authorization(route),
      contentType: fc.option(
        fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'),
        {
          nil: undefined,
        },
      ),
      body: bodyFor(route),
      idempotencyKey: fc.option(printable, { nil: undefined }),
      signature: fc.constantFrom(...SIGNATURES),
      garbageSignature: printable,
      deliveryId: fc.option(printable, { nil: undefined }),
      event: fc.option(fc.constantFrom('push', 'ping', 'release', ''), { nil: undefined }),
    });

    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const path = route.path.replace(':id', r.segment);
        const query = new URLSearchParams(r.query).toString();
        const headers: Record<string, string> = {};
        if (r.authorization !== undefined) headers.authorization = r.authorization;
        if (r.contentType) headers['content-type'] = r.contentType;
        if (r.idempotencyKey !== undefined) headers['idempotency-key'] = r.idempotencyKey;
        if (r.deliveryId !== undefined) headers['x-github-delivery'] = r.deliveryId;
        if (r.event !== undefined) headers['x-github-event'] = r.event;
        const body = r.body ?? '';
        const t = Math.floor(Date.now() / 1000) - (r.signature === 'old-timestamped' ? 3600 : 0);
        if (r.signature === 'good-github') {
          headers['x-hub-signature-256'] =
            `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
        } else if (r.signature === 'good-timestamped' || r.signature === 'old-timestamped') {
          const v1 = createHmac('sha256', SECRET).update(`${t}.${body}`).digest('hex');
          headers['x-conductor-signature'] = `t=${t},v1=${v1}`;
        } else if (r.signature === 'garbage') {
          headers['x-conductor-signature'] = r.garbageSignature;
        }
        const res = await s.app.request(`${path}${query ? `?${query}` : ''}`, {
          method: route.method,
          headers,
          ...(r.body !== undefined && route.method !== 'GET' ? { body: r.body } : {}),
        });
        await check(res, `${route.method} ${path}?${query}`);
        return true;
      }),
      { seed: FUZZ_SEED, numRuns: FUZZ_RUNS },
    );
  });
});
