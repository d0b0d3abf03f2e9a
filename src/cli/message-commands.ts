/**
 * The one-shot commands about messages: send, read, history and delete. Each needs a session.
 */
import type { Command } from 'commander';
import { UsageError } from './cli-error.js';
import { runCommand } from './cli-context.js';
import { positiveInteger } from './option-parsers.js';
import { countOf, formatMessage } from './output.js';
import { readAll } from './terminal-input.js';

/** The body of `send`: the words joined by spaces, or all of stdin for a single `-`. */
async function messageBody(words: readonly string[]): Promise<string> {
  if (words.length === 1 && words[0] === '-') {
    if (process.stdin.isTTY === true) throw new UsageError('`-` reads the message from stdin, which is a terminal here');
    // The newline that ends the last line of a file or an `echo` is not part of the message.
    return (await readAll(process.stdin)).replace(/\r?\n$/, '');
  }
  return words.join(' ');
}

/** The command that shows the next page: the same filter and page size, and the new token. */
export function nextHistoryPageCommand(options: { readonly with?: string; readonly pageSize?: number }, pageToken: string): string {
  return [
    'replichat history',
    ...(options.with === undefined ? [] : [`--with ${options.with}`]),
    ...(options.pageSize === undefined ? [] : [`--page-size ${options.pageSize}`]),
    `--page-token ${pageToken}`,
  ].join(' ');
}

export function addMessageCommands(program: Command): void {
  program
    .command('send')
    .description('send a message; prints its id')
    .argument('<recipient>', 'the username to send to')
    .argument('<message...>', 'the message, words joined by spaces; a single - reads it from stdin')
    .addHelpText('after', '\nWith --json: the message as {"id", "sender", "recipient", "body", "sentAtMs", ...}.')
    .action(async (recipient: string, words: string[], _options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        const body = await messageBody(words);
        if (body === '') throw new UsageError('the message is empty');
        const message = await context.client(session).sendMessage(recipient, body);
        context.output.result(message, message.id);
      });
    });

  program
    .command('read')
    .description('read unread messages, oldest first; they then count as delivered')
    .option('-n, --count <n>', "how many to read at most (default: the server's page size)", positiveInteger)
    .addHelpText('after', '\nWith --json: {"messages": [...], "remainingUnreadCount"}.')
    .action(async (options: { readonly count?: number }, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        const result = await context.client(session).readMessages(options.count ?? 0);
        context.output.result(result, () => [
          ...(result.messages.length === 0 ? ['No new messages.'] : result.messages.map((message) => formatMessage(message))),
          `${countOf(result.remainingUnreadCount, 'unread message')} left.`,
        ]);
      });
    });

  program
    .command('history')
    .description('page through the messages you sent and the delivered messages you received')
    .option('--with <username>', 'only the conversation with this user')
    .option('--page-size <n>', "messages per page (default: the server's)", positiveInteger)
    .option('--page-token <token>', 'the page token printed after the previous page')
    .addHelpText(
      'after',
      '\nNewest first, in text and with --json: {"messages": [...], "nextPageToken"} (empty on the last page).\n' +
        'The line after a page that is not the last is the command for the next (older) page.',
    )
    .action(
      async (
        options: { readonly with?: string; readonly pageSize?: number; readonly pageToken?: string },
        command: Command,
      ) => {
        await runCommand(command, async (context) => {
          const session = await context.requireSession();
          const page = await context.client(session).listHistory({
            ...(options.with === undefined ? {} : { withUsername: options.with }),
            ...(options.pageSize === undefined ? {} : { pageSize: options.pageSize }),
            ...(options.pageToken === undefined ? {} : { pageToken: options.pageToken }),
          });
          context.output.result(page, () =>
            page.messages.length === 0
              ? ['No messages.']
              : page.messages.map((message) => formatMessage(message, { showRecipient: true })),
          );
          if (!context.settings.json && page.nextPageToken !== '') {
            context.output.notice(`Older messages: ${nextHistoryPageCommand(options, page.nextPageToken)}`);
          }
        });
      },
    );

  program
    .command('delete')
    .description('delete messages you sent or received, for both parties')
    .argument('<messageId...>', 'ids as printed by send, read or history')
    .addHelpText('after', '\nWith --json: {"deletedCount"}.')
    .action(async (messageIds: string[], _options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        const deletedCount = await context.client(session).deleteMessages(messageIds);
        context.output.result({ deletedCount }, `Deleted ${countOf(deletedCount, 'message')}.`);
      });
    });
}
