/**
 * `replichat chat`: the interactive client. It resumes the stored session of the current profile when the
 * server still accepts it; otherwise it asks for a username, for the password of an existing account or a
 * new password (twice) for a new one, and logs in. It then reads commands at a `name> ` prompt (Node's
 * readline: line editing, history) while a subscription prints incoming messages as they arrive, the
 * unread ones first. An incoming message must not destroy the line being typed, however many terminal
 * rows that line spans: the whole input (prompt and every wrapped row) is erased, the message printed, and
 * the input drawn again below it with the cursor where it was, so that readline's idea of the screen stays
 * true. Each message is acknowledged once it has been shown, so a message never counts as delivered
 * unseen.
 */
import * as grpc from '@grpc/grpc-js';
import type { Interface } from 'node:readline';
import { clearScreenDown, cursorTo, moveCursor } from 'node:readline';
import { validateUsername } from '../core/validation.js';
import type { ChatClient, ChatMessage, Subscription } from './chat-client.js';
import { ChatClientError } from './chat-client-error.js';
import { CliError } from './cli-error.js';
import type { CliContext } from './cli-context.js';
import type { StoredSession } from './session-file.js';
import { nextHistoryPageCommand } from './message-commands.js';
import { countOf, describeError, escapeForTerminal, formatMessage } from './output.js';
import { askPasswordOnTerminal, promptEnded } from './password-input.js';
import { TerminalInput } from './terminal-input.js';

/** A login or a new password is given up after this many rejected entries. */
const PASSWORD_ATTEMPTS_MAX = 3;
const HISTORY_PAGE_SIZE = 20;
const USERS_PAGE_SIZE = 100;
const COMMAND_HISTORY_SIZE = 100;

const HELP_LINES = [
  'Commands:',
  '  @user text  or  /send <user> <text>   send a message',
  '  /read [n]                             read unread messages (oldest first)',
  '  /history [user]                       recent messages, all or with one user',
  '  /users [pattern]                      list usernames (* and ? are wildcards)',
  '  /delete <id...>                       delete messages by id',
  '  /logout                               end the session and quit',
  '  /delete-account                       delete this account and its messages, then quit',
  '  /help                                 this list',
  '  /quit                                 quit (the session stays open for other commands)',
];

/** What a command asks of the loop when it is done. */
type Next = 'continue' | 'quit';

class InteractiveChat {
  private username = '';
  private subscription: Subscription | undefined;
  /** Messages that arrived while a password was being typed, shown once it is entered. */
  private heldLines: string[] | undefined;
  /** Set by /logout and /delete-account, whose success ends the subscription on purpose. */
  private leaving = false;

  constructor(
    private readonly context: CliContext,
    private readonly client: ChatClient,
    private readonly terminal: TerminalInput,
    /** The current profile's session, tried before asking for a password. */
    private readonly storedSession: StoredSession | undefined,
  ) {}

  async run(): Promise<void> {
    if (!(await this.resumeSession()) && !(await this.logIn())) return;
    this.subscription = this.client.subscribe(
      {
        // Every undelivered message comes first: the unread ones are shown at login, not left for /read.
        includeQueued: true,
        // Shown once already; only its acknowledgement is repeated.
        onRepeat: (message) => {
          if (this.unacknowledged.has(message.id)) this.acknowledge(message);
        },
        onConnectionChange: (change, error) => {
          if (this.leaving) return;
          this.showAsync(
            change === 'lost'
              ? `Live messages interrupted (${error === undefined ? 'connection lost' : describeError(error).line}); ` +
                  'reconnecting in the background. Messages sent meanwhile wait on the server.'
              : 'Live messages are back.',
          );
        },
      },
      (message) => this.showIncoming(message),
      (error) => {
        if (error !== undefined && !this.leaving) this.showAsync(`Live messages stopped: ${describeError(error).line}.`);
      },
    );
    await this.commandLoop();
  }

