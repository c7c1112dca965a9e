/** What went wrong, in terms the HTTP layer maps to a status: the domain never speaks HTTP. */
export type ErrorKind = 'invalid' | 'not_found' | 'conflict' | 'forbidden' | 'unavailable';

export class ConductorError extends Error {
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
