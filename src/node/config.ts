/**
 * The server's one configuration object: parsed from flags and environment variables (every flag has an
 * environment twin, `--data-dir` and `REPLICHAT_DATA_DIR`), validated with cross-field rules, then frozen.
 * A bad value fails at start with a message that names the flag.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { hostname } from 'node:os';
import { type ChatLimits, DEFAULT_CHAT_LIMITS } from '../core/limits.js';
import { DEFAULT_REPLICATION_TIMINGS, type ReplicationTimings } from '../core/replication/replica-core.js';
import type { Member } from '../core/replication/types.js';

export interface ServerConfig {
  readonly dataDirectory: string;
  /** host:port for the client-facing gRPC service. */
  readonly listenAddress: string;
  /** host:port for HTTP /metrics, /healthz and /readyz. */
  readonly metricsListenAddress: string;
  /** The scrypt cost of new password hashes, as a power of two (17 unless a test cluster lowers it). */
  readonly passwordHashCostLog2: number;
  /** host:port of a plaintext gRPC health-only server (Kubernetes' native gRPC probe), or undefined. */
  readonly healthListenAddress: string | undefined;
  readonly tls: { readonly certificatePath: string; readonly keyPath: string } | 'insecure';
  /** Mutual TLS of the peer port, always: the cluster CA, and this replica's certificate and key from it. */
  readonly peerTls: { readonly caPath: string; readonly certificatePath: string; readonly keyPath: string };
  readonly logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  readonly limits: ChatLimits;
  /** How long SIGTERM waits for in-flight requests before the server stops hard. */
  readonly shutdownGraceMs: number;
  /** This replica's ordinal (0, 1, 2 … as in a StatefulSet). */
  readonly ordinal: number;
  /** Every replica of the cluster, this one included, with its peer address. */
  readonly peers: readonly Member[];
  /** host:port of the peer gRPC service (replication). */
  readonly peerListenAddress: string;
  /** The address clients are sent to when this replica leads. */
  readonly advertisedClientAddress: string;
  /** Peers refuse messages from another cluster name, so that two clusters never mix. */
  readonly clusterName: string;
  readonly timings: ReplicationTimings;
  /** Where the cluster's configuration record lives; see src/configuration/. */
  readonly configurationStore: ConfigurationStoreConfig;
  /**
   * Bearer token for operator RPCs (RemoveMember, RotateSessionKey); undefined disables them. Read from
   * --admin-token-file or REPLICHAT_ADMIN_TOKEN, never from argv, where any local user could read it.
   */
  readonly adminToken: string | undefined;
  readonly logRetentionEntries: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

interface FlagSpec {
  readonly type: 'string' | 'boolean';
  readonly description: string;
  readonly default?: string;
}

