/**
 * Where a command gets a password from, in this order: the first line of stdin with --password-stdin (for
 * scripts, which must not put a password in argv where `ps` shows it), the REPLICHAT_PASSWORD environment
 * variable, or a hidden prompt on the terminal. A new password is asked twice on a terminal, because a typo
 * nobody could see would lock the user out of the account just made.
 */
import { validatePassword } from '../core/validation.js';
import { CliError, EXIT_INTERRUPTED, UsageError } from './cli-error.js';
import { readFirstLine, type TerminalInput } from './terminal-input.js';

/** A one-shot command gives up after this many rejected entries rather than prompting forever. */
const TERMINAL_ATTEMPTS_MAX = 3;

export interface PasswordRequest {
  /** --password-stdin was given. */
  readonly fromStdin: boolean;
  readonly environment: Readonly<Record<string, string | undefined>>;
  /** A password being chosen (checked against the rules, asked twice) rather than one being checked. */
  readonly isNew: boolean;
  /** The prompt on the terminal, such as `Password for alice: `. */
  readonly prompt: string;
}

/** The error for a prompt the user ended with Ctrl-C or Ctrl-D. */
export function promptEnded(terminal: TerminalInput): CliError {
  return terminal.interrupted
    ? new CliError('interrupted', 'INTERRUPTED', EXIT_INTERRUPTED)
    : new CliError('the input ended before a password was given', 'NO_PASSWORD');
}

/** Throws the rule a new password breaks, in the server's words. */
export function checkNewPassword(password: string): void {
  try {
    validatePassword(password);
  } catch (error) {
    throw new CliError((error as Error).message, 'INVALID_ARGUMENT');
  }
}

/**
 * Asks for a password on the terminal; a new one twice. Resolves with undefined when the two entries
 * differ or the password breaks a rule (after saying so), so that an interactive caller can ask again.
 */
export async function askPasswordOnTerminal(
  terminal: TerminalInput,
  prompt: string,
  isNew: boolean,
  tell: (text: string) => void,
): Promise<string | undefined> {
  const password = await terminal.askHidden(prompt);
  if (password === undefined) throw promptEnded(terminal);
  if (!isNew) return password;
  try {
    checkNewPassword(password);
  } catch (error) {
    tell((error as Error).message);
    return undefined;
  }
  const repeated = await terminal.askHidden('Repeat the password: ');
  if (repeated === undefined) throw promptEnded(terminal);
  if (repeated !== password) {
    tell('The passwords do not match.');
    return undefined;
  }
  return password;
}

/**
 * Gets a password from the first source that has one. `terminal` is called only when a prompt is needed,
 * so that a scripted run never opens the terminal.
 */
export async function obtainPassword(request: PasswordRequest, terminal: () => TerminalInput): Promise<string> {
  if (request.fromStdin) {
    if (process.stdin.isTTY === true) {
      throw new UsageError('--password-stdin reads a pipe or a file; on a terminal, leave it out to be prompted');
    }
    const line = await readFirstLine(process.stdin);
    if (line === undefined || line === '') throw new CliError('--password-stdin: stdin held no password', 'NO_PASSWORD');
    if (request.isNew) checkNewPassword(line);
    return line;
  }
  const fromEnvironment = request.environment.REPLICHAT_PASSWORD;
  if (fromEnvironment !== undefined && fromEnvironment !== '') {
    if (request.isNew) checkNewPassword(fromEnvironment);
    return fromEnvironment;
  }
  if (process.stdin.isTTY !== true) {
    throw new UsageError('no password: pass --password-stdin, set REPLICHAT_PASSWORD, or run on a terminal');
  }
  const input = terminal();
  const tell = (text: string): void => input.write(`${text}\n`);
  for (let attempt = 0; attempt < TERMINAL_ATTEMPTS_MAX; attempt += 1) {
    const password = await askPasswordOnTerminal(input, request.prompt, request.isNew, tell);
    if (password !== undefined) return password;
  }
  throw new CliError(`no acceptable password after ${TERMINAL_ATTEMPTS_MAX} attempts`, 'NO_PASSWORD');
}
