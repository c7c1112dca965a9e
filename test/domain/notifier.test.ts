import { describe, expect, it } from 'vitest';
import { createLocalNotifier, createPollingNotifier } from '../../functions/domain/notifier.ts';

describe('work notifiers', () => {
  it.each([
    ['local (Node)', createLocalNotifier()],
    ['polling (Workers isolate)', createPollingNotifier(60_000)],
  ])('%s: a notify wakes the claims waiting for that worker, not the others', async (_name, notifier) => {
    const woken: string[] = [];
    const a = notifier.wait('a', 60_000).then(() => woken.push('a'));
    const b = notifier.wait('b', 60_000).then(() => woken.push('b'));
    notifier.notify('a');
    await a;
    expect(woken).toEqual(['a']);
    const abort = new AbortController();
    const b2 = notifier.wait('b', 60_000, abort.signal);
    abort.abort();
    await b2;
    notifier.notify('b');
    await b;
    expect(woken).toEqual(['a', 'b']);
  });

  it('polling: a wait with nothing placed ends after the poll interval, not the whole wait', async () => {
    const notifier = createPollingNotifier(20);
    let done = false;
    const waiting = notifier.wait('idle', 60_000).then(() => {
      done = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(done).toBe(true);
    await waiting;
  });
});
