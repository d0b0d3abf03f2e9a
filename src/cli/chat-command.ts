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
    .description('interactive mode: log in or sign up, then send and receive messages live')
    .addHelpText(
      'after',
      '\nAt the prompt: @user text sends a message; /help lists the commands (/read, /history, /users, ' +
        '/delete, /logout, /delete-account, /quit).',
    )
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, runChatCommand);
    });
}
