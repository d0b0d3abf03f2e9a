/**
 * `member remove <ordinal>`: the operator's command to take a replica out of the cluster (a scale-down or a
 * dead machine). It needs the admin token the servers were started with (see admin-token.ts), and goes to
 * the leader like any write.
 */
import type { Command } from 'commander';
import { ADMIN_TOKEN_HELP, type AdminTokenOptions, adminTokenFileOption, operatorClient } from './admin-token.js';
import { runCommand } from './cli-context.js';
import { UsageError } from './cli-error.js';

export function addMemberCommand(program: Command): void {
  const member = program.command('member').description('operator commands on the cluster membership');
  member
    .command('remove')
    .description('remove a replica from the cluster (it stops serving and says why)')
    .argument('<ordinal>', 'the ordinal of the replica to remove (chat-2 is 2)')
    .addOption(adminTokenFileOption())
    .addHelpText(
      'after',
      `\n${ADMIN_TOKEN_HELP}\n\n` +
        'A member other than the leader leaves once its in-sync lease has run out (about a second), so that it can\n' +
        'never be elected with writes it missed. Removing the leader hands leadership to the most up-to-date member.\n' +
        'To add the replica back later, wipe its data directory and start it: it joins by snapshot.',
    )
    .action(async (ordinalText: string, options: AdminTokenOptions, command: Command) => {
      await runCommand(command, async (context) => {
        if (!/^\d+$/.test(ordinalText)) throw new UsageError(`the ordinal must be a number, not ${JSON.stringify(ordinalText)}`);
        const ordinal = Number(ordinalText);
        const client = await operatorClient(context, options);
        await client.removeMember(ordinal);
        context.output.result({ removed: ordinal }, [`Replica ${ordinal} is being removed; \`replichat status\` shows when it is gone.`]);
      });
    });
}