/** Every flag, its environment twin is REPLICHAT_ plus the flag in upper snake case. */
export const SERVER_FLAGS: Readonly<Record<string, FlagSpec>> = {
  'data-dir': { type: 'string', description: 'directory for this replica\'s SQLite database', default: './data' },
  listen: { type: 'string', description: 'host:port of the client gRPC service', default: '0.0.0.0:50051' },
  'metrics-listen': {
    type: 'string',
    description: 'host:port of the HTTP server for /metrics, /healthz and /readyz (port 0 picks one)',
    default: '0.0.0.0:9100',
  },
  'tls-cert': { type: 'string', description: 'PEM certificate for the client gRPC service' },
  'tls-key': { type: 'string', description: 'PEM private key for the client gRPC service' },
  insecure: { type: 'boolean', description: 'serve clients in plaintext (passwords travel unencrypted)' },
  'peer-ca': { type: 'string', description: 'PEM certificate of the cluster CA that issues every replica\'s peer certificate' },
  'peer-cert': {
    type: 'string',
    description: "PEM peer certificate of this replica (URI spiffe://replichat/<cluster>/replica/<ordinal>)",
  },
  'peer-key': { type: 'string', description: 'PEM private key of the peer certificate' },
  'log-level': { type: 'string', description: 'trace, debug, info, warn or error', default: 'info' },
  'message-max-bytes': {
    type: 'string',
    description: 'largest message body in UTF-8 bytes',
    default: String(DEFAULT_CHAT_LIMITS.messageMaxBytes),
  },
  'page-size-default': {
    type: 'string',
    description: 'page size when a request gives none',
    default: String(DEFAULT_CHAT_LIMITS.pageSizeDefault),
  },
  'page-size-max': {
    type: 'string',
    description: 'largest page size a request may ask for',
    default: String(DEFAULT_CHAT_LIMITS.pageSizeMax),
  },
  'subscriptions-per-user-max': {
    type: 'string',
    description: 'open Subscribe streams allowed per user on one replica',
    default: String(DEFAULT_CHAT_LIMITS.subscriptionsPerUserMax),
  },
  'session-ttl-hours': {
    type: 'string',
    description: 'how long a session lasts after login',
    default: String(DEFAULT_CHAT_LIMITS.sessionTtlMs / 3_600_000),
  },
  'shutdown-grace-ms': {
    type: 'string',
    description: 'how long SIGTERM waits for in-flight requests',
    default: '5000',
  },
  ordinal: {
    type: 'string',
    description: "this replica's ordinal; by default the number at the end of the host name (chat-2 is 2), else 0",
  },
  peers: {
    type: 'string',
    description: 'every replica\'s peer address, e.g. 0=10.0.0.1:50052,1=10.0.0.2:50052,2=10.0.0.3:50052',
  },
  'peer-template': {
    type: 'string',
    description: 'peer address with {ordinal}, e.g. chat-{ordinal}.chat-peers.default.svc.cluster.local:50052 (with --replicas)',
  },
  replicas: { type: 'string', description: 'number of replicas, with --peer-template' },
  'peer-listen': { type: 'string', description: 'host:port of the peer (replication) service', default: '0.0.0.0:50052' },
  'advertise-address': {
    type: 'string',
    description: "host:port clients use to reach this replica (default: this replica's peer host with the --listen port)",
  },
  'cluster-name': { type: 'string', description: 'name shared by the replicas of one cluster', default: 'replichat' },
  'snapshot-lag-entries': {
    type: 'string',
    description: 'a follower further behind than this many entries is sent a snapshot instead',
    default: String(DEFAULT_REPLICATION_TIMINGS.snapshotLagEntries),
  },
  'log-retention-entries': {
    type: 'string',
    description: 'newest log entries kept for catching followers up; older ones are deleted',
    default: '100000',
  },
  'admin-token-file': {
    type: 'string',
    description:
      'file holding the bearer token that enables operator RPCs such as member removal (at least 16 characters; ' +
      'or the token itself in REPLICHAT_ADMIN_TOKEN)',
  },
  'heartbeat-interval-ms': {
    type: 'string',
    description: 'how often the leader contacts each follower',
    default: String(DEFAULT_REPLICATION_TIMINGS.heartbeatIntervalMs),
  },
  'election-timeout-ms': {
    type: 'string',
    description: 'silence from the leader after which followers elect a new one',
    default: String(DEFAULT_REPLICATION_TIMINGS.electionTimeoutMs),
  },
  'in-sync-timeout-ms': {
    type: 'string',
    description:
      'a follower that has not caught up for this long is taken out of the in-sync set (a swap on the configuration store)',
    default: String(DEFAULT_REPLICATION_TIMINGS.inSyncTimeoutMs),
  },
  'store-check-interval-ms': {
    type: 'string',
    description: 'how often the leader reads the configuration store to find out whether it was replaced',
    default: String(DEFAULT_REPLICATION_TIMINGS.storeCheckIntervalMs),
  },
  'configuration-store': {
    type: 'string',
    description:
      'where the cluster\'s configuration (leader, members, in-sync set) is serialised: etcd, or kubernetes (a Lease in the pod\'s namespace)',
    default: 'etcd',
  },
  'etcd-endpoints': {
    type: 'string',
    description: 'comma-separated etcd v3 endpoints, e.g. http://10.0.0.5:2379,http://10.0.0.6:2379',
    default: 'http://127.0.0.1:2379',
  },
  'etcd-prefix': {
    type: 'string',
    description: 'key prefix in etcd; the record lives at <prefix><cluster-name>/configuration',
    default: '/replichat/',
  },
  'etcd-ca': { type: 'string', description: 'PEM CA for etcd over TLS (optional)' },
  'etcd-cert': { type: 'string', description: 'PEM client certificate for etcd over TLS (optional)' },
  'etcd-key': { type: 'string', description: 'PEM client key for etcd over TLS (optional)' },
  'store-timeout-ms': {
    type: 'string',
    description: 'how long one request to the configuration store may take before it counts as failed',
    default: '2000',
  },
  'kubernetes-lease-name': {
    type: 'string',
    description: 'name of the Lease holding the configuration (default <cluster-name>-configuration)',
  },
  'kubernetes-namespace': {
    type: 'string',
    description: "namespace of the Lease and the pod (default: the service account's namespace)",
  },
  'pod-name': { type: 'string', description: 'this pod\'s name, for its role label (default: the host name)' },
  'password-hash-cost-log2': {
    type: 'string',
    description:
      'scrypt cost of new password hashes as a power of two: 17 is OWASP\'s (the default); 14 to 16 only for test clusters',
    default: '17',
  },
  'health-listen': {
    type: 'string',
    description:
      'host:port of a plaintext gRPC server with grpc.health.v1 only, for probes that cannot speak TLS (the kubelet\'s); off by default',
  },
};

