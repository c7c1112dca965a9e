/** Exponential backoff with jitter, and an abortable sleep. */

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Random source in [0, 1); Math.random by default. */
  random?: () => number;
}

/**
 * Delays grow 2x per failure from `initialMs` up to `maxMs`; each delay is drawn uniformly from the upper half
 * of the current step ("equal jitter"), so agents that failed together do not retry together.
 */
export class Backoff {
  private failures = 0;
  constructor(private readonly options: BackoffOptions) {}

  /** The delay before the next attempt; counts one more failure. */
  next(): number {
    const { initialMs, maxMs } = this.options;
    const step = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    const random = this.options.random ?? Math.random;
    return Math.round(step / 2 + (random() * step) / 2);
  }

  reset(): void {
    this.failures = 0;
  }

  get attempts(): number {
    return this.failures;
  }
}

/** Resolves after `ms`, or at once (without throwing) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
