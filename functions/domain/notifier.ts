import type { WorkNotifier } from './ports.ts';

/** In-process wake-ups for long-polling claims. Another process's claims fall back to their timeout. */
export function createLocalNotifier(): WorkNotifier {
  const waiters = new Map<string, Set<() => void>>();
  return {
    notify(workerId) {
      const set = waiters.get(workerId);
      if (!set) return;
      waiters.delete(workerId);
      for (const wake of set) wake();
    },
    wait(workerId, ms, signal) {
      return new Promise<void>((resolve) => {
        let set = waiters.get(workerId);
        if (!set) {
          set = new Set();
          waiters.set(workerId, set);
        }
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          waiters.get(workerId)?.delete(done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        signal?.addEventListener('abort', done, { once: true });
        set.add(done);
      });
    },
  };
}

/**
 * For runtimes where a wake-up cannot cross from one invocation to another (Workers isolates): a claim
 * simply looks again every `pollMs`.
 */
export function createPollingNotifier(pollMs: number): WorkNotifier {
  return {
    notify() {},
    wait(_workerId, ms, signal) {
      return new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(ms, pollMs));
        signal?.addEventListener('abort', done, { once: true });
      });
    },
  };
}
