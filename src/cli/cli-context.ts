/**
 * What a client command runs with: the resolved global options, the output, the stored session, and the
 * ChatClients and terminal it opened. `runCommand` closes them all when the command ends, however it ends,
 * because an open gRPC channel or terminal would keep a one-shot command's process alive.
 */
import type { Command } from 'commander';
import { ChatClient } from './chat-client.js';
import type { LoginResult } from './chat-types.js';
import { CliError } from './cli-error.js';
import { type CliSettings, DEFAULT_SERVERS, type GlobalOptionValues, resolveSettings } from './global-options.js';
import { Output } from './output.js';
import { readSession, removeSession, type StoredSession, writeSession } from './session-file.js';
import { TerminalInput } from './terminal-input.js';

export type Environment = Readonly<Record<string, string | undefined>>;

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

  /** The session of the logged-in user; fails with NOT_LOGGED_IN when there is none. */
  async requireSession(): Promise<StoredSession> {
    const session = await readSession(this.settings.sessionFilePath);
    if (session === undefined) {
      throw new CliError('not logged in: run `replichat login <username>` first', 'NOT_LOGGED_IN');
    }
    return session;
  }

  /** The stored session if there is a usable one; a damaged file counts as none, since it is about to be replaced. */
  async optionalSession(): Promise<StoredSession | undefined> {
    try {
      return await readSession(this.settings.sessionFilePath);
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

  /** A client for `session` (or for no session) on `servers`, closed when the command ends. */
  client(session: StoredSession | undefined, servers: string[] = this.serversFor(session)): ChatClient {
    if (this.settings.tls === 'insecure' && !this.warnedAboutPlaintext) {
      this.warnedAboutPlaintext = true;
      this.output.notice('replichat: warning: --insecure: passwords and messages travel in plaintext');
    }
    const client = new ChatClient({
      servers,
      tls: this.settings.tls,
      ...(session === undefined ? {} : { sessionToken: session.sessionToken }),
    });
    this.clients.push(client);
    return client;
  }

  /** Stores the session a login opened, with the servers in the order that found the leader. */
  async saveSession(username: string, login: LoginResult, client: ChatClient): Promise<StoredSession> {
    const session: StoredSession = {
      username,
      sessionToken: login.sessionToken,
      expiresAtMs: login.expiresAtMs,
      servers: client.preferredServers(),
    };
    await writeSession(this.settings.sessionFilePath, session);
    return session;
  }

  async forgetSession(): Promise<void> {
    await removeSession(this.settings.sessionFilePath);
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
