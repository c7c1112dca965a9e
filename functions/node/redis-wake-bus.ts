import { Redis } from 'ioredis';
import type { WakeBus } from './channel-hub.ts';
import { quitRedis } from './ioredis.ts';

/**
 * The Redis pub/sub channel wakes travel on between server processes. A message is the worker id, followed,
 * for a wake that carries assignments, by a newline and the wake frame (worker ids hold no newline).
 */
export const WAKE_CHANNEL = 'conductor:wake';

/**
 * Wakes between the server processes of one cluster over Redis pub/sub. Best effort, as every wake is: a
 * lost one is made good by the backstop's lost-push recovery (maintenance.ts wakeUndelivered).
 */
export function createRedisWakeBus(url: string): WakeBus & { close(): Promise<void> } {
  const options = { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false } as const;
  const publisher = new Redis(url, options);
  publisher.on('error', () => {});
  let subscriber: Redis | undefined;
  return {
    publish(workerId, frame) {
      const message = frame === undefined ? workerId : `${workerId}\n${frame}`;
      const send = () => publisher.publish(WAKE_CHANNEL, message).catch(() => {});
      if (publisher.status === 'ready') void send();
      else if (publisher.status === 'wait') void publisher.connect().then(send, () => {});
    },
    subscribe(onWake) {
      const sub = new Redis(url, { maxRetriesPerRequest: null });
      subscriber = sub;
      sub.on('error', () => {});
      sub.on('message', (channel: string, message: string) => {
        if (channel !== WAKE_CHANNEL) return;
        const split = message.indexOf('\n');
        if (split < 0) onWake(message);
        else onWake(message.slice(0, split), message.slice(split + 1));
      });
      void sub.subscribe(WAKE_CHANNEL).catch(() => {}); // re-subscribed by ioredis on reconnect
      return () => quitRedis(sub);
    },
    async close() {
      await quitRedis(publisher);
      if (subscriber) await quitRedis(subscriber);
    },
  };
}
