import { fileURLToPath } from 'node:url';

/** The committed drizzle-kit migrations, applied by the Node server at start and by `npm run db:migrate`. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../db/migrations', import.meta.url));