  /**
   * Uses the stored session if the server still accepts it; resolves false (and says why when it matters)
   * when there is none or it has ended.
   */
  private async resumeSession(): Promise<boolean> {
    const session = this.storedSession;
    if (session === undefined) return false;
    if (session.expiresAtMs <= Date.now()) {
      this.say(`The session of ${session.username} has expired; log in again.`);
      return false;
    }
    this.client.sessionToken = session.sessionToken;
    try {
      // The cheapest call that needs a session.
      await this.client.listAccounts({ pattern: session.username, pageSize: 1 });
    } catch (error) {
      if (!(error instanceof ChatClientError && error.code === grpc.status.UNAUTHENTICATED)) throw error;
      this.client.sessionToken = undefined;
      this.say(`The session of ${session.username} has ended; log in again.`);
      return false;
    }
    this.username = session.username;
    this.say(`Logged in as ${session.username} (the stored session; /logout ends it). /help lists the commands.`);
    return true;
  }

  // -----------------------------------------------------------------------------------------------------
  // Logging in.

  private say(text: string): void {
    process.stdout.write(`${text}\n`);
  }

  private async askUsername(): Promise<string> {
    for (;;) {
      const answer = await this.terminal.ask('Username: ');
      if (answer === undefined) throw promptEnded(this.terminal);
      const username = answer.trim();
      if (username === '') continue;
      try {
        return validateUsername(username);
      } catch (error) {
        this.say((error as Error).message);
      }
    }
  }

  /** Logs in, creating the account first if it is new; resolves false when the user gave up. */
  private async logIn(): Promise<boolean> {
    const username = await this.askUsername();
    let password: string | undefined;
    if (await this.client.accountExists(username)) {
      for (let attempt = 1; attempt <= PASSWORD_ATTEMPTS_MAX; attempt += 1) {
        password = await this.terminal.askHidden(`Password for ${username}: `);
        if (password === undefined) throw promptEnded(this.terminal);
        try {
          return await this.openSession(username, password);
        } catch (error) {
          if (!(error instanceof ChatClientError && error.code === grpc.status.UNAUTHENTICATED)) throw error;
          this.say('Wrong password.');
        }
      }
      throw new CliError(`no correct password after ${PASSWORD_ATTEMPTS_MAX} attempts`, 'UNAUTHENTICATED');
    }
    this.say(`There is no account named ${username} yet; choose a password to create it.`);
    for (let attempt = 1; attempt <= PASSWORD_ATTEMPTS_MAX && password === undefined; attempt += 1) {
      password = await askPasswordOnTerminal(this.terminal, 'New password: ', true, (text) => this.say(text));
    }
    if (password === undefined) throw new CliError(`no acceptable password after ${PASSWORD_ATTEMPTS_MAX} attempts`, 'NO_PASSWORD');
    await this.client.createAccount(username, password);
    this.say(`Created the account ${username}.`);
    return this.openSession(username, password);
  }

  private async openSession(username: string, password: string): Promise<boolean> {
    const login = await this.client.login(username, password);
    // The session is stored like `login` stores it, so that one-shot commands work alongside the chat.
    const saved = await this.context.saveSession(username, login, this.client, this.storedSession);
    this.username = saved.session.username;
    this.say(
      `Logged in as ${this.username}. ${countOf(login.unreadCount, 'unread message')}` +
        `${login.unreadCount > 0 ? ', shown below' : ''}. /help lists the commands.`,
    );
    return true;
  }

  // -----------------------------------------------------------------------------------------------------
  // Showing incoming messages.

  private showIncoming(message: ChatMessage): void {
    this.showAsync(formatMessage(message));
    this.acknowledge(message);
  }

  /** Messages shown whose acknowledgement failed; the server sends them again after a reconnect. */
  private readonly unacknowledged = new Set<string>();

  private acknowledge(message: ChatMessage): void {
    this.client.acknowledgeMessages([message.id]).then(
      () => this.unacknowledged.delete(message.id),
      (error: unknown) => {
        // Unacknowledged, the message stays undelivered and comes again with the next subscription.
        this.unacknowledged.add(message.id);
        this.showAsync(`Could not acknowledge message ${message.id}: ${describeError(error).line}`);
      },
    );
  }