export function environmentName(flag: string): string {
  return `REPLICHAT_${flag.toUpperCase().replaceAll('-', '_')}`;
}

/** The --help text of `replichat server`. */
export function serverHelp(): string {
  const lines = ['Usage: replichat server [options]', '', 'Runs one replica of the chat service.', '', 'Options:'];
  for (const [flag, spec] of Object.entries(SERVER_FLAGS)) {
    const value = spec.type === 'string' ? ' <value>' : '';
    const fallback = spec.default === undefined ? '' : ` (default ${spec.default})`;
    lines.push(`  --${flag}${value}`.padEnd(36) + `${spec.description}${fallback}; env ${environmentName(flag)}`);
  }
  lines.push('  --help'.padEnd(36) + 'show this help');
  return lines.join('\n');
}

function positiveInteger(flag: string, raw: string, maximum: number): number {
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value <= 0 || value > maximum) {
    throw new ConfigError(`--${flag} must be a whole number from 1 to ${maximum}, not ${JSON.stringify(raw)}`);
  }
  return value;
}

function hostPort(flag: string, raw: string): string {
  const match = /^(.+):(\d{1,5})$/.exec(raw);
  if (match === null || Number(match[2]) > 65535) {
    throw new ConfigError(`--${flag} must be host:port, not ${JSON.stringify(raw)}`);
  }
  return raw;
}

