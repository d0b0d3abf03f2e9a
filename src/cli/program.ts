/**
 * The command line: global options with their environment twins, every subcommand, and what `replichat`
 * alone does. Commander reports usage errors; its exits are turned into exceptions (exitOverride) so that
 * main.ts decides the exit code and closes what is open.
 */
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { addAccountCommands } from './account-commands.js';
import { addBackupCommands } from './backup-commands.js';
import { addChatCommand, runChatCommand } from './chat-command.js';
import { runCommand } from './cli-context.js';
import { addListenCommand } from './listen-command.js';
import { addMemberCommand } from './member-command.js';
import { addRecoverCommand } from './recover-command.js';
import { addMessageCommands } from './message-commands.js';
import { addServerCommand } from './server-command.js';
import { addStatusCommand } from './status-command.js';
import { addUsersCommand } from './users-command.js';

const HELP_FOOTER = `
Every command has --help. Run \`replichat\` alone on a terminal for the interactive chat.

Output: results go to stdout (one JSON document with --json; \`listen --json\` prints one JSON object per
line). Prompts, warnings and errors go to stderr. A failure prints one line \`replichat: <reason>\` on
stderr, such as \`replichat: NOT_FOUND: no account named carol\`; with --json it also prints
{"error": {"code": "NOT_FOUND", "message": "..."}} on stdout (usage errors excepted).

Exit codes: 0 success, 1 failure, 2 usage error (a bad flag or argument), 130 interrupted (Ctrl-C at a
prompt); \`status\` also uses 3 (degraded) and 4 (no leader).

Sessions: each login is kept as a profile named after its user, with the servers, the CA and the token;
the last login is the current profile, and \`--profile NAME\` (REPLICHAT_PROFILE) picks another.
\`replichat profile list\` shows them.`;

/** The version in package.json, found relative to this module in src/ and in dist/ alike. */
export function cliVersion(): string {
  try {
    const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof packageJson.version === 'string' ? packageJson.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

export function buildProgram(): Command {
  const program = new Command('replichat');
  program
    .description('Client and server of replichat, a replicated chat service.')
    .usage('[options] [command]')
    // Set before the subcommands are added, so that they inherit both.
    .exitOverride()
    .version(`replichat ${cliVersion()} (Node.js ${process.version})`, '-V, --version', 'print the version and exit')
    .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'replichat: ')) })
    .addOption(
      new Option('--servers <list>', "comma-separated host:port list (default: the session's, else 127.0.0.1:50051)").env(
        'REPLICHAT_SERVERS',
      ),
    )
    .addOption(
      new Option('--ca-cert <file>', "PEM CA certificate to check the servers' TLS certificates (default: system roots)").env(
        'REPLICHAT_CA_CERT',
      ),
    )
    .option('--insecure', 'plaintext instead of TLS: passwords travel unencrypted (env: REPLICHAT_INSECURE=1)')
    .addOption(
      new Option('--session-file <file>', 'where the profiles are kept (default: $XDG_CONFIG_HOME/replichat/session.json)').env(
        'REPLICHAT_SESSION_FILE',
      ),
    )
    .addOption(
      new Option('--profile <name>', 'use this stored session instead of the current one (`replichat profile list`)').env(
        'REPLICHAT_PROFILE',
      ),
    )
    .option('--json', 'machine-readable output: one JSON document on stdout')
    .addHelpText('after', HELP_FOOTER);

  addServerCommand(program);
  addAccountCommands(program);
  addUsersCommand(program);
  addMessageCommands(program);
  addListenCommand(program);
  addChatCommand(program);
  addMemberCommand(program);
  addRecoverCommand(program);
  addStatusCommand(program);
  addBackupCommands(program);

  program
    // Commander adds `help <command>` by itself only to a program without an action of its own.
    .helpCommand(true)
    // Set after the subcommands, so that only `replichat` alone accepts a stray word (to name it below).
    .allowExcessArguments()
    .action(async (_options: unknown, command: Command) => {
      const [unknown] = command.args;
      if (unknown !== undefined) command.error(`error: unknown command '${unknown}'`, { exitCode: 2, code: 'commander.unknownCommand' });
      if (process.stdin.isTTY !== true || process.stdout.isTTY !== true) {
        // Without a terminal there is nobody to chat with; a script that forgot its command gets the usage.
        command.help({ error: true });
      }
      await runCommand(command, runChatCommand);
    });
  return program;
}
