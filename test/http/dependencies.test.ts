/** sbatch `--dependency` over HTTP: the fields of a submission and of a batch, and their 400s. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

describe.each(backends)('dependency over HTTP on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let alice: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const post = (path: string, body: unknown) => s.request('POST', path, { token: alice, body });

  it('shows dependency and kill_on_invalid_dep on the job', async () => {
    const first = (await (await post('/api/v1/jobs/submit', { script: 'true', cpus: 1 })).json()) as {
      id: number;
    };
    const res = await post('/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      dependency: `afterok:${first.id}`,
      kill_on_invalid_dep: true,
    });
    expect(res.status).toBe(201);
    const job = (await res.json()) as { id: number };
    const read = await s.request('GET', `/api/v1/jobs/${job.id}`, { token: alice });
    expect(await read.json()).toMatchObject({ dependency: `afterok:${first.id}`, kill_on_invalid_dep: true });
    expect(first).toMatchObject({ dependency: null, kill_on_invalid_dep: false });
  });

  it.each([
    ['afterok:987654321', 'no job 987654321'],
    ['aftercorr:1', 'aftercorr pairs array tasks'],
    ['afterok:1,afterany:2?after:3', 'mixes'],
    ['before:1', 'unknown dependency type "before"'],
  ])(
    'refuses dependency %s: 400 invalid_dependency, /submit, /batch and /test',
    async (dependency, message) => {
      const res = await post('/api/v1/jobs/submit', { script: 'true', cpus: 1, dependency });
      expect(res.status).toBe(400);
      expect(await errorOf(res)).toMatchObject({
        code: 'invalid_dependency',
        message: expect.stringContaining(message),
      });
      const tested = await post('/api/v1/jobs/test', { script: 'true', cpus: 1, dependency });
      expect(tested.status).toBe(400);
      expect((await errorOf(tested)).code).toBe('invalid_dependency');
      const batch = await post('/api/v1/jobs/batch', {
        jobs: [
          { script: 'true', cpus: 1 },
          { script: 'true', cpus: 1, dependency },
        ],
      });
      expect(batch.status).toBe(400);
      expect(await errorOf(batch)).toMatchObject({
        code: 'invalid_dependency',
        message: expect.stringContaining('jobs[1].dependency'),
      });
    },
  );

  it('refuses a kill_on_invalid_dep that is not a boolean', async () => {
    const res = await post('/api/v1/jobs/submit', { script: 'true', cpus: 1, kill_on_invalid_dep: 'yes' });
    expect(res.status).toBe(400);
  });
});
