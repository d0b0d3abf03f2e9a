/**
 * The options every client command shares, resolved once from flags and their environment twins into the
 * settings a command needs. Flags win over the environment; the servers fall back to the ones remembered in
 * the session file, then to a local server, so that `replichat login --servers ...` is needed only once.
 */
import { resolve } from 'node:path';
import type { ChatClientTls } from './chat-client.js';
import { UsageError } from './cli-error.js';
import { defaultSessionFilePath } from './session-file.js';

/** The global options as commander parses them (commander fills in the environment twins of the strings). */
export interface GlobalOptionValues {
  readonly servers?: string;
  readonly caCert?: string;
  readonly insecure?: boolean;
  readonly sessionFile?: string;
  readonly profile?: string;
  readonly json?: boolean;
}

export interface CliSettings {
  /** Servers given by --servers or REPLICHAT_SERVERS; undefined when neither was given. */
  readonly explicitServers: string[] | undefined;
  /** TLS as --ca-cert, --insecure or their environment twins ask; undefined when none of them is given. */
  readonly explicitTls: ChatClientTls | undefined;
  readonly sessionFilePath: string;
  /** The profile --profile or REPLICHAT_PROFILE names; undefined for the current one. */
  readonly profile: string | undefined;
  readonly json: boolean;
}

export const DEFAULT_SERVERS: readonly string[] = ['127.0.0.1:50051'];

const HOST_PORT_PATTERN = /^(?:\[[0-9A-Fa-f:.]+\]|[^\s:,[\]]+):(\d{1,5})$/;

/** Parses a comma-separated host:port list, refusing anything that is not one. */
export function parseServerList(text: string): string[] {
  const servers = text
    .split(',')
    .map((server) => server.trim())
    .filter((server) => server !== '');
  if (servers.length === 0) throw new UsageError('--servers needs at least one host:port');
  for (const server of servers) {
    const match = HOST_PORT_PATTERN.exec(server);
    if (match === null || Number(match[1]) > 65535 || Number(match[1]) === 0) {
      throw new UsageError(`--servers: ${JSON.stringify(server)} is not host:port`);
    }
  }
  return servers;
}

/** True for the values that switch a boolean environment variable on. */
export function environmentFlagSet(value: string | undefined): boolean {
  return value !== undefined && ['1', 'true', 'yes', 'on'].includes(value.trim().toLowerCase());
}

export function resolveSettings(
  options: GlobalOptionValues,
  environment: Readonly<Record<string, string | undefined>>,
): CliSettings {
  const insecure = options.insecure === true || environmentFlagSet(environment.REPLICHAT_INSECURE);
  if (insecure && options.caCert !== undefined && options.caCert !== '') {
    throw new UsageError('--insecure and --ca-cert exclude each other');
  }
  // The path is kept absolute, because a profile remembers it for commands run from other directories.
  const caCertPath = options.caCert === undefined || options.caCert === '' ? undefined : resolve(options.caCert);
  const sessionFile =
    options.sessionFile !== undefined && options.sessionFile !== ''
      ? options.sessionFile
      : defaultSessionFilePath(environment);
  return {
    explicitServers: options.servers === undefined || options.servers === '' ? undefined : parseServerList(options.servers),
    explicitTls: insecure ? 'insecure' : caCertPath === undefined ? undefined : { caCertPath },
    sessionFilePath: sessionFile,
    profile: options.profile === undefined || options.profile === '' ? undefined : options.profile,
    json: options.json === true,
  };
}
