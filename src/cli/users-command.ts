/**
 * `users`: lists usernames matching a wildcard pattern, a page at a time or, with --all, every page.
 */
import type { Command } from 'commander';
import { runCommand } from './cli-context.js';
import { positiveInteger } from './option-parsers.js';

interface UsersOptions {
  readonly pageSize?: number;
  readonly pageToken?: string;
  readonly all?: boolean;
}

/** --all stops after this many pages, so that a server that never ends its pages cannot hang the CLI. */
const PAGES_MAX = 10_000;

export function addUsersCommand(program: Command): void {
  program
    .command('users')
    .description('list usernames matching a pattern, sorted')
    .argument('[pattern]', "wildcards: * any run, ? one character; quote it for the shell (default: '*')")
    .option('--page-size <n>', "usernames per page (default: the server's)", positiveInteger)
    .option('--page-token <token>', 'the page token printed after the previous page')
    .option('--all', 'follow the page tokens until the last page')
    .addHelpText('after', '\nWith --json: {"usernames": [...], "nextPageToken"} (empty on the last page).')
    .action(async (pattern: string | undefined, options: UsersOptions, command: Command) => {
      await runCommand(command, async (context) => {
        const client = context.client(await context.requireSession());
        const usernames: string[] = [];
        let pageToken = options.pageToken ?? '';
        for (let pages = 0; pages < PAGES_MAX; pages += 1) {
          const page = await client.listAccounts({
            pattern: pattern ?? '',
            ...(options.pageSize === undefined ? {} : { pageSize: options.pageSize }),
            pageToken,
          });
          usernames.push(...page.usernames);
          pageToken = page.nextPageToken;
          if (options.all !== true || pageToken === '') break;
        }
        context.output.result({ usernames, nextPageToken: pageToken }, usernames);
        if (!context.settings.json && pageToken !== '') {
          context.output.notice(`More: replichat users${pattern === undefined ? '' : ` '${pattern}'`} --page-token ${pageToken}`);
        }
      });
    });
}
