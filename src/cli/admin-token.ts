/**
 * The operator's admin token for `member remove` and `backup`. It is a secret that grants control of the
 * cluster, so it is read from a file (--admin-token-file, or REPLICHAT_ADMIN_TOKEN_FILE) or from the
 * environment (REPLICHAT_ADMIN_TOKEN), never from the command line, where `ps` and /proc/PID/cmdline show
 * it to every user of the machine.
 */
import { readFile } from 'node:fs/promises';
import { Option } from 'commander';
import { CliError, UsageError } from './cli-error.js';
import type { CliContext } from './cli-context.js';
import type { StoredSession } from './session-file.js';

export interface AdminTokenOptions {
  readonly adminTokenFile?: string;
}

export function adminTokenFileOption(): Option {
  return new Option('--admin-token-file <file>', 'file holding the admin token the servers were started with').env(
    'REPLICHAT_ADMIN_TOKEN_FILE',
  );
}

export const ADMIN_TOKEN_HELP =
  'The admin token comes from --admin-token-file (or REPLICHAT_ADMIN_TOKEN_FILE), else from REPLICHAT_ADMIN_TOKEN; ' +
  'never from an argument, which other users of the machine could read.';

/** The token from the file (one line; surrounding whitespace ignored) or the environment. */
export async function readAdminToken(options: AdminTokenOptions, environment: CliContext['environment']): Promise<string> {
  if (options.adminTokenFile !== undefined && options.adminTokenFile !== '') {
    let text: string;
    try {
      text = await readFile(options.adminTokenFile, 'utf8');
    } catch (error) {
      throw new CliError(`cannot read the admin token file ${options.adminTokenFile}: ${(error as Error).message}`, 'ADMIN_TOKEN');
    }
    const token = text.trim();
    if (token === '') throw new CliError(`the admin token file ${options.adminTokenFile} is empty`, 'ADMIN_TOKEN');
    return token;
  }
  const fromEnvironment = environment.REPLICHAT_ADMIN_TOKEN?.trim();
  if (fromEnvironment !== undefined && fromEnvironment !== '') return fromEnvironment;
  throw new UsageError('give the admin token with --admin-token-file FILE or REPLICHAT_ADMIN_TOKEN');
}

/**
 * A session-shaped carrier for the admin token, for a client that talks to the servers of the current
 * profile (or --servers) with its TLS settings.
 */
export async function operatorClient(context: CliContext, options: AdminTokenOptions) {
  const token = await readAdminToken(options, context.environment);
  const profile = await context.optionalSession();
  const operator: StoredSession = {
    username: 'operator',
    sessionToken: token,
    expiresAtMs: Number.MAX_SAFE_INTEGER,
    servers: context.serversFor(profile),
  };
  return context.client(operator, operator.servers, profile);
}
