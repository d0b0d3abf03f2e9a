/**
 * `recover --trust <ordinal>`: the operator's last resort (Kafka's unclean leader election), for when every
 * member of the recorded in-sync set is gone for good and the cluster therefore waits forever. The replica
 * named is made leader of the next epoch, alone in the in-sync set, whatever the configuration store says;
 * acknowledged writes it does not hold are lost. Before it acts, the command asks every reachable replica
 * for its status and prints who holds more than the trusted replica, so the operator sees what may be lost.
 */
import type { Command } from 'commander';
import { ADMIN_TOKEN_HELP, type AdminTokenOptions, adminTokenFileOption, operatorClient } from './admin-token.js';
import { runCommand } from './cli-context.js';
import type { ReplicaStatus } from './chat-types.js';
import { CliError, UsageError } from './cli-error.js';

interface RecoverOptions extends AdminTokenOptions {
  readonly trust: string;
  readonly yes?: boolean;
}

export function addRecoverCommand(program: Command): void {
  program
    .command('recover')
    .description('last resort: make one replica leader alone, when every in-sync replica is gone for good')
    .requiredOption('--trust <ordinal>', 'the ordinal of the replica whose data to keep (chat-1 is 1)')
    .option('--yes', 'act: without it the command only prints what may be lost')
    .addOption(adminTokenFileOption())
    .addHelpText(
      'after',
      `\n${ADMIN_TOKEN_HELP}\n\n` +
        'Use it only when `replichat status` says the cluster waits for in-sync replicas that will never come back\n' +
        '(their machines or disks are lost). Acknowledged writes that the trusted replica does not hold are lost:\n' +
        'the command lists every reachable replica with a longer log. Without --yes it changes nothing.',
    )
    .action(async (options: RecoverOptions, command: Command) => {
      await runCommand(command, async (context) => {
        if (!/^\d+$/.test(options.trust)) throw new UsageError(`--trust must be an ordinal, not ${JSON.stringify(options.trust)}`);
        const trusted = Number(options.trust);
        const client = await operatorClient(context, options);
        const servers = context.serversFor(await context.optionalSession());
        const statuses: { address: string; status: ReplicaStatus }[] = [];
        for (const address of servers) {
          try {
            statuses.push({ address, status: await client.replicaStatus(address, { deadlineMs: 3000 }) });
          } catch {
            // An unreachable replica is the usual reason for recovering; it is listed as unknown below.
          }
        }
        const target = statuses.find((entry) => entry.status.ordinal === trusted);
        if (target === undefined) {
          throw new CliError(`no reachable server of ${servers.join(', ')} is replica ${trusted}`, 'NOT_FOUND');
        }
        const ahead = statuses.filter((entry) => entry.status.lastIndex > target.status.lastIndex);
        const lines = [
          `Replica ${trusted} (${target.address}) holds the log up to index ${target.status.lastIndex}.`,
          ...ahead.map(
            (entry) =>
              `Replica ${entry.status.ordinal} holds up to ${entry.status.lastIndex}: entries ${target.status.lastIndex + 1}-${entry.status.lastIndex} may be lost.`,
          ),
          `Unreachable servers may hold acknowledged writes that replica ${trusted} lacks: ${
            servers.filter((address) => !statuses.some((entry) => entry.address === address)).join(', ') || 'none'
          }.`,
        ];
        if (options.yes !== true) {
          context.output.result({ trusted, lastIndex: target.status.lastIndex, acted: false }, [
            ...lines,
            'Nothing was changed. Run again with --yes to make it the leader.',
          ]);
          return;
        }
        const outcome = await client.forceLeadership(target.address);
        context.output.result({ trusted, acted: true, ...outcome }, [
          ...lines,
          `Replica ${trusted} now asks the configuration store to lead epoch ${outcome.previousEpoch + 1} alone ` +
            `(it replaced the in-sync set {${outcome.previousInSync.join(', ')}}). The others rejoin by snapshot.`,
        ]);
      });
    });
}
