#!/usr/bin/env node
/**
 * The `replichat` executable. `replichat server ...` runs a replica; every other command is a client
 * command that runs once and exits. A one-shot command closes its connections so that the process ends by
 * itself; a last-resort timer makes sure it ends promptly even if something was left open.
 */
import { CommanderError } from 'commander';
import { EXIT_SUCCESS, EXIT_USAGE, SilentExit } from './cli-error.js';
import { describeError, Output } from './output.js';
import { buildProgram } from './program.js';
import { runServerCommand, serverArguments } from './server-command.js';

/** How long a finished client command may take to exit by itself before it is made to. */
const EXIT_GRACE_MS = 2000;

async function runClientCommand(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_SUCCESS;
  } catch (error) {
    // Commander already printed its message; help and --version end as successes.
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT_SUCCESS : EXIT_USAGE;
    if (error instanceof SilentExit) return error.exitCode;
    const report = describeError(error);
    new Output(program.opts<{ json?: boolean }>().json === true).failure(report);
    return report.exitCode;
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const serverArgv = serverArguments(argv);
  if (serverArgv !== undefined) {
    try {
      await runServerCommand(serverArgv);
    } catch (error) {
      process.stderr.write(`replichat server: ${error instanceof Error ? error.message : String(error)}\n`);
      // A server that failed halfway may hold a database or a port open; it must not linger.
      process.exit(1);
    }
    // The server runs on in its listeners and stops on SIGTERM or SIGINT.
    return;
  }
  // grpc-js names the TLS server by its host even when that is an IP address, for which Node prints a
  // deprecation warning (DEP0123) on every connection; a user of the CLI can do nothing about a dependency's
  // deprecations, so client commands do not print them. The server keeps them, for its operators.
  process.noDeprecation = true;
  const exitCode = await runClientCommand(argv);
  process.exitCode = exitCode;
  setTimeout(() => process.exit(exitCode), EXIT_GRACE_MS).unref();
}

await main();
