import type { Context as HonoContext } from 'hono';
import type { z } from 'zod';
import { ConductorError } from '../domain/errors.ts';

/** Parses `data` with `schema`, or throws a 400 whose message names the offending fields. */
export function parseInput<S extends z.ZodType>(schema: S, data: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') message = `unknown field(s): ${issue.keys.join(', ')}`;
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

export async function parseBody<S extends z.ZodType>(c: HonoContext, schema: S): Promise<z.infer<S>> {
  return parseInput(schema, await jsonBody(c), 'body');
}
