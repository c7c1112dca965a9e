/** Counters of this process (or Workers isolate), for GET /metrics (see metrics.ts). */
export const PASS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** This process's counters (one per app context). */
export class ProcessMetrics {
  readonly passBuckets = PASS_BUCKETS.map(() => 0);
  passCount = 0;
  passSum = 0;
  cacheHits = 0;
  cacheMisses = 0;
  cacheErrors = 0;
  heartbeats = 0;

  observePass(seconds: number): void {
    this.passCount++;
    this.passSum += seconds;
    PASS_BUCKETS.forEach((le, i) => {
      if (seconds <= le) this.passBuckets[i] = (this.passBuckets[i] ?? 0) + 1;
    });
  }
}
