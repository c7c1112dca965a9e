import net from 'node:net';

export const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Set by .ci/run: the real-service suites must run, not skip. */
export const REQUIRE_SERVICES = process.env.CONDUCTOR_REQUIRE_SERVICES === '1';

export function reachable(url: string, timeoutMs = 1000): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('error', () => resolve(false));
  });
}

/** Whether a real-service suite runs here; throws when CI requires the service and it is down. */
export async function serviceAvailable(name: 'postgres' | 'redis'): Promise<boolean> {
  const ok = await reachable(name === 'postgres' ? PG_ADMIN_URL : REDIS_URL);
  if (!ok && REQUIRE_SERVICES) {
    throw new Error(`${name} is required (CONDUCTOR_REQUIRE_SERVICES=1) but not reachable`);
  }
  if (!ok)
    console.warn(
      `[conductor tests] ${name} not reachable: its suites are skipped (PGlite/in-process ones still run)`,
    );
  return ok;
}
