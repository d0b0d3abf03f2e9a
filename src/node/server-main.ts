/**
 * `replichat server`: parses the config, starts the replica, and stops it gracefully on SIGTERM or SIGINT.
 * A bad config exits with status 2 and one line naming the flag.
 */
import { ConfigError, parseServerConfig, serverHelp } from './config.js';
import { createLogger } from './logger.js';
import { startServer } from './server.js';

export async function runServer(argv: readonly string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${serverHelp()}\n`);
    return;
  }
  let config;
  try {
    config = parseServerConfig(argv, process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`replichat server: ${error.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  const server = await startServer(config, logger);
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.info({ signal }, 'shutting down');
    server.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}
