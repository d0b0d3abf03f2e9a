/**
 * `member remove <ordinal>`: the operator's command to take a replica out of the cluster (a scale-down or a
 * dead machine). It needs the admin token the servers were started with (--admin-token), given here as
 * --admin-token or REPLICHAT_ADMIN_TOKEN, and goes to the leader like any write.
 */
import { type Command, Option } from 'commander';
import { runCommand } from './cli-context.js';
import { CliError } from './cli-error.js';

export function addMemberCommand(program: Command): void {
  const member = program.command('member').description('operator commands on the cluster membership');
  member
    .command('remove')
    .description('remove a replica from the cluster (it stops serving and says why)')
    .argument('<ordinal>', 'the ordinal of the replica to remove (chat-2 is 2)')
    .addOption(new Option('--admin-token <token>', 'the admin token the servers were started with').env('REPLICHAT_ADMIN_TOKEN'))
    .addHelpText(
      'after',
      '\nA member other than the leader leaves once its in-sync lease has run out (about a second), so that it can\n' +
        'never be elected with writes it missed. Removing the leader hands leadership to the most up-to-date member.\n' +
        'To add the replica back later, wipe its data directory and start it: it joins by snapshot.',
    )
    .action(async (ordinalText: string, options: { adminToken?: string }, command: Command) => {
      await runCommand(command, async (context) => {
        if (!/^\d+$/.test(ordinalText)) throw new CliError(`the ordinal must be a number, not ${JSON.stringify(ordinalText)}`, 'USAGE');
        if (options.adminToken === undefined || options.adminToken === '') {
          throw new CliError('give the admin token with --admin-token or REPLICHAT_ADMIN_TOKEN', 'USAGE');
        }
        const ordinal = Number(ordinalText);
        const client = context.client({
          username: 'operator',
          sessionToken: options.adminToken,
          expiresAtMs: Number.MAX_SAFE_INTEGER,
          servers: context.serversFor(undefined),
        });
        await client.removeMember(ordinal);
        context.output.result({ removed: ordinal }, [`Replica ${ordinal} is being removed; \`replichat status\` shows when it is gone.`]);
      });
    });
}
