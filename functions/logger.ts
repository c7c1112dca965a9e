import type { Logger } from './domain/ports.ts';

/** Console logging for every runtime: plain lines with a timestamp, or one JSON object per line. */
export function createConsoleLogger(format: 'text' | 'json' = 'text'): Logger {
  const write = (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => {
    const time = new Date().toISOString();
    if (format === 'json') {
      console.log(JSON.stringify({ time, level, message, ...fields }));
      return;
    }
    const extra = fields && Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
    const line = `${time} ${level === 'info' ? '' : `${level.toUpperCase()} `}${message}${extra}`;
    if (level === 'info') console.log(line);
    else console.error(line);
  };
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}
