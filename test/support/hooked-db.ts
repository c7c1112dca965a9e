import { PgDialect } from 'drizzle-orm/pg-core';
import type { Database } from '../../functions/domain/ports.ts';

const dialect = new PgDialect();

/** The text of a drizzle statement, to recognise it. */
export const statementText = (statement: unknown) =>
  dialect.sqlToQuery(statement as Parameters<PgDialect['sqlToQuery']>[0]).sql;

/**
 * `db`, also inside its transactions, with a hook around every statement: `before` may throw (a failure
 * injected before the statement runs), `after` may wait (the caller pauses right after that statement) and
 * `failed` hears of every statement that failed.
 */
export function hookedDb(
  db: Database,
  hooks: {
    before?: (text: string) => void;
    after?: (text: string) => Promise<void>;
    failed?: (text: string, error: unknown) => void;
  },
): Database {
  const wrap = (target: Database): Database =>
    new Proxy(target, {
      get(t, property) {
        if (property === 'execute') {
          return async (statement: unknown) => {
            const text = statementText(statement);
            hooks.before?.(text);
            const result = await (t.execute as (s: unknown) => Promise<unknown>)(statement).catch(
              (error: unknown) => {
                hooks.failed?.(text, error);
                throw error;
              },
            );
            await hooks.after?.(text);
            return result;
          };
        }
        if (property === 'transaction') {
          return (work: (tx: Database) => Promise<unknown>, config?: unknown) =>
            (t.transaction as (w: unknown, c?: unknown) => Promise<unknown>)(
              (tx: Database) => work(wrap(tx)),
              config,
            );
        }
        const value = Reflect.get(t, property);
        return typeof value === 'function' ? value.bind(t) : value;
      },
    });
  return wrap(db);
}
