/**
 * The command line: global options with their environment twins, every subcommand, and what `replichat`
 * alone does. Commander reports usage errors; its exits are turned into exceptions (exitOverride) so that
 * main.ts decides the exit code and closes what is open.
 */
import { Command, Option } from 'commander';
import { addAccountCommands } from './account-commands.js';
import { addChatCommand, runChatCommand } from './chat-command.js';
import { runCommand } from './cli-context.js';
import { addListenCommand } from './listen-command.js';
import { addMemberCommand } from './member-command.js';
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

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted at a prompt.`;

export function buildProgram(): Command {
  const program = new Command('replichat');
  program
    .description('Client and server of replichat, a replicated chat service.')
    .usage('[options] [command]')
    // Set before the subcommands are added, so that they inherit both.
    .exitOverride()
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
      new Option('--session-file <file>', 'where the session is kept (default: $XDG_CONFIG_HOME/replichat/session.json)').env(
        'REPLICHAT_SESSION_FILE',
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
  addStatusCommand(program);

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
