/** @jsxImportSource hono/jsx */
import { raw } from 'hono/html';
import type { Child } from 'hono/jsx';
import { ASSET_PATHS } from '../assets.ts';

/** The navigation: one line per page (partitions and arrays join here). */
export const NAV = [
  { key: 'overview', href: '/', label: 'Overview' },
  { key: 'nodes', href: '/ui/nodes', label: 'Nodes' },
  { key: 'usage', href: '/ui/usage', label: 'Usage' },
  { key: 'reservations', href: '/ui/reservations', label: 'Reservations' },
  { key: 'accounts', href: '/ui/accounts', label: 'Accounts' },
] as const;
export type NavKey = (typeof NAV)[number]['key'];

/**
 * Every page's frame: header and navigation, the token form, the error line. The page itself holds no data:
 * the client script fills its regions (`data-region`) from the API with the browser's token.
 */
export const Layout = ({
  title,
  current,
  children,
}: {
  title: string;
  current?: NavKey;
  children: Child;
}) => (
  <>
    {raw('<!doctype html>')}
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{title}</title>
        <link rel="stylesheet" href={ASSET_PATHS.css} />
        <script src={ASSET_PATHS.js} defer />
      </head>
      <body>
        <a class="skip" href="#main">
          Skip to content
        </a>
        <header>
          <span class="brand">Conductor</span>
          <nav aria-label="Main">
            <ul>
              {NAV.map((item) => (
                <li>
                  <a href={item.href} aria-current={item.key === current ? 'page' : undefined}>
                    {item.label}
                  </a>
                </li>
              ))}
            </ul>
          </nav>
          <span id="updated" aria-live="polite" />
          <button id="token-btn" type="button" aria-controls="token-box">
            Token
          </button>
        </header>
        <main id="main">
          <section id="token-box" hidden aria-labelledby="token-h">
            <h2 id="token-h">API token needed</h2>
            <p>This control plane requires a token. Paste one (kept in this browser only):</p>
            <form id="token-form" class="row">
              <label for="token-input">Token</label>
              <input id="token-input" type="password" autocomplete="off" size={40} placeholder="cnd_..." />
              <button class="primary" type="submit">
                Save
              </button>
              <button id="token-clear" type="button">
                Forget
              </button>
            </form>
          </section>
          <p id="error" class="err" role="alert" />
          {children}
        </main>
      </body>
    </html>
  </>
);

/** A part of the page the client script loads (and reloads every `every` ms) from an HTML fragment route. */
export const Region = ({ id, src, every }: { id: string; src: string; every: number }) => (
  <div id={id} data-region={src} data-every={every} aria-busy="true">
    <p>Loading…</p>
  </div>
);