  /** Prints a line that arrived on its own, without breaking the line being typed. */
  private showAsync(line: string): void {
    if (this.heldLines !== undefined) {
      this.heldLines.push(line);
      return;
    }
    if (!this.terminal.isTerminal || !this.terminal.asking) {
      // Off a terminal there is no input on the screen; while a command runs, no prompt is shown.
      process.stdout.write(`${line}\n`);
      return;
    }
    printAboveInput(this.terminal.readline, process.stdout, line);
  }

  /** Asks for a password while holding incoming messages back, so that none lands in the hidden prompt. */
  private async askHiddenHoldingMessages(prompt: string): Promise<string | undefined> {
    this.heldLines = [];
    try {
      return await this.terminal.askHidden(prompt);
    } finally {
      const held = this.heldLines;
      this.heldLines = undefined;
      for (const line of held) process.stdout.write(`${line}\n`);
    }
  }

  // -----------------------------------------------------------------------------------------------------
  // Commands.

  private async commandLoop(): Promise<void> {
    const prompt = `${this.username}> `;
    // Commands run one after another; lines typed meanwhile wait in the terminal input for their turn.
    for (;;) {
      const line = await this.terminal.ask(prompt);
      if (line === undefined) break;
      let next: Next = 'continue';
      try {
        next = await this.handle(line.trim());
      } catch (error) {
        this.say(describeError(error).line);
      }
      if (next === 'quit') break;
    }
    this.leaving = true;
    this.subscription?.close();
  }

  private async handle(line: string): Promise<Next> {
    if (line === '') return 'continue';
    if (line.startsWith('@')) {
      const match = /^@(\S+)\s+(.+)$/s.exec(line);
      if (match === null) {
        this.say('Usage: @user text');
        return 'continue';
      }
      await this.send(match[1]!, match[2]!);
      return 'continue';
    }
    if (!line.startsWith('/')) {
      this.say('To send a message, type @user text (or /send user text); /help lists the commands.');
      return 'continue';
    }
    const [name = '', ...words] = line.split(/\s+/);
    const rest = line.slice(name.length).trim();
    switch (name) {
      case '/send': {
        const match = /^(\S+)\s+(.+)$/s.exec(rest);
        if (match === null) this.say('Usage: /send <user> <text>');
        else await this.send(match[1]!, match[2]!);
        return 'continue';
      }
      case '/read':
        await this.read(words[0]);
        return 'continue';
      case '/history':
        await this.history(words[0]);
        return 'continue';
      case '/users':
        await this.users(words[0]);
        return 'continue';
      case '/delete':
        await this.deleteMessages(words);
        return 'continue';
      case '/logout':
        return this.logOut();
      case '/delete-account':
        return this.deleteAccount();
      case '/help':
        for (const helpLine of HELP_LINES) this.say(helpLine);
        return 'continue';
      case '/quit':
      case '/exit':
        return 'quit';
      default:
        this.say(`Unknown command ${name}; /help lists the commands.`);
        return 'continue';
    }
  }

  private async send(recipient: string, body: string): Promise<void> {
    const message = await this.client.sendMessage(recipient, body);
    this.say(`Sent to ${escapeForTerminal(recipient)} (${message.id}).`);
  }

  private async read(countText: string | undefined): Promise<void> {
    const count = countText === undefined ? 0 : Number(countText);
    if (!Number.isSafeInteger(count) || count < 0) {
      this.say('Usage: /read [n], where n is a whole number');
      return;
    }
    const result = await this.client.readMessages(count);
    if (result.messages.length === 0) this.say('No new messages.');
    for (const message of result.messages) this.say(formatMessage(message));
    this.say(`${countOf(result.remainingUnreadCount, 'unread message')} left.`);
  }