/** Parses argv (without the `server` word) and the environment into a frozen, validated config. */
export function parseServerConfig(argv: readonly string[], environment: NodeJS.ProcessEnv): ServerConfig {
  const options = Object.fromEntries(
    Object.entries(SERVER_FLAGS).map(([flag, spec]) => [flag, { type: spec.type }]),
  ) as Record<string, { type: 'string' | 'boolean' }>;
  let parsed: Record<string, string | boolean | undefined>;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as Record<
      string,
      string | boolean | undefined
    >;
  } catch (error) {
    if (argv.some((argument) => argument === '--admin-token' || argument.startsWith('--admin-token='))) {
      throw new ConfigError('--admin-token is gone (argv is readable by every local user): use --admin-token-file or REPLICHAT_ADMIN_TOKEN');
    }
    throw new ConfigError((error as Error).message);
  }
  const value = (flag: string): string | undefined => {
    const fromFlag = parsed[flag];
    if (typeof fromFlag === 'string') return fromFlag;
    const fromEnvironment = environment[environmentName(flag)];
    if (fromEnvironment !== undefined && fromEnvironment !== '') return fromEnvironment;
    return SERVER_FLAGS[flag]?.default;
  };
  const flagSet = (flag: string): boolean => {
    if (parsed[flag] === true) return true;
    const fromEnvironment = environment[environmentName(flag)];
    return fromEnvironment === '1' || fromEnvironment === 'true';
  };

  const certificatePath = value('tls-cert');
  const keyPath = value('tls-key');
  const insecure = flagSet('insecure');
  let tls: ServerConfig['tls'];
  if (insecure) {
    if (certificatePath !== undefined || keyPath !== undefined) {
      throw new ConfigError('--insecure and --tls-cert/--tls-key exclude each other');
    }
    tls = 'insecure';
  } else {
    if (certificatePath === undefined || keyPath === undefined) {
      throw new ConfigError('give --tls-cert and --tls-key, or --insecure to serve clients in plaintext');
    }
    for (const [flag, path] of [['tls-cert', certificatePath], ['tls-key', keyPath]] as const) {
      if (!existsSync(path)) throw new ConfigError(`--${flag}: no file at ${path}`);
    }
    tls = { certificatePath, keyPath };
  }

  const peerTls = {
    caPath: value('peer-ca'),
    certificatePath: value('peer-cert'),
    keyPath: value('peer-key'),
  };
  for (const [flag, path] of [['peer-ca', peerTls.caPath], ['peer-cert', peerTls.certificatePath], ['peer-key', peerTls.keyPath]] as const) {
    // There is no plaintext peer mode: the peer port carries every password hash and the token-signing keys.
    if (path === undefined) {
      throw new ConfigError(
        `give --${flag}: the peer port is always mutual TLS (scripts/make-dev-certs.sh makes a cluster CA and peer certificates)`,
      );
    }
    if (!existsSync(path)) throw new ConfigError(`--${flag}: no file at ${path}`);
  }

  const logLevel = value('log-level') as ServerConfig['logLevel'];
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new ConfigError(`--log-level must be trace, debug, info, warn or error, not ${JSON.stringify(logLevel)}`);
  }

  const limits: ChatLimits = {
    messageMaxBytes: positiveInteger('message-max-bytes', value('message-max-bytes')!, 1024 * 1024),
    pageSizeDefault: positiveInteger('page-size-default', value('page-size-default')!, 10_000),
    pageSizeMax: positiveInteger('page-size-max', value('page-size-max')!, 10_000),
    subscriptionsPerUserMax: positiveInteger('subscriptions-per-user-max', value('subscriptions-per-user-max')!, 1000),
    sessionTtlMs: positiveInteger('session-ttl-hours', value('session-ttl-hours')!, 24 * 366) * 3_600_000,
  };
  if (limits.pageSizeDefault > limits.pageSizeMax) {
    throw new ConfigError('--page-size-default must not be larger than --page-size-max');
  }

  const timings: ReplicationTimings = {
    ...DEFAULT_REPLICATION_TIMINGS,
    heartbeatIntervalMs: positiveInteger('heartbeat-interval-ms', value('heartbeat-interval-ms')!, 60_000),
    electionTimeoutMs: positiveInteger('election-timeout-ms', value('election-timeout-ms')!, 600_000),
    inSyncTimeoutMs: positiveInteger('in-sync-timeout-ms', value('in-sync-timeout-ms')!, 600_000),
    storeCheckIntervalMs: positiveInteger('store-check-interval-ms', value('store-check-interval-ms')!, 600_000),
    snapshotLagEntries: positiveInteger('snapshot-lag-entries', value('snapshot-lag-entries')!, 1_000_000_000),
  };
  const logRetentionEntries = positiveInteger('log-retention-entries', value('log-retention-entries')!, 1_000_000_000);
  if (logRetentionEntries < 2 * timings.maxEntriesPerAppend * timings.maxInflightAppends) {
    throw new ConfigError(
      `--log-retention-entries must be at least ${2 * timings.maxEntriesPerAppend * timings.maxInflightAppends}`,
    );
  }
  const adminToken = readAdminToken(value('admin-token-file'), environment.REPLICHAT_ADMIN_TOKEN);
  if (!(timings.electionTimeoutMs >= 2 * timings.heartbeatIntervalMs)) {
    throw new ConfigError('--election-timeout-ms must be at least twice --heartbeat-interval-ms');
  }
  if (!(timings.inSyncTimeoutMs >= 2 * timings.heartbeatIntervalMs)) {
    throw new ConfigError('--in-sync-timeout-ms must be at least twice --heartbeat-interval-ms');
  }
  const configurationStore = parseConfigurationStore(value, value('cluster-name')!);

  const listenAddress = hostPort('listen', value('listen')!);
  const peerListenAddress = hostPort('peer-listen', value('peer-listen')!);
  const ordinal = parseOrdinal(value('ordinal'));
  const peers = parsePeers(value('peers'), value('peer-template'), value('replicas'), ordinal, peerListenAddress);
  const self = peers.find((member) => member.ordinal === ordinal);
  if (self === undefined) throw new ConfigError(`--ordinal ${ordinal} is not among the peers`);
  const advertisedClientAddress = hostPort(
    'advertise-address',
    value('advertise-address') ?? `${splitHost(self.address)}:${listenAddress.slice(listenAddress.lastIndexOf(':') + 1)}`,
  );
  const clusterName = value('cluster-name')!;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(clusterName)) {
    throw new ConfigError('--cluster-name must be 1 to 64 letters, digits, _, . or -');
  }

  const dataDirectory = value('data-dir')!;
  if (dataDirectory.trim() === '') throw new ConfigError('--data-dir must not be empty');

  return Object.freeze({
    dataDirectory,
    listenAddress,
    metricsListenAddress: hostPort('metrics-listen', value('metrics-listen')!),
    passwordHashCostLog2: passwordHashCost(value('password-hash-cost-log2')!),
    healthListenAddress: value('health-listen') === undefined ? undefined : hostPort('health-listen', value('health-listen')!),
    tls: typeof tls === 'string' ? tls : Object.freeze(tls),
    peerTls: Object.freeze(peerTls as ServerConfig['peerTls']),
    logLevel,
    limits: Object.freeze(limits),
    shutdownGraceMs: positiveInteger('shutdown-grace-ms', value('shutdown-grace-ms')!, 600_000),
    ordinal,
    peers: Object.freeze(peers.map((member) => Object.freeze(member))),
    peerListenAddress,
    advertisedClientAddress,
    clusterName,
    timings: Object.freeze(timings),
    configurationStore,
    adminToken,
    logRetentionEntries,
  });
}

