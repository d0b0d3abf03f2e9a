/** Structured JSON logs on stdout (pino), one object per line, with the replica's fixed fields on each. */
import { pino, type Logger } from 'pino';

export function createLogger(level: string, fields: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service: 'replichat', pid: process.pid, ...fields } });
}
