/**
 * Agent logging: one line per message, each line prefixed with an ISO-8601 UTC timestamp, so operators can
 * grep the contract's phrases (`✓ Worker registered`, `Heartbeat sent`, ...) and still see when they happened.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface AgentLogger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const LEVEL_TAG: Record<LogLevel, string> = { debug: 'DEBUG ', info: '', warn: 'WARN ', error: 'ERROR ' };

/** Formats `message` as log text: every line (a message may span several) gets `<ISO time> [LEVEL ]`. */
export function formatLogLines(level: LogLevel, message: string, now: Date = new Date()): string {
  const prefix = `${now.toISOString()} ${LEVEL_TAG[level]}`;
  return `${message
    .split(/\r?\n/)
    .map((line) => prefix + line)
    .join('\n')}\n`;
}

export interface StreamLoggerOptions {
  /** Where lines go; stdout by default. One stream keeps the lines of all levels in order. */
  write?: (text: string) => void;
  /** Emit debug lines too. */
  debug?: boolean;
  /** `json`: one JSON object per line (`{"time","level","message"}`), for log shippers. */
  format?: 'text' | 'json';
  now?: () => Date;
}

export function createLogger(options: StreamLoggerOptions = {}): AgentLogger {
  const write = options.write ?? ((text: string) => void process.stdout.write(text));
  const now = options.now ?? (() => new Date());
  const emit = (level: LogLevel) =>
    options.format === 'json'
      ? (message: string) => write(`${JSON.stringify({ time: now().toISOString(), level, message })}\n`)
      : (message: string) => write(formatLogLines(level, message, now()));
  return {
    debug: options.debug ? emit('debug') : () => {},
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
  };
}

/** A logger that keeps lines in memory (for tests and embedding). */
export function memoryLogger(): AgentLogger & { lines: string[] } {
  const lines: string[] = [];
  const push = (level: LogLevel) => (message: string) => lines.push(`${level} ${message}`);
  return { lines, debug: push('debug'), info: push('info'), warn: push('warn'), error: push('error') };
}

export const silentLogger: AgentLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** A short, single-line description of any thrown value. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    // AgentApiError messages already say what their cause was.
    const cause = err.cause instanceof Error && err.name !== 'AgentApiError' ? `: ${err.cause.message}` : '';
    return `${err.message}${cause}`.replace(/\s+/g, ' ').trim();
  }
  return String(err);
}