function passwordHashCost(raw: string): number {
  const costLog2 = Number(raw);
  if (!/^\d+$/.test(raw) || costLog2 < 14 || costLog2 > 17) {
    throw new ConfigError(`--password-hash-cost-log2 must be 14 to 17, not ${JSON.stringify(raw)}`);
  }
  return costLog2;
}

/** Which configuration store, and how to reach it. */
export type ConfigurationStoreConfig =
  | {
      readonly kind: 'etcd';
      readonly endpoints: readonly string[];
      readonly prefix: string;
      readonly timeoutMs: number;
      readonly tls: { readonly caPath?: string; readonly certificatePath?: string; readonly keyPath?: string } | undefined;
    }
  | {
      readonly kind: 'kubernetes';
      readonly leaseName: string;
      readonly namespace: string | undefined;
      readonly podName: string;
      readonly timeoutMs: number;
    };

function parseConfigurationStore(value: (flag: string) => string | undefined, clusterName: string): ConfigurationStoreConfig {
  const kind = value('configuration-store');
  const timeoutMs = positiveInteger('store-timeout-ms', value('store-timeout-ms')!, 600_000);
  if (kind === 'etcd') {
    const endpoints = value('etcd-endpoints')!
      .split(',')
      .map((endpoint) => endpoint.trim())
      .filter((endpoint) => endpoint !== '');
    if (endpoints.length === 0) throw new ConfigError('--etcd-endpoints needs at least one endpoint');
    for (const endpoint of endpoints) {
      if (!/^https?:\/\/[^\s/]+(:\d{1,5})?\/?$/.test(endpoint)) {
        throw new ConfigError(`--etcd-endpoints: ${JSON.stringify(endpoint)} is not http(s)://host:port`);
      }
    }
    const prefix = value('etcd-prefix')!;
    if (!prefix.startsWith('/') || prefix.length > 200) throw new ConfigError('--etcd-prefix must start with / (at most 200 characters)');
    const caPath = value('etcd-ca');
    const certificatePath = value('etcd-cert');
    const keyPath = value('etcd-key');
    for (const [flag, path] of [['etcd-ca', caPath], ['etcd-cert', certificatePath], ['etcd-key', keyPath]] as const) {
      if (path !== undefined && !existsSync(path)) throw new ConfigError(`--${flag}: no file at ${path}`);
    }
    const tls =
      caPath === undefined && certificatePath === undefined && keyPath === undefined
        ? undefined
        : Object.freeze({ caPath, certificatePath, keyPath });
    return Object.freeze({ kind, endpoints: Object.freeze(endpoints), prefix, timeoutMs, tls });
  }
  if (kind === 'kubernetes') {
    const leaseName = value('kubernetes-lease-name') ?? `${clusterName}-configuration`;
    if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(leaseName)) throw new ConfigError('--kubernetes-lease-name is not a valid object name');
    return Object.freeze({
      kind,
      leaseName,
      namespace: value('kubernetes-namespace'),
      podName: value('pod-name') ?? hostname(),
      timeoutMs,
    });
  }
  throw new ConfigError(`--configuration-store must be etcd or kubernetes, not ${JSON.stringify(kind)}`);
}

