import type { Context as HonoContext } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ConductorError, type ErrorKind } from '../domain/errors.ts';
import type { Logger } from '../domain/ports.ts';
import { pgErrorCode } from '../domain/sql.ts';

/** The one error envelope: `{error: {code, message, details?, request_id}}`. */
export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown>; request_id?: string };
}

const STATUS: Record<ErrorKind, ContentfulStatusCode> = {
  invalid: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  gone: 410,
  conflict: 409,
  unprocessable: 422,
  rate_limited: 429,
  unavailable: 503,
};

export function errorResponse(
  c: HonoContext,
  status: ContentfulStatusCode,
  code: string,
  message: string,
  details?: Record<string, unknown>,
) {
  const body: ErrorBody = {
    error: {
      code,
      message,
      ...(details ? { details } : {}),
      request_id: c.get('requestId') as string | undefined,
    },
  };
  return c.json(body, status);
}

/** Connection-level failures of Postgres: the caller should retry later (503), it did nothing wrong. */
function isDatabaseUnavailable(error: unknown): boolean {
  const code = pgErrorCode(error);
  if (!code) return false;
  return (
    code.startsWith('08') || // connection exceptions
    code === '57P01' || // admin shutdown
    code === '57P02' ||
    code === '57P03' || // cannot connect now
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'ETIMEDOUT' ||
    code === 'ENOTFOUND'
  );
}

/**
 * node-postgres's "Connection terminated unexpectedly" (a connection lost mid-query) and pool connect
 * timeouts carry no code; drizzle wraps them ("Failed query: ...") with the driver's error as `cause`.
 */
function isConnectionLost(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (/connection terminated|timeout exceeded when trying to connect|query read timeout/i.test(e.message))
      return true;
  }
  return false;
}

export function createErrorHandler(logger: Logger) {
  return (error: Error, c: HonoContext) => {
    if (error instanceof ConductorError) {
      if (error.retryAfterSeconds !== undefined) c.header('Retry-After', String(error.retryAfterSeconds));
      if (error.kind === 'unauthorized') c.header('WWW-Authenticate', 'Bearer realm="conductor"');
      return errorResponse(c, STATUS[error.kind], error.code, error.message, error.details);
    }
    if (error instanceof HTTPException) {
      const status = error.status as ContentfulStatusCode;
      const code =
        status === 413 ? 'payload_too_large' : status === 415 ? 'unsupported_media_type' : 'http_error';
      return errorResponse(c, status, code, error.message);
    }
    if (isDatabaseUnavailable(error) || isConnectionLost(error)) {
      logger.error('Database unavailable', { error: error.message, path: c.req.path });
      c.header('Retry-After', '5');
      return errorResponse(c, 503, 'database_unavailable', 'The database is unavailable; retry shortly');
    }
    const cause = error.cause instanceof Error ? error.cause : undefined;
    logger.error('Unhandled error', {
      error: cause ? `${error.message.split('\n')[0]}: ${cause.message}` : error.message,
      code: pgErrorCode(error),
      path: c.req.path,
      stack: (cause ?? error).stack,
    });
    return errorResponse(
      c,
      500,
      'internal_error',
      'Internal error; the request id helps find it in the logs',
    );
  };
}
