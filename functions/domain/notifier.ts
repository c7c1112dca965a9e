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
 * For runtimes where a wake-up cannot cross from one process to another (Workers isolates): a claim is woken
 * at once by work placed in the same isolate (any request or cron it serves), and otherwise looks again every
 * `pollMs`. One per isolate, shared by its invocations.
 */
export function createPollingNotifier(pollMs: number): WorkNotifier {
  const local = createLocalNotifier();
  return {
    notify: local.notify,
    wait: (workerId, ms, signal) => local.wait(workerId, Math.min(ms, pollMs), signal),
  };
}
