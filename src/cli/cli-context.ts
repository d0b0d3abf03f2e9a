/**
 * What a client command runs with: the resolved global options, the output, the stored session (the chosen
 * profile), and the ChatClients and terminal it opened. `runCommand` closes them all when the command ends,
 * however it ends, because an open gRPC channel or terminal would keep a one-shot command's process alive.
 */
import type { Command } from 'commander';
import { usernameKey } from '../core/validation.js';
import { ChatClient, type ChatClientTls } from './chat-client.js';
import type { LoginResult } from './chat-types.js';
import { CliError } from './cli-error.js';
import { type CliSettings, DEFAULT_SERVERS, type GlobalOptionValues, resolveSettings } from './global-options.js';
import { formatTimestamp, Output } from './output.js';
import { readSession, removeSession, type StoredSession, writeSession } from './session-file.js';
import { TerminalInput } from './terminal-input.js';

export type Environment = Readonly<Record<string, string | undefined>>;

/** What saveSession did: the profile it wrote, and the one that was current before (when another). */
export interface SavedSession {
  readonly session: StoredSession;
  readonly profile: string;
  readonly previousProfile: string | undefined;
}

export class CliContext {
  readonly output: Output;
  private readonly clients: ChatClient[] = [];
  private terminalInput: TerminalInput | undefined;
  private warnedAboutPlaintext = false;

  constructor(
    readonly settings: CliSettings,
    readonly environment: Environment,
  ) {
    this.output = new Output(settings.json);
  }

  /** The chosen profile's session; fails with NOT_LOGGED_IN when there is none, SESSION_EXPIRED when it ran out. */
  async requireSession(): Promise<StoredSession> {
    const session = await readSession(this.settings.sessionFilePath, this.settings.profile);
    if (session === undefined) {
      throw new CliError(
        this.settings.profile === undefined
          ? 'not logged in: run `replichat login <username>` first'
          : `no profile named ${this.settings.profile}: run \`replichat login <username> --profile ${this.settings.profile}\``,
        'NOT_LOGGED_IN',
      );
    }
    if (session.expiresAtMs <= Date.now()) {
      throw new CliError(
        `the session of ${session.username} expired at ${formatTimestamp(session.expiresAtMs)}: run \`replichat login ${session.username}\``,
        'SESSION_EXPIRED',
      );
    }
    return session;
  }

  /** The chosen profile if there is one; a damaged file counts as none, since it is about to be replaced. */
  async optionalSession(): Promise<StoredSession | undefined> {
    try {
      return await readSession(this.settings.sessionFilePath, this.settings.profile);
    } catch {
      return undefined;
    }
  }

  /** --servers or REPLICHAT_SERVERS, else the servers the session was opened on, else the local default. */
  serversFor(session: StoredSession | undefined): string[] {
    if (this.settings.explicitServers !== undefined) return this.settings.explicitServers;
    if (session !== undefined && session.servers.length > 0) return session.servers;
    return [...DEFAULT_SERVERS];
  }

  /** --ca-cert or --insecure (or their twins), else what the session used, else TLS with the system's roots. */
  tlsFor(session: StoredSession | undefined): ChatClientTls {
    if (this.settings.explicitTls !== undefined) return this.settings.explicitTls;
    if (session?.insecure === true) return 'insecure';
    if (session?.caCertPath !== undefined) return { caCertPath: session.caCertPath };
    return {};
  }

  /**
   * A client for `session` (or for no session) on `servers`, with the TLS settings of `tlsFrom` (the
   * session itself unless told), closed when the command ends.
   */
  client(
    session: StoredSession | undefined,
    servers: string[] = this.serversFor(session),
    tlsFrom: StoredSession | undefined = session,
  ): ChatClient {
    const tls = this.tlsFor(tlsFrom);
    if (tls === 'insecure' && !this.warnedAboutPlaintext) {
      this.warnedAboutPlaintext = true;
      this.output.notice('replichat: warning: --insecure: passwords and messages travel in plaintext');
    }
    const client = new ChatClient({
      servers,
      tls,
      ...(session === undefined ? {} : { sessionToken: session.sessionToken }),
    });
    this.clients.push(client);
    return client;
  }

  /**
   * Stores the session a login opened as a profile, made current: the one --profile names, else one named
   * after the user (in lower case, so that `login Bob` and `login bob` share it). It keeps the servers in
   * the order that found the leader (only configured ones, never an address a hint named) and the TLS
   * settings the login used.
   */
  async saveSession(typedUsername: string, login: LoginResult, client: ChatClient, previous?: StoredSession): Promise<SavedSession> {
    const username = login.username === '' ? typedUsername : login.username;
    const tls = this.tlsFor(previous);
    const session: StoredSession = {
      username,
      sessionToken: login.sessionToken,
      expiresAtMs: login.expiresAtMs,
      servers: client.preferredServers(),
      ...(tls === 'insecure' ? { insecure: true } : tls.caCertPath === undefined ? {} : { caCertPath: tls.caCertPath }),
    };
    const profile = this.settings.profile ?? usernameKey(username);
    const previousProfile = await writeSession(this.settings.sessionFilePath, profile, session);
    return { session, profile, previousProfile: previousProfile === profile ? undefined : previousProfile };
  }

  /** Removes the chosen profile. */
  async forgetSession(): Promise<void> {
    await removeSession(this.settings.sessionFilePath, this.settings.profile);
  }

  /** The terminal for prompts of a one-shot command, on stderr so that stdout carries only the result. */
  terminal(): TerminalInput {
    this.terminalInput ??= new TerminalInput(process.stdin, process.stderr);
    return this.terminalInput;
  }

  close(): void {
    for (const client of this.clients) client.close();
    this.terminalInput?.close();
  }
}

/** The context of a command, from its own options and its ancestors' global ones. */
export function contextOf(command: Command, environment: Environment = process.env): CliContext {
  return new CliContext(resolveSettings(command.optsWithGlobals<GlobalOptionValues>(), environment), environment);
}

/** Runs a command's body with a context, and closes the context afterwards. */
export async function runCommand(command: Command, body: (context: CliContext) => Promise<void>): Promise<void> {
  const context = contextOf(command);
  try {
    await body(context);
  } finally {
    context.close();
  }
}
