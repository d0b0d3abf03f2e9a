/**
 * The commands about accounts and sessions: register, login, logout, whoami and delete-account. A
 * successful register or login stores the session file; logout and delete-account remove it.
 */
import { type Command, Option } from 'commander';
import * as grpc from '@grpc/grpc-js';
import { ChatClientError } from './chat-client-error.js';
import { CliError, UsageError } from './cli-error.js';
import { type CliContext, runCommand } from './cli-context.js';
import { countOf, formatTimestamp } from './output.js';
import { obtainPassword, promptEnded } from './password-input.js';

interface PasswordOptions {
  readonly passwordStdin?: boolean;
}

const PASSWORD_SOURCES_HELP =
  'The password is read from the first line of stdin with --password-stdin, else from REPLICHAT_PASSWORD, ' +
  'else asked on the terminal without echo.';

function passwordStdinOption(): Option {
  return new Option('--password-stdin', 'read the password from the first line of stdin');
}

function loginSummary(username: string, unreadCount: number): string {
  return `Logged in as ${username}. ${countOf(unreadCount, 'unread message')}.`;
}

async function logIn(context: CliContext, username: string, password: string, createFirst: boolean): Promise<void> {
  // A new session replaces the stored one, but the servers it was opened on are still the cluster's.
  const client = context.client(undefined, context.serversFor(await context.optionalSession()));
  if (createFirst) await client.createAccount(username, password);
  const login = await client.login(username, password);
  await context.saveSession(username, login, client);
  const summary = loginSummary(username, login.unreadCount);
  context.output.result(
    { username, unreadCount: login.unreadCount, expiresAtMs: login.expiresAtMs },
    createFirst ? [`Created the account ${username}.`, summary] : summary,
  );
}

export function addAccountCommands(program: Command): void {
  program
    .command('register')
    .description('create an account, then log in to it')
    .argument('<username>', '1 to 32 letters, digits, _ . or -, starting with a letter or digit')
    .addOption(passwordStdinOption())
    .addHelpText('after', `\n${PASSWORD_SOURCES_HELP} On a terminal the new password is asked twice.`)
    .action(async (username: string, options: PasswordOptions, command: Command) => {
      await runCommand(command, async (context) => {
        const password = await obtainPassword(
          { fromStdin: options.passwordStdin === true, environment: context.environment, isNew: true, prompt: `New password for ${username}: ` },
          () => context.terminal(),
        );
        await logIn(context, username, password, true);
      });
    });

  program
    .command('login')
    .description('open a session and store it in the session file')
    .argument('<username>')
    .addOption(passwordStdinOption())
    .addHelpText('after', `\n${PASSWORD_SOURCES_HELP}\nWith --json: {"username", "unreadCount", "expiresAtMs"}.`)
    .action(async (username: string, options: PasswordOptions, command: Command) => {
      await runCommand(command, async (context) => {
        const password = await obtainPassword(
          { fromStdin: options.passwordStdin === true, environment: context.environment, isNew: false, prompt: `Password for ${username}: ` },
          () => context.terminal(),
        );
        await logIn(context, username, password, false);
      });
    });

  program
    .command('logout')
    .description('end the session and remove the session file')
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        try {
          await context.client(session).logout();
        } catch (error) {
          // A session the server no longer knows is as ended as a logout would make it; anything else
          // (an unreachable cluster) leaves the session open, so the file stays for another try.
          if (!(error instanceof ChatClientError && error.code === grpc.status.UNAUTHENTICATED)) throw error;
        }
        await context.forgetSession();
        context.output.result({ username: session.username, loggedOut: true }, `Logged out of ${session.username}.`);
      });
    });

  program
    .command('whoami')
    .description('show who is logged in, from the session file (asks no server)')
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        const expired = session.expiresAtMs <= Date.now();
        context.output.result(
          { username: session.username, expiresAtMs: session.expiresAtMs, expired, servers: session.servers },
          [
            `Logged in as ${session.username}.`,
            expired
              ? `The session expired at ${formatTimestamp(session.expiresAtMs)}; log in again.`
              : `The session expires at ${formatTimestamp(session.expiresAtMs)}.`,
            `Servers: ${session.servers.join(', ')}`,
          ],
        );
      });
    });

  program
    .command('delete-account')
    .description('delete the logged-in account, its sessions and every message it sent or received')
    .option('--yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .addOption(passwordStdinOption())
    .addHelpText('after', `\nThe password is asked again. ${PASSWORD_SOURCES_HELP}`)
    .action(async (options: PasswordOptions & { readonly yes?: boolean }, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        if (options.yes !== true) {
          if (process.stdin.isTTY !== true) {
            throw new UsageError('delete-account asks for confirmation on a terminal; pass --yes to confirm otherwise');
          }
          const terminal = context.terminal();
          const answer = await terminal.ask(
            `Delete the account ${session.username} and every message it sent or received? ` +
              'Type the username to confirm: ',
          );
          if (answer === undefined) throw promptEnded(terminal);
          if (answer.trim() !== session.username) {
            throw new CliError('not confirmed; nothing was deleted', 'NOT_CONFIRMED');
          }
        }
        const password = await obtainPassword(
          { fromStdin: options.passwordStdin === true, environment: context.environment, isNew: false, prompt: `Password for ${session.username}: ` },
          () => context.terminal(),
        );
        await context.client(session).deleteAccount(password);
        await context.forgetSession();
        context.output.result(
          { username: session.username, deleted: true },
          `Deleted the account ${session.username} and its messages.`,
        );
      });
    });
}
