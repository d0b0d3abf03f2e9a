/**
 * `replichat chat`, also what `replichat` alone runs on a terminal: the interactive client.
 */
import type { Command } from 'commander';
import { UsageError } from './cli-error.js';
import { type CliContext, runCommand } from './cli-context.js';
import { runInteractiveChat } from './interactive-chat.js';

export async function runChatCommand(context: CliContext): Promise<void> {
  if (context.settings.json) throw new UsageError('chat is for people; --json applies to the other commands');
  await runInteractiveChat(context);
}

export function addChatCommand(program: Command): void {
  program
    .command('chat')
    .description('interactive mode: resume the stored session or log in (or sign up), then send and receive live')
    .addHelpText(
      'after',
      '\nThe current profile\'s session is used when the server still accepts it; unread messages are shown at\n' +
        'login. At the prompt: @user text sends a message; /help lists the commands (/read, /history, /users,\n' +
        '/delete, /logout, /delete-account, /quit). Incoming messages appear above the line being typed.',
    )
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, runChatCommand);
    });
}
