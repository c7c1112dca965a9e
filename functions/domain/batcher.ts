/**
 * Coalesces concurrent calls into batches: the first call runs at once (alone, so a quiet system adds no
 * latency); calls arriving while a batch runs wait and then run together as the next batch. Under load that
 * turns N statements (and N commits, N waits on the same hot rows) into one.
 */
export function createBatcher<I, O>(
  run: (items: I[]) => Promise<O[]>,
  maxItems = 500,
): (item: I) => Promise<O> {
  let queue: { item: I; resolve: (value: O) => void; reject: (error: unknown) => void }[] = [];
  let running = false;

  const drain = async () => {
    running = true;
    try {
      while (queue.length > 0) {
        const batch = queue.slice(0, maxItems);
        queue = queue.slice(batch.length);
        try {
          const results = await run(batch.map((b) => b.item));
          for (const [i, b] of batch.entries()) b.resolve(results[i] as O);
        } catch (error) {
          for (const b of batch) b.reject(error);
        }
      }
    } finally {
      running = false;
    }
  };

  return (item) =>
    new Promise<O>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (!running) void drain();
    });
}
