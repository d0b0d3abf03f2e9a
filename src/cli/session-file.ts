/**
 * The session kept between CLI invocations: who is logged in, the bearer token, when it expires, and the
 * servers it was opened on. The token is as good as a password until it expires, so the file is written
 * with mode 0600 in a directory of mode 0700, and atomically (a temporary file renamed over the old one),
 * so that a crash or a concurrent invocation never leaves half a file behind.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export interface StoredSession {
  readonly username: string;
  readonly sessionToken: string;
  readonly expiresAtMs: number;
  /** The servers to use when neither --servers nor REPLICHAT_SERVERS is given, the last leader first. */
  readonly servers: string[];
}

/** Raised for a session file that exists but cannot be used. */
export class SessionFileError extends Error {
  override name = 'SessionFileError';
}

/**
 * Where the session lives: REPLICHAT_SESSION_FILE, else replichat/session.json under XDG_CONFIG_HOME,
 * else under ~/.config. The environment is a parameter so that this module never reads process state.
 */
export function defaultSessionFilePath(environment: Readonly<Record<string, string | undefined>>): string {
  const explicit = environment.REPLICHAT_SESSION_FILE;
  if (explicit !== undefined && explicit !== '') return explicit;
  const configHome = environment.XDG_CONFIG_HOME;
  const base = configHome !== undefined && configHome !== '' ? configHome : join(homedir(), '.config');
  return join(base, 'replichat', 'session.json');
}

function isStoredSession(value: unknown): value is StoredSession {
  if (typeof value !== 'object' || value === null) return false;
  const session = value as Record<string, unknown>;
  return (
    typeof session.username === 'string' &&
    typeof session.sessionToken === 'string' &&
    typeof session.expiresAtMs === 'number' &&
    Array.isArray(session.servers) &&
    session.servers.every((server) => typeof server === 'string')
  );
}

/** The stored session, or undefined when there is no file. */
export async function readSession(path: string): Promise<StoredSession | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SessionFileError(`cannot read the session file ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!isStoredSession(parsed)) {
    throw new SessionFileError(`the session file ${path} is malformed; log in again to replace it`);
  }
  return parsed;
}

export async function writeSession(path: string, session: StoredSession): Promise<void> {
  const directory = dirname(path);
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const temporaryPath = join(directory, `.${randomBytes(6).toString('hex')}.session.tmp`);
  const contents = `${JSON.stringify(session, null, 2)}\n`;
  try {
    // The mode is set at creation so that the token is never readable by others, not even briefly.
    await writeFile(temporaryPath, contents, { mode: 0o600, flag: 'wx' });
    // A umask cannot widen the mode, but an explicit chmod makes the result independent of it.
    await chmod(temporaryPath, 0o600);
    await rename(temporaryPath, path);
  } catch (error) {
    await rm(temporaryPath, { force: true });
    throw error;
  }
}

/** Removes the session file; resolves with whether there was one. */
export async function removeSession(path: string): Promise<boolean> {
  try {
    await rm(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