/** The admin token from its file (trailing newline ignored) or from REPLICHAT_ADMIN_TOKEN; never both. */
function readAdminToken(path: string | undefined, fromEnvironment: string | undefined): string | undefined {
  if (path !== undefined && fromEnvironment !== undefined && fromEnvironment !== '') {
    throw new ConfigError('--admin-token-file and REPLICHAT_ADMIN_TOKEN exclude each other');
  }
  let token = fromEnvironment === '' ? undefined : fromEnvironment;
  if (path !== undefined) {
    try {
      token = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (error) {
      throw new ConfigError(`--admin-token-file: cannot read ${path}: ${(error as Error).message}`);
    }
  }
  if (token !== undefined && token.length < 16) {
    throw new ConfigError('the admin token (--admin-token-file or REPLICHAT_ADMIN_TOKEN) must be at least 16 characters');
  }
  return token;
}

function splitHost(address: string): string {
  return address.slice(0, address.lastIndexOf(':'));
}

/** The ordinal from --ordinal, else from a StatefulSet pod's host name (chat-2), else 0. */
function parseOrdinal(raw: string | undefined): number {
  if (raw === undefined) {
    const match = /-(\d+)$/.exec(hostname());
    return match === null ? 0 : Number(match[1]);
  }
  if (!/^\d+$/.test(raw) || Number(raw) > 1000) throw new ConfigError(`--ordinal must be 0 to 1000, not ${JSON.stringify(raw)}`);
  return Number(raw);
}

function parsePeers(
  list: string | undefined,
  template: string | undefined,
  replicas: string | undefined,
  ordinal: number,
  peerListenAddress: string,
): Member[] {
  if (list !== undefined && template !== undefined) throw new ConfigError('--peers and --peer-template exclude each other');
  if (template !== undefined) {
    if (!template.includes('{ordinal}')) throw new ConfigError('--peer-template must contain {ordinal}');
    if (replicas === undefined) throw new ConfigError('--peer-template needs --replicas');
    const count = positiveInteger('replicas', replicas, 1000);
    // A pod past --replicas (after `kubectl scale statefulset chat --replicas=N+1`) is a replica being
    // added: it knows its own address from the template and joins the cluster by snapshot.
    const ordinals = Array.from({ length: count }, (_, index) => index);
    if (ordinal >= count) ordinals.push(ordinal);
    return ordinals.map((index) => ({
      ordinal: index,
      address: hostPort('peer-template', template.replaceAll('{ordinal}', String(index))),
    }));
  }
  if (list === undefined) {
    // A single replica: its own peer address, reachable on loopback.
    const port = peerListenAddress.slice(peerListenAddress.lastIndexOf(':') + 1);
    return [{ ordinal, address: `127.0.0.1:${port}` }];
  }
  const members: Member[] = [];
  for (const part of list.split(',').map((item) => item.trim()).filter((item) => item !== '')) {
    const match = /^(\d+)=(.+)$/.exec(part);
    if (match === null) throw new ConfigError(`--peers entry ${JSON.stringify(part)} is not ORDINAL=host:port`);
    const memberOrdinal = Number(match[1]);
    if (members.some((member) => member.ordinal === memberOrdinal)) {
      throw new ConfigError(`--peers names ordinal ${memberOrdinal} twice`);
    }
    members.push({ ordinal: memberOrdinal, address: hostPort('peers', match[2]!) });
  }
  if (members.length === 0) throw new ConfigError('--peers is empty');
  return members.sort((a, b) => a.ordinal - b.ordinal);
}
