import { z } from 'zod';
import { DEFAULT_CONFIG } from './domain/ports.ts';

/**
 * The settings the Node server and the Worker read alike, validated by one schema each, so a variable is
 * written once (functions/node/env.ts and functions/worker-env.ts both use these).
 */

/** Days of job output to keep: a whole number, 0 (keep forever) to 100 years. */
export const logRetentionDays = z.coerce
  .number({ error: 'CONDUCTOR_LOG_RETENTION_DAYS is a number of days (0: keep forever)' })
  .int('CONDUCTOR_LOG_RETENTION_DAYS is whole days (0: keep forever)')
  .min(0, 'CONDUCTOR_LOG_RETENTION_DAYS is at least 0 (0: keep forever)')
  .max(36_500, 'CONDUCTOR_LOG_RETENTION_DAYS is at most 36500')
  .default(DEFAULT_CONFIG.logRetentionDays);

/** Times a `requeue` job is requeued after losing its node before it ends NODE_FAIL. */
export const maxRequeues = z.coerce
  .number({ error: 'CONDUCTOR_MAX_REQUEUES is a whole number (0: never requeue)' })
  .int('CONDUCTOR_MAX_REQUEUES is a whole number (0: never requeue)')
  .min(0, 'CONDUCTOR_MAX_REQUEUES is at least 0 (0: never requeue)')
  .max(1_000, 'CONDUCTOR_MAX_REQUEUES is at most 1000')
  .default(DEFAULT_CONFIG.maxRequeues);

/** The highest priority a token without the admin scope may set (default 0: only admins raise). */
export const priorityCeiling = z.coerce
  .number({ error: 'CONDUCTOR_PRIORITY_CEILING is a whole number from 0 to 1000000' })
  .int('CONDUCTOR_PRIORITY_CEILING is a whole number from 0 to 1000000')
  .min(0, 'CONDUCTOR_PRIORITY_CEILING is at least 0')
  .max(1_000_000, 'CONDUCTOR_PRIORITY_CEILING is at most 1000000')
  .default(DEFAULT_CONFIG.priorityCeiling);

/** A number of live-log followers: a whole number, 0 (no limit) or more. */
export const followers = (fallback: number) => z.coerce.number().int().min(0).default(fallback);
