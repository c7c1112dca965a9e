import type { Context as HonoContext } from 'hono';
import type { z } from 'zod';
import { ConductorError } from '../domain/errors.ts';

/**
 * Parses `data` with `schema`, or throws a 400 whose message names the offending fields. In a query string or
 * a path, a NUL character or broken Unicode is refused before the schema sees it: no database takes it.
 */
export function parseInput<S extends z.ZodType>(schema: S, data: unknown, where: string): z.infer<S> {
  if (where === 'query' || where === 'path') {
    const bad = findBadText(data);
    if (bad) {
      throw new ConductorError(
        'invalid',
        'invalid_request',
        `Invalid ${where}: ${bad.path}: ${bad.problem}`,
        {
          issues: [{ path: bad.path, message: bad.problem }],
        },
      );
    }
  }
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') message = `unknown field(s): ${issue.keys.join(', ')}`;
    if (issue.code === 'invalid_key' && issue.issues.length > 0) {
      message = `invalid name: ${issue.issues.map((i) => i.message).join('; ')}`;
    }
    return { path: path || where, message };
  });
  const summary = issues.map((i) => (i.message.startsWith(i.path) ? i.message : `${i.path}: ${i.message}`));
  throw new ConductorError('invalid', 'invalid_request', `Invalid ${where}: ${summary.join('; ')}`, {
    issues,
  });
}

export async function jsonBody(c: HonoContext): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') {
    throw new ConductorError('invalid', 'invalid_json', 'The request body must be a JSON object');
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ConductorError(
      'invalid',
      'invalid_json',
      `The request body is not valid JSON: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why a string cannot be stored: a NUL character (Postgres text refuses it) or broken UTF-16. */
export function badText(text: string): string | undefined {
  if (text.includes('\u0000')) return 'contains a NUL character';
  if (LONE_SURROGATE.test(text)) return 'contains an unpaired surrogate (\\ud800-\\udfff): not valid Unicode';
  return undefined;
}

/** The first string (or key) in `value` that cannot be stored, outside the `allowed` paths: where and why. */
export function findBadText(
  value: unknown,
  allowed: readonly string[] = [],
  path = '',
): { path: string; problem: string } | undefined {
  if (typeof value === 'string') {
    const problem = badText(value);
    return problem ? { path: path || 'body', problem } : undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  for (const [key, item] of Object.entries(value)) {
    const at = path ? `${path}.${key}` : key;
    const keyProblem = badText(key);
    if (keyProblem) return { path: at, problem: `its name ${keyProblem}` };
    if (allowed.includes(at)) continue;
    const found = findBadText(item, allowed, at);
    if (found) return found;
  }
  return undefined;
}

/**
 * Parses a JSON body with `schema`. NUL characters and unpaired surrogates are refused wherever they are
 * (Postgres cannot store them), except under the `allowed` paths, whose schema deals with them.
 */
export async function parseBody<S extends z.ZodType>(
  c: HonoContext,
  schema: S,
  options: { allowed?: readonly string[] } = {},
): Promise<z.infer<S>> {
  const body = await jsonBody(c);
  const bad = findBadText(body, options.allowed);
  if (bad) {
    throw new ConductorError('invalid', 'invalid_request', `Invalid body: ${bad.path}: ${bad.problem}`, {
      issues: [{ path: bad.path, message: bad.problem }],
    });
  }
  return parseInput(schema, body, 'body');
}
