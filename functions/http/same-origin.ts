/**
 * What keeps web pages out (review C1). A page the user visits can make the browser send "simple" requests
 * (text/plain or form bodies, no CORS preflight) to any address, this server's included, and with DNS
 * rebinding it can even read the answers under its own name. On the open loopback cluster the browser is
 * all the authority such a request needs, so before anything else runs:
 *
 * - a foreign Host is refused (rebinding) while the server is on loopback (`auth: 'auto'`): an IP address,
 *   `localhost` or a configured public name only. With tokens required there is no ambient authority to
 *   borrow, and a deployed server answers to whatever name it is given;
 * - a write (any method but GET and HEAD) from another origin is refused: `Sec-Fetch-Site` other than
 *   `same-origin` or `none`, or else an `Origin` that is not this server's;
 * - a write with a Content-Type other than JSON is refused (415): no form or text/plain body gets through,
 *   and a JSON body cannot be sent cross-origin without a preflight, which is never granted (no CORS).
 *
 * Signed webhook deliveries are exempt: their signature is their authority, and providers send them with
 * whatever Content-Type and Host (a tunnel's) they use.
 */
import type { MiddlewareHandler } from 'hono';
import type { ConductorConfig } from '../domain/ports.ts';
import { type AppEnv, routeNeed } from './auth.ts';
import { errorResponse } from './errors.ts';

const READS = new Set(['GET', 'HEAD']);

/** `application/json` or an `application/<something>+json`, with or without parameters. */
export function isJsonContentType(value: string | undefined): boolean {
  return value !== undefined && /^\s*application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i.test(value);
}

/** A name no DNS answer can move: an IP address (v4, or v6 in brackets as URLs give it) or localhost. */
function isAddressOrLocalhost(hostname: string): boolean {
  return hostname === 'localhost' || hostname.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}$/.test(hostname);
}

function originOf(value: string): string | undefined {
  try {
    return new URL(value).origin;
  } catch {
    return undefined;
  }
}

/** Why a write comes from another site (undefined when it does not). */
function crossSiteReason(
  site: string | undefined,
  origin: string | undefined,
  own: URL,
  publicOrigins: ReadonlySet<string>,
): string | undefined {
  // Browsers set Sec-Fetch-Site themselves (pages cannot), relative to the URL they used: behind a proxy
  // that rewrites Host, `same-origin` still says the page is this server's.
  if (site === 'same-origin') return undefined;
  if (site !== undefined && site !== 'none') return `Sec-Fetch-Site: ${site}`;
  if (origin === undefined) return undefined;
  const from = originOf(origin);
  if (from !== undefined && (from === own.origin || publicOrigins.has(from))) return undefined;
  return `Origin: ${origin}`;
}

export function sameOriginGuard(config: ConductorConfig): MiddlewareHandler<AppEnv> {
  const publicOrigins = new Set(
    (config.publicOrigins ?? []).map(originOf).filter((o): o is string => o !== undefined),
  );
  const publicNames = new Set([...publicOrigins].map((o) => new URL(o).hostname));
  const checkHost = config.auth === 'auto';
  return async (c, next) => {
    if (routeNeed(c.req.method, c.req.path).need === 'signed') return next();
    const own = new URL(c.req.url);
    if (checkHost && !isAddressOrLocalhost(own.hostname) && !publicNames.has(own.hostname)) {
      return errorResponse(
        c,
        403,
        'host_not_allowed',
        `This server answers to its own addresses and localhost, not to Host ${own.host} (a page's DNS ` +
          'rebinding looks like this). If that is its name, set CONDUCTOR_PUBLIC_URL to the URL you use.',
      );
    }
    if (READS.has(c.req.method)) return next();
    const reason = crossSiteReason(
      c.req.header('sec-fetch-site')?.toLowerCase(),
      c.req.header('origin'),
      own,
      publicOrigins,
    );
    if (reason) {
      return errorResponse(
        c,
        403,
        'cross_site_request',
        `Refused a write from another site (${reason}): only this server's own pages, and clients that are ` +
          'not browsers, may change anything.',
      );
    }
    const type = c.req.header('content-type');
    if (type !== undefined && !isJsonContentType(type)) {
      return errorResponse(
        c,
        415,
        'unsupported_media_type',
        `The request body must be JSON, sent with Content-Type: application/json (got ${type.slice(0, 100)})`,
      );
    }
    return next();
  };
}