  private async history(withUsername: string | undefined): Promise<void> {
    const page = await this.client.listHistory({
      pageSize: HISTORY_PAGE_SIZE,
      ...(withUsername === undefined ? {} : { withUsername }),
    });
    if (page.messages.length === 0) this.say('No messages.');
    // The server pages newest first; a conversation reads oldest first.
    for (const message of [...page.messages].reverse()) this.say(formatMessage(message, { showRecipient: true }));
    if (page.nextPageToken !== '') {
      const next = nextHistoryPageCommand({ ...(withUsername === undefined ? {} : { with: withUsername }), pageSize: HISTORY_PAGE_SIZE }, page.nextPageToken);
      this.say(`(older messages: ${next})`);
    }
  }

  private async users(pattern: string | undefined): Promise<void> {
    const page = await this.client.listAccounts({ pattern: pattern ?? '', pageSize: USERS_PAGE_SIZE });
    this.say(page.usernames.length === 0 ? 'No matching users.' : page.usernames.join('  '));
    if (page.nextPageToken !== '') this.say('(more: narrow the pattern, or use `replichat users --all`)');
  }

  private async deleteMessages(messageIds: string[]): Promise<void> {
    if (messageIds.length === 0) {
      this.say('Usage: /delete <id...>');
      return;
    }
    const deletedCount = await this.client.deleteMessages(messageIds);
    this.say(`Deleted ${countOf(deletedCount, 'message')}.`);
  }

  private async logOut(): Promise<Next> {
    this.leaving = true;
    this.subscription?.close();
    await this.client.logout();
    await this.context.forgetSession();
    this.say(`Logged out of ${this.username}.`);
    return 'quit';
  }

  private async deleteAccount(): Promise<Next> {
    const answer = await this.terminal.ask(
      `Delete the account ${this.username} and every message it sent or received? Type the username to confirm: `,
    );
    if (answer === undefined) return 'quit';
    if (answer.trim() !== this.username) {
      this.say('Not confirmed; nothing was deleted.');
      return 'continue';
    }
    const password = await this.askHiddenHoldingMessages(`Password for ${this.username}: `);
    if (password === undefined) return 'quit';
    this.leaving = true;
    try {
      await this.client.deleteAccount(password);
    } catch (error) {
      this.leaving = false;
      throw error;
    }
    this.subscription?.close();
    await this.context.forgetSession();
    this.say(`Deleted the account ${this.username} and its messages.`);
    return 'quit';
  }
}

/**
 * Prints `text` as whole lines above the input that readline shows, and draws the input again.
 *
 * readline remembers on which row of the wrapped input its cursor is, and moves up that many rows before
 * every redraw. So the input is erased from its first row (the cursor's row, minus the rows above it),
 * the text printed there, and the prompt and line written again below it; the cursor is then put back on
 * the same row and column of the input as before, where readline believes it is.
 */
export function printAboveInput(readline: Interface, output: NodeJS.WriteStream, text: string): void {
  const cursor = readline.getCursorPos();
  moveCursor(output, 0, -cursor.rows);
  cursorTo(output, 0);
  clearScreenDown(output);
  output.write(`${text}\n`);
  const input = readline.getPrompt() + readline.line;
  output.write(input);
  // The position after the last character, measured by readline itself so that wide characters count right.
  const savedCursor = readline.cursor;
  (readline as { cursor: number }).cursor = readline.line.length;
  const end = readline.getCursorPos();
  (readline as { cursor: number }).cursor = savedCursor;
  // A terminal keeps the cursor on the last column after filling a row; a space moves it to the next row,
  // where readline's arithmetic expects it (readline does the same).
  if (end.cols === 0 && input.length > 0) output.write(' ');
  cursorTo(output, cursor.cols);
  moveCursor(output, 0, cursor.rows - end.rows);
}

/** Runs the interactive chat until /quit, /logout, Ctrl-C or the end of the input. */
export async function runInteractiveChat(context: CliContext): Promise<void> {
  const terminal = new TerminalInput(process.stdin, process.stdout, { historySize: COMMAND_HISTORY_SIZE });
  try {
    const session = await context.optionalSession();
    const client = context.client(undefined, context.serversFor(session), session);
    await new InteractiveChat(context, client, terminal, session).run();
  } finally {
    terminal.close();
  }
}
