/**
 * Agents on the open loopback cluster. An agent started there without a token registers as the anonymous
 * caller; creating the first API token then ends anonymous access, and such an agent could no longer
 * heartbeat or report. So each one is given an agent token of its own at registration (internal: it does
 * not close the open API), bound to its worker like any agent token, and it uses that token from then on.
 */

import { sql } from 'drizzle-orm';
import type { RegisterRequest, RegisterResponse } from '../../agent/src/protocol.ts';
import { createToken, type Principal } from './auth.ts';
import type { Context } from './context.ts';
import { conflict } from './errors.ts';
import { liveInPostgres } from './liveness.ts';
import { query, queryOne } from './sql.ts';
import { registerWorker } from './workers.ts';

const tokenName = (workerId: string) => `agent:${workerId}`;

async function revokeTokens(ctx: Context, ids: readonly number[]): Promise<void> {
  for (const id of ids) {
    await query(
      ctx.db,
      sql`UPDATE api_tokens SET revoked_at = now() WHERE id = ${id} AND revoked_at IS NULL`,
    );
  }
}

/** registerWorker for the anonymous caller: the answer carries the worker's own agent token. */
export async function registerOpenClusterAgent(
  ctx: Context,
  input: RegisterRequest,
  caller: Principal,
): Promise<RegisterResponse & { token: string }> {
  const id = input.worker_id;
  const holder = await queryOne<{
    token_id: string | number | null;
    minted_here: boolean | null;
    busy: boolean;
  }>(
    ctx.db,
    sql`SELECT w.token_id, (t.internal AND t.name = ${tokenName(id)}) AS minted_here,
               (${liveInPostgres(ctx.config.workerTtlSeconds, 'w')}
                AND w.session IS DISTINCT FROM ${input.previous_session ?? null}) AS busy
        FROM workers w LEFT JOIN api_tokens t ON t.id = w.token_id WHERE w.id = ${id}`,
  );
  // Another live run of this name keeps its token: it is not handed over (registerWorker's rule, said first).
  if (holder?.busy && holder.minted_here) {
    throw conflict(
      'worker_name_in_use',
      `Another agent is registered as ${id} and heartbeating; give this node a unique NODE_NAME, or stop the other agent and retry after ${ctx.config.workerTtlSeconds} s`,
    );
  }
  const created = await createToken(
    ctx.db,
    { name: tokenName(id), scopes: ['agent'], owner: 'system' },
    caller,
    {
      internal: true,
    },
  );
  const principal: Principal = {
    kind: 'system',
    tokenId: created.id,
    name: created.name,
    owner: created.owner,
    scopes: created.scopes,
    ...(caller.requestId ? { requestId: caller.requestId } : {}),
  };
  // The previous run's token (this agent restarted): the name goes to the new one.
  const previous = holder?.minted_here && holder.token_id !== null ? [Number(holder.token_id)] : [];
  try {
    await revokeTokens(ctx, previous);
    const registered = await registerWorker(ctx, input, principal);
    return { ...registered, token: created.token };
  } catch (error) {
    await revokeTokens(ctx, [created.id]);
    throw error;
  }
}
