import { Hono } from 'hono';
import type { Context } from '../domain/context.ts';
import { registerOpenClusterAgent } from '../domain/open-cluster.ts';
import {
  appendOutput,
  claimAssignments,
  finishAssignment,
  heartbeatWorker,
  registerWorker,
  reportStarted,
  unregisterWorker,
} from '../domain/workers.ts';
import {
  claimRequest,
  finishRequest,
  heartbeatRequest,
  jobIdParam,
  outputRequest,
  registerRequest,
  startedRequest,
  unregisterRequest,
} from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import { parseBody, parseInput } from '../http/validate.ts';

/**
 * The agent protocol (agent/src/protocol.ts). Agents hold no database or Redis credentials: this is all they
 * get, with an agent token, as the workers that token registered.
 */
export function agentRoutes(ctx: Context) {
  const jobId = (params: Record<string, string>) => parseInput(jobIdParam, params, 'path').id;
  return new Hono<AppEnv>()
    .post('/register', async (c) => {
      const input = await parseBody(c, registerRequest);
      const principal = c.get('principal');
      if (principal.kind === 'anonymous')
        return c.json(await registerOpenClusterAgent(ctx, input, principal));
      return c.json(await registerWorker(ctx, input, principal));
    })
    .post('/heartbeat', async (c) =>
      c.json(await heartbeatWorker(ctx, await parseBody(c, heartbeatRequest), c.get('principal'))),
    )
    .post('/claim', async (c) => {
      const input = await parseBody(c, claimRequest);
      return c.json(await claimAssignments(ctx, input, c.req.raw.signal, c.get('principal')));
    })
    .post('/unregister', async (c) => {
      await unregisterWorker(ctx, await parseBody(c, unregisterRequest), c.get('principal'));
      return c.json({ ok: true });
    })
    .post('/jobs/:id/started', async (c) =>
      c.json(
        await reportStarted(
          ctx,
          jobId(c.req.param()),
          await parseBody(c, startedRequest),
          c.get('principal'),
        ),
      ),
    )
    .post('/jobs/:id/output', async (c) =>
      c.json(
        await appendOutput(
          ctx,
          jobId(c.req.param()),
          await parseBody(c, outputRequest, { allowed: ['data'] }),
          c.get('principal'),
        ),
      ),
    )
    .post('/jobs/:id/finish', async (c) =>
      c.json(
        await finishAssignment(
          ctx,
          jobId(c.req.param()),
          await parseBody(c, finishRequest),
          c.get('principal'),
        ),
      ),
    );
}
