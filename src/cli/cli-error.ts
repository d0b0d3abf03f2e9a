/**
 * A failure the CLI detects itself, before or instead of asking a server: no session, a bad flag value, a
 * password that does not match its confirmation. It carries the exit code, because a usage error (2) and an
 * operating failure (1) must be told apart by scripts.
 */

export const EXIT_SUCCESS = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** What shells report for a process that SIGINT ended, kept when the user interrupts a prompt. */
export const EXIT_INTERRUPTED = 130;

export class CliError extends Error {
  override name = 'CliError';

  constructor(
    message: string,
    /** A stable name for --json output, such as 'NOT_LOGGED_IN'. */
    readonly code: string = 'FAILED',
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
  }
}

/** A command used the wrong way: exit code 2, like the usage errors commander reports. */
export class UsageError extends CliError {
  override name = 'UsageError';

  constructor(message: string) {
    super(message, 'USAGE', EXIT_USAGE);
  }
}

/**
 * Ends a command with an exit code and nothing more: the command printed its verdict already, as `status`
 * does before it exits 3 or 4.
 */
export class SilentExit extends CliError {
  override name = 'SilentExit';

  constructor(exitCode: number) {
    super('', 'EXIT', exitCode);
  }
}
