import { OpenAPIHono } from '@hono/zod-openapi';
import { channelClosed, openChannelSession } from '../domain/channel.ts';
import type { Context } from '../domain/context.ts';
import { forbidden, invalid, notFound } from '../domain/errors.ts';
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
  channelQuery,
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
import {
  claimResponse,
  heartbeatResponse,
  okResponse,
  outputResponse,
  registerResponse,
  stateResponse,
} from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';
import { parseInput } from '../http/validate.ts';

/**
 * The agent protocol (agent/src/protocol.ts). Agents hold no database or Redis credentials: this is all they
 * get, with an agent token, as the workers that token registered.
 */
export function agentRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, register, async (c, { body }) => {
    const input = await body();
    const principal = c.get('principal');
    if (principal.kind === 'anonymous') return c.json(await registerOpenClusterAgent(ctx, input, principal));
    return c.json(await registerWorker(ctx, input, principal));
  });
  mount(app, heartbeat, async (c, { body }) =>
    c.json(await heartbeatWorker(ctx, await body(), c.get('principal'))),
  );
  mount(app, claim, async (c, { body }) =>
    c.json(await claimAssignments(ctx, await body(), c.req.raw.signal, c.get('principal'))),
  );
  // The push channel is a WebSocket, which OpenAPI cannot describe: it is documented in docs/agents.md.
  app.get('/channel', async (c) => {
    const query = parseInput(channelQuery, c.req.query(), 'query');
    // Browsers send Origin with every WebSocket handshake and agents never do: a page cannot hold a channel.
    if (c.req.header('origin') !== undefined) {
      throw forbidden(
        'cross_site_request',
        'The agent channel is not for browsers (the handshake has an Origin)',
      );
    }
    if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') {
      throw invalid('upgrade_required', 'The agent channel is a WebSocket: send Upgrade: websocket');
    }
    if (!ctx.channel) {
      throw notFound(
        'channel_unavailable',
        'This control plane has no push channel; long-poll /claim instead',
      );
    }
    // The session's liveness moves to the registry before the socket exists (its hub refreshes the key from
    // then on), and back if the runtime refuses it (a proxy that dropped the upgrade).
    const generation = await openChannelSession(ctx, query, c.get('principal'));
    const answer = await ctx.channel.accept(c.req.raw, {
      workerId: query.worker_id,
      session: query.session,
      generation,
    });
    if (answer.status >= 300) await channelClosed(ctx, { ...query, generation }, 0);
    return answer;
  });
  mount(app, unregister, async (c, { body }) => {
    await unregisterWorker(ctx, await body(), c.get('principal'));
    return c.json({ ok: true as const });
  });
  mount(app, started, async (c, { params, body }) =>
    c.json(await reportStarted(ctx, params.id, await body(), c.get('principal'))),
  );
  mount(app, output, async (c, { params, body }) =>
    c.json(await appendOutput(ctx, params.id, await body(), c.get('principal'))),
  );
  mount(app, finish, async (c, { params, body }) =>
    c.json(await finishAssignment(ctx, params.id, await body(), c.get('principal'))),
  );
  return app;
}

const registerAgain = {
  404: 'The worker is not registered, or expired (unknown_worker): register again',
  409: 'The worker registered again elsewhere (session_superseded): register anew',
};
const assignment = {
  404: 'No such job (job_not_found), or the worker is not registered (unknown_worker)',
  409: 'A stale assignment: another attempt, or another worker (or, for output, another offset)',
};

const register = {
  method: 'post',
  path: '/register',
  operationId: 'agentRegister',
  summary: 'Agent protocol: register a worker (a new session)',
  tag: 'agents',
  access: 'agent',
  body: registerRequest,
  bodyExample: { worker_id: 'worker-node-01', hostname: 'node-01', cpus: 96 },
  responses: { 200: { description: 'The session and the intervals to keep', schema: registerResponse } },
  refusals: {
    409: 'Another live agent uses this name, or the node offers fewer CPUs than are allocated on it',
  },
} satisfies RouteSpec<undefined, undefined, typeof registerRequest>;

const heartbeat = {
  method: 'post',
  path: '/heartbeat',
  operationId: 'agentHeartbeat',
  summary: 'Agent protocol: heartbeat (refreshes the worker key’s TTL)',
  tag: 'agents',
  access: 'agent',
  body: heartbeatRequest,
  bodyExample: { worker_id: 'worker-node-01', session: 's-1' },
  responses: { 200: { description: 'The worker’s status and jobs to cancel', schema: heartbeatResponse } },
  refusals: registerAgain,
} satisfies RouteSpec<undefined, undefined, typeof heartbeatRequest>;

const claim = {
  method: 'post',
  path: '/claim',
  operationId: 'agentClaim',
  summary: 'Agent protocol: claim assigned jobs (waits up to wait_s for work)',
  tag: 'agents',
  access: 'agent',
  body: claimRequest,
  bodyExample: { worker_id: 'worker-node-01', session: 's-1', wait_s: 10 },
  responses: { 200: { description: 'Jobs to run and jobs to cancel', schema: claimResponse } },
  refusals: registerAgain,
} satisfies RouteSpec<undefined, undefined, typeof claimRequest>;

const unregister = {
  method: 'post',
  path: '/unregister',
  operationId: 'agentUnregister',
  summary: 'Agent protocol: unregister (the worker leaves at once)',
  tag: 'agents',
  access: 'agent',
  body: unregisterRequest,
  bodyExample: { worker_id: 'worker-node-01', session: 's-1' },
  responses: { 200: { description: 'Done', schema: okResponse } },
  refusals: registerAgain,
} satisfies RouteSpec<undefined, undefined, typeof unregisterRequest>;

const started = {
  method: 'post',
  path: '/jobs/{id}/started',
  operationId: 'agentReportStarted',
  summary: 'Agent protocol: a job started',
  tag: 'agents',
  access: 'agent',
  params: jobIdParam,
  body: startedRequest,
  bodyExample: { worker_id: 'worker-node-01', attempt: 1 },
  responses: { 200: { description: 'The job’s state', schema: stateResponse } },
  refusals: assignment,
} satisfies RouteSpec<typeof jobIdParam, undefined, typeof startedRequest>;

const output = {
  method: 'post',
  path: '/jobs/{id}/output',
  operationId: 'agentAppendOutput',
  summary: 'Agent protocol: a job’s output, from an offset',
  tag: 'agents',
  access: 'agent',
  params: jobIdParam,
  body: outputRequest,
  // Jobs may print anything: `data` keeps NUL and broken UTF-16 (its schema stores them as U+FFFD).
  bodyText: { allowed: ['data'] },
  bodyExample: {
    worker_id: 'worker-node-01',
    attempt: 1,
    stream: 'stdout',
    offset: 0,
    data: 'hi\n',
    bytes: 3,
  },
  responses: { 200: { description: 'The bytes stored of this stream', schema: outputResponse } },
  refusals: assignment,
} satisfies RouteSpec<typeof jobIdParam, undefined, typeof outputRequest>;

const finish = {
  method: 'post',
  path: '/jobs/{id}/finish',
  operationId: 'agentReportFinish',
  summary: 'Agent protocol: a job ended (exit code code:signal and outcome)',
  tag: 'agents',
  access: 'agent',
  params: jobIdParam,
  body: finishRequest,
  bodyExample: { worker_id: 'worker-node-01', attempt: 1, exit_code: '0:0', outcome: 'exited' },
  responses: { 200: { description: 'The job’s state', schema: stateResponse } },
  refusals: assignment,
} satisfies RouteSpec<typeof jobIdParam, undefined, typeof finishRequest>;
