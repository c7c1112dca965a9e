/** What went wrong, in terms the HTTP layer maps to a status: the domain never speaks HTTP. */
export type ErrorKind =
  | 'invalid'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'gone'
  | 'conflict'
  | 'unprocessable'
  | 'rate_limited'
  | 'unavailable';

export class ConductorError extends Error {
  /** Seconds the caller should wait before trying again (rate limits, outages): the Retry-After header. */
  retryAfterSeconds?: number;

  constructor(
    readonly kind: ErrorKind,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ConductorError';
  }
}

export const notFound = (code: string, message: string) => new ConductorError('not_found', code, message);
export const conflict = (code: string, message: string, details?: Record<string, unknown>) =>
  new ConductorError('conflict', code, message, details);
export const forbidden = (code: string, message: string, details?: Record<string, unknown>) =>
  new ConductorError('forbidden', code, message, details);
export const unauthorized = (code: string, message: string) =>
  new ConductorError('unauthorized', code, message);
export const invalid = (code: string, message: string, details?: Record<string, unknown>) =>
  new ConductorError('invalid', code, message, details);
