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
import { readSessionStore, useSession } from './session-file.js';

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

/** `profile list` and `profile use`: the stored sessions, one per user, and which one is current. */
function addProfileCommands(program: Command): void {
  const profile = program
    .command('profile')
    .description('the stored sessions (one profile per user, like `gh auth` accounts) and which is current');
  profile
    .command('list')
    .description('list the profiles; * marks the current one')
    .addHelpText('after', '\nWith --json: {"current", "profiles": [{"name", "username", "servers", "expiresAtMs", "expired"}]}.')
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        const store = await readSessionStore(context.settings.sessionFilePath);
        const nowMs = Date.now();
        const profiles = Object.entries(store.profiles).map(([name, session]) => ({
          name,
          username: session.username,
          servers: session.servers,
          expiresAtMs: session.expiresAtMs,
          expired: session.expiresAtMs <= nowMs,
        }));
        context.output.result({ current: store.current ?? null, profiles }, () =>
          profiles.length === 0
            ? ['No profiles: `replichat login <username>` makes one.']
            : profiles.map(
                (entry) =>
                  `${entry.name === store.current ? '*' : ' '} ${entry.name}  ${entry.username} on ${entry.servers.join(',')}` +
                  (entry.expired ? '  (expired)' : ''),
              ),
        );
      });
    });
  profile
    .command('use')
    .description('make a profile the current one')
    .argument('<name>', 'a profile name from `replichat profile list`')
    .action(async (name: string, _options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        if (!(await useSession(context.settings.sessionFilePath, name))) {
          throw new CliError(`no profile named ${name}; \`replichat profile list\` lists them`, 'NOT_FOUND');
        }
        context.output.result({ current: name }, `Using the profile ${name}.`);
      });
    });
}

async function logIn(context: CliContext, username: string, password: string, createFirst: boolean): Promise<void> {
  // The servers and TLS settings of the profile in use are the cluster's, whoever logs in now.
  const previous = await context.optionalSession();
  const client = context.client(undefined, context.serversFor(previous), previous);
  if (createFirst) await client.createAccount(username, password);
  const login = await client.login(username, password);
  const saved = await context.saveSession(username, login, client, previous);
  const { username: registeredName } = saved.session;
  const summary = loginSummary(registeredName, login.unreadCount);
  context.output.result(
    { username: registeredName, profile: saved.profile, unreadCount: login.unreadCount, expiresAtMs: login.expiresAtMs },
    [
      ...(createFirst ? [`Created the account ${registeredName}.`] : []),
      login.unreadCount > 0 ? `${summary} \`replichat read\` shows them.` : summary,
    ],
  );
  if (saved.previousProfile !== undefined) {
    context.output.notice(
      `Switched from the profile ${saved.previousProfile}, which stays logged in: \`replichat profile use ${saved.previousProfile}\` switches back.`,
    );
  }
}

export function addAccountCommands(program: Command): void {
  addProfileCommands(program);
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
    .description('open a session and store it as the current profile (other users\' profiles stay)')
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
    .description('end the session and remove its profile')
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        const session = (await context.optionalSession()) ?? (await context.requireSession());
        try {
          // An expired session is over on the server already; only its profile is left to remove.
          if (session.expiresAtMs > Date.now()) await context.client(session).logout();
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
        // An expired session is still shown, with a word on it; only a missing one is an error.
        const session = (await context.optionalSession()) ?? (await context.requireSession());
        const expired = session.expiresAtMs <= Date.now();
        const tls = context.tlsFor(session);
        context.output.result(
          { username: session.username, expiresAtMs: session.expiresAtMs, expired, servers: session.servers, tls },
          [
            `Logged in as ${session.username}.`,
            expired
              ? `The session expired at ${formatTimestamp(session.expiresAtMs)}; log in again.`
              : `The session expires at ${formatTimestamp(session.expiresAtMs)}.`,
            `Servers: ${session.servers.join(', ')}`,
            tls === 'insecure'
              ? 'TLS: none (plaintext, --insecure)'
              : `TLS: checked against ${tls.caCertPath ?? "the system's CA certificates"}`,
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
