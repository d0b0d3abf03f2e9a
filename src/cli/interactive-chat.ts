/**
 * `replichat chat`: the interactive client. It asks for a username, asks for the password of an existing
 * account or a new password (twice) for a new one, logs in, and then reads commands at a `name> ` prompt
 * while a subscription prints incoming messages as they arrive. An incoming message must not break the
 * line being typed, so it clears that line, prints the message, and redraws the prompt with the partial
 * input; each message is acknowledged once it has been shown.
 */
import * as grpc from '@grpc/grpc-js';
import { clearLine, cursorTo } from 'node:readline';
import { validateUsername } from '../core/validation.js';
import type { ChatClient, ChatMessage, Subscription } from './chat-client.js';
import { ChatClientError } from './chat-client-error.js';
import { CliError } from './cli-error.js';
import type { CliContext } from './cli-context.js';
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
  ) {}

  async run(): Promise<void> {
    if (!(await this.logIn())) return;
    this.subscription = this.client.subscribe(
      { includeQueued: false },
      (message) => this.showIncoming(message),
      (error) => {
        if (error !== undefined && !this.leaving) this.showAsync(`Live messages stopped: ${describeError(error).line}. /read still works.`);
      },
    );
    await this.commandLoop();
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
    this.username = username;
    // The session is stored like `login` stores it, so that one-shot commands work alongside the chat.
    await this.context.saveSession(username, login, this.client);
    this.say(`Logged in as ${username}. ${countOf(login.unreadCount, 'unread message')}.`);
    this.say(login.unreadCount > 0 ? '/read shows them; /help lists the commands.' : '/help lists the commands.');
    return true;
  }

  // -----------------------------------------------------------------------------------------------------
  // Showing incoming messages.

  private showIncoming(message: ChatMessage): void {
    this.showAsync(formatMessage(message));
    this.client.acknowledgeMessages([message.id]).catch((error: unknown) => {
      // Unacknowledged, the message stays undelivered and comes again with the next subscription.
      this.showAsync(`Could not acknowledge message ${message.id}: ${describeError(error).line}`);
    });
  }

  /** Prints a line that arrived on its own, without breaking the line being typed. */
  private showAsync(line: string): void {
    if (this.heldLines !== undefined) {
      this.heldLines.push(line);
      return;
    }
    if (this.terminal.isTerminal) {
      clearLine(process.stdout, 0);
      cursorTo(process.stdout, 0);
    }
    process.stdout.write(`${line}\n`);
    // Redraw the prompt with what was typed so far; a running command prompts when it is done. Off a
    // terminal nothing was erased, so there is nothing to redraw.
    if (this.terminal.isTerminal && this.terminal.asking) this.terminal.readline.prompt(true);
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
    if (page.nextPageToken !== '') this.say(`(older messages: replichat history --page-token ${page.nextPageToken})`);
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

/** Runs the interactive chat until /quit, /logout, Ctrl-C or the end of the input. */
export async function runInteractiveChat(context: CliContext): Promise<void> {
  const terminal = new TerminalInput(process.stdin, process.stdout, { historySize: COMMAND_HISTORY_SIZE });
  try {
    const client = context.client(undefined, context.serversFor(await context.optionalSession()));
    await new InteractiveChat(context, client, terminal).run();
  } finally {
    terminal.close();
  }
}
