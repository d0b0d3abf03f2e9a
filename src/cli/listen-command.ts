/**
 * `listen`: prints the messages pushed to the logged-in user as they arrive, one line each (one JSON object
 * per line with --json), and acknowledges each one once it is printed, so that the server counts it as
 * delivered only when someone could have seen it. Runs until SIGINT or SIGTERM, or until --count messages;
 * an outage of the cluster, however long, does not end it: the subscription says once on stderr that it
 * was lost, keeps reconnecting, says when it is back, and then prints what was sent meanwhile.
 */
import type { Command } from 'commander';
import type { ChatClient, ChatMessage } from './chat-client.js';
import type { ChatClientError } from './chat-client-error.js';
import { runCommand } from './cli-context.js';
import { positiveInteger } from './option-parsers.js';
import { describeError, formatMessage, type Output } from './output.js';

interface ListenOptions {
  readonly count?: number;
  readonly includeQueued?: boolean;
}

/** Prints and acknowledges messages one at a time, in arrival order, until `count` are done or it stops. */
function listen(client: ChatClient, output: Output, options: ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    let shownCount = 0;
    let stopping = false;
    // Acknowledging waits for the server; the chain keeps lines and acknowledgements in arrival order.
    let chain: Promise<void> = Promise.resolve();
    // Printed, but the acknowledgement failed (the cluster went away): the server sends them again after
    // the reconnect, and then they are acknowledged without being printed twice.
    const unacknowledged = new Set<string>();
    const acknowledge = async (message: ChatMessage): Promise<void> => {
      try {
        await client.acknowledgeMessages([message.id]);
        unacknowledged.delete(message.id);
      } catch (error) {
        unacknowledged.add(message.id);
        // The message stays undelivered on the server and comes again on the next subscription.
        output.notice(`replichat: could not acknowledge message ${message.id}: ${describeError(error).line}`);
      }
    };
    const show = async (message: ChatMessage): Promise<void> => {
      if (stopping) return;
      if (output.json) output.jsonLine(message);
      else output.line(formatMessage(message));
      await acknowledge(message);
      shownCount += 1;
      if (options.count !== undefined && shownCount >= options.count) stop();
    };
    const ended = (error?: ChatClientError): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      // Let the message being acknowledged finish before the command ends.
      void chain.then(() => (error === undefined ? resolve() : reject(error)));
    };
    const subscription = client.subscribe(
      {
        includeQueued: options.includeQueued === true,
        onRepeat: (message) => {
          if (unacknowledged.has(message.id)) chain = chain.then(() => acknowledge(message));
        },
        onConnectionChange: (change, error) => {
          output.notice(
            change === 'lost'
              ? `replichat: live messages interrupted (${error === undefined ? 'connection lost' : describeError(error).line}); ` +
                  'reconnecting until the cluster answers; messages sent meanwhile wait on the server'
              : 'replichat: live messages are back',
          );
        },
      },
      (message) => {
        chain = chain.then(() => show(message));
      },
      ended,
    );
    function stop(): void {
      stopping = true;
      subscription.close();
    }
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

export function addListenCommand(program: Command): void {
  program
    .command('listen')
    .description('print incoming messages as they arrive and acknowledge them, until Ctrl-C')
    .option('-n, --count <n>', 'exit after this many messages', positiveInteger)
    .option('--include-queued', 'first print the messages that were waiting for `read`, too')
    .addHelpText('after', '\nWith --json: one message object per line (NDJSON).')
    .action(async (options: ListenOptions, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.requireSession();
        if (!context.settings.json) context.output.notice(`Listening for messages to ${session.username}; Ctrl-C stops.`);
        await listen(context.client(session), context.output, options);
      });
    });
}
