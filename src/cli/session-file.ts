/**
 * The sessions kept between CLI invocations, one profile per user like `gh auth` accounts or kubeconfig
 * contexts: who is logged in, the bearer token, when it expires, the servers it was opened on, and the TLS
 * settings (CA file or plaintext) it used, so that later commands need none of those flags. One profile is
 * current; `--profile NAME` or REPLICHAT_PROFILE picks another for one command. A login adds or replaces
 * only its own profile, so logging in as a second user never drops the first one's session.
 *
 * Tokens are as good as passwords until they expire, so the file is written with mode 0600 in a directory of
 * mode 0700, and atomically (a temporary file renamed over the old one), so that a crash never leaves half a
 * file behind. Two logins at the same instant may race; the later rename wins and the other login's profile
 * is lost (it logs in again), which is the price of having no lock file.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** One profile: a session of one user on one cluster. */
export interface StoredSession {
  readonly username: string;
  readonly sessionToken: string;
  readonly expiresAtMs: number;
  /** The servers to use when neither --servers nor REPLICHAT_SERVERS is given, the last leader first. */
  readonly servers: string[];
  /** The CA file (an absolute path) to check the servers with, when the login used one. */
  readonly caCertPath?: string;
  /** True when the login used plaintext (--insecure). */
  readonly insecure?: boolean;
}

/** Everything in the file. */
export interface SessionStore {
  /** The profile commands use by default; undefined when none is. */
  readonly current: string | undefined;
  readonly profiles: Readonly<Record<string, StoredSession>>;
}

const EMPTY_STORE: SessionStore = { current: undefined, profiles: {} };
const FORMAT_VERSION = 2;

/** Raised for a session file that exists but cannot be used. */
export class SessionFileError extends Error {
  override name = 'SessionFileError';
}

/**
 * Where the sessions live: REPLICHAT_SESSION_FILE, else replichat/session.json under XDG_CONFIG_HOME, else
 * under ~/.config. The environment is a parameter so that this module never reads process state.
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
    session.servers.every((server) => typeof server === 'string') &&
    (session.caCertPath === undefined || typeof session.caCertPath === 'string') &&
    (session.insecure === undefined || typeof session.insecure === 'boolean')
  );
}

function toStore(parsed: unknown): SessionStore | undefined {
  // The first format held one bare session; it becomes the current profile, named after its user.
  if (isStoredSession(parsed)) return { current: parsed.username, profiles: { [parsed.username]: parsed } };
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { current, profiles } = parsed as { current?: unknown; profiles?: unknown };
  if (typeof profiles !== 'object' || profiles === null || Array.isArray(profiles)) return undefined;
  if (!Object.values(profiles).every(isStoredSession)) return undefined;
  const store = profiles as Record<string, StoredSession>;
  return { current: typeof current === 'string' && current in store ? current : undefined, profiles: store };
}

/** The stored profiles; an empty store when there is no file. */
export async function readSessionStore(path: string): Promise<SessionStore> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_STORE;
    throw new SessionFileError(`cannot read the session file ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const store = toStore(parsed);
  if (store === undefined) throw new SessionFileError(`the session file ${path} is malformed; log in again to replace it`);
  return store;
}

/** The profile named `name`, or the current one; undefined when there is none. */
export async function readSession(path: string, name?: string): Promise<StoredSession | undefined> {
  const store = await readSessionStore(path);
  const chosen = name ?? store.current;
  return chosen === undefined ? undefined : store.profiles[chosen];
}

async function writeSessionStore(path: string, store: SessionStore): Promise<void> {
  const directory = dirname(path);
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const temporaryPath = join(directory, `.${randomBytes(6).toString('hex')}.session.tmp`);
  const contents = `${JSON.stringify({ version: FORMAT_VERSION, current: store.current ?? null, profiles: store.profiles }, null, 2)}\n`;
  try {
    // The mode is set at creation so that the tokens are never readable by others, not even briefly.
    await writeFile(temporaryPath, contents, { mode: 0o600, flag: 'wx' });
    // A umask cannot widen the mode, but an explicit chmod makes the result independent of it.
    await chmod(temporaryPath, 0o600);
    await rename(temporaryPath, path);
  } catch (error) {
    await rm(temporaryPath, { force: true });
    throw error;
  }
}

/**
 * Stores `session` as the profile `name` and makes it current; resolves with the profile that was current
 * before, so that the caller can say that it switched.
 */
export async function writeSession(path: string, name: string, session: StoredSession): Promise<string | undefined> {
  const store = await readSessionStore(path).catch(() => EMPTY_STORE);
  await writeSessionStore(path, { current: name, profiles: { ...store.profiles, [name]: session } });
  return store.current;
}

/** Makes the profile `name` current; false when there is no such profile. */
export async function useSession(path: string, name: string): Promise<boolean> {
  const store = await readSessionStore(path);
  if (store.profiles[name] === undefined) return false;
  await writeSessionStore(path, { ...store, current: name });
  return true;
}

/**
 * Removes the profile `name` (the current one when undefined); resolves with whether there was one. When
 * the last profile goes, so does the file.
 */
export async function removeSession(path: string, name?: string): Promise<boolean> {
  const store = await readSessionStore(path).catch(() => EMPTY_STORE);
  const chosen = name ?? store.current;
  if (chosen === undefined || store.profiles[chosen] === undefined) return false;
  const profiles = { ...store.profiles };
  delete profiles[chosen];
  if (Object.keys(profiles).length === 0) {
    await rm(path, { force: true });
    return true;
  }
  await writeSessionStore(path, { current: store.current === chosen ? undefined : store.current, profiles });
  return true;
}
