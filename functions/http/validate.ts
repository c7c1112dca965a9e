import type { Context as HonoContext } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { z } from 'zod';
import { ConductorError } from '../domain/errors.ts';
import { isJsonContentType } from './same-origin.ts';

/**
 * Parses `data` with `schema`, or throws a 400 whose message names the offending fields. In a query string or
 * a path, a NUL character or broken Unicode is refused before the schema sees it: no database takes it.
 */
export function parseInput<S extends z.ZodType>(schema: S, data: unknown, where: string): z.infer<S> {
  if (where === 'query' || where === 'path') refuseBadText(data, where);
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({
    path: issue.path.map(String).join('.') || where,
    message: issueMessage(issue),
  }));
  const summary = issues.map((i) => (i.message.startsWith(i.path) ? i.message : `${i.path}: ${i.message}`));
  throw new ConductorError('invalid', 'invalid_request', `Invalid ${where}: ${summary.join('; ')}`, {
    issues,
  });
}

export async function jsonBody(c: HonoContext): Promise<unknown> {
  const type = c.req.header('content-type');
  if (!isJsonContentType(type)) {
    throw new HTTPException(415, {
      message: `The request body must be JSON, sent with Content-Type: application/json (${type === undefined ? 'none was sent' : `got ${type.slice(0, 100)}`})`,
    });
  }
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
  options: Parameters<typeof refuseBadText>[2] = {},
): Promise<z.infer<S>> {
  const body = await jsonBody(c);
  refuseBadText(body, 'body', options);
  return parseInput(schema, body, 'body');
}

/** A zod issue's message as the API says it: unknown fields and bad names spelled out. */
export function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown field(s): ${issue.keys.join(', ')}`;
  if (issue.code === 'invalid_key' && issue.issues.length > 0) {
    return `invalid name: ${issue.issues.map((i) => i.message).join('; ')}`;
  }
  return issue.message;
}

/**
 * Throws a 400 naming the first string in `value` that cannot be stored (findBadText), outside the `allowed`
 * paths; `path` renames where it is (a batch's `jobs.3` as `jobs[3]`), `note` ends the message.
 */
export function refuseBadText(
  value: unknown,
  where: string,
  options: { allowed?: readonly string[]; path?: (path: string) => string; note?: string } = {},
): void {
  const bad = findBadText(value, options.allowed);
  if (!bad) return;
  const path = options.path ? options.path(bad.path) : bad.path;
  throw new ConductorError(
    'invalid',
    'invalid_request',
    `Invalid ${where}: ${path}: ${bad.problem}${options.note ?? ''}`,
    {
      issues: [{ path, message: bad.problem }],
    },
  );
}
