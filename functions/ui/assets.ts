import { ASSET_VERSION, CLIENT_CSS, CLIENT_JS } from './assets.generated.ts';

/** The client script and style sheet, named by their content's hash: browsers may cache them for good. */
export const ASSET_PATHS = {
  js: `/ui/assets/dashboard-${ASSET_VERSION}.js`,
  css: `/ui/assets/dashboard-${ASSET_VERSION}.css`,
};

export const ASSETS: Record<string, { body: string; type: string }> = {
  [ASSET_PATHS.js]: { body: CLIENT_JS, type: 'text/javascript; charset=utf-8' },
  [ASSET_PATHS.css]: { body: CLIENT_CSS, type: 'text/css; charset=utf-8' },
};
