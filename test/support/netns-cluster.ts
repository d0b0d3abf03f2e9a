/**
 * The one harness of every network-namespace integration test: a replichat cluster of real `replichat
 * server` processes, each replica in its own network namespace (a "machine" from netns.ts), with a real
 * etcd as the configuration store (netns-etcd.ts, on the bridge's side of the hosts' network). It starts,
 * SIGKILLs, SIGSTOPs/SIGCONTs and cleanly stops single replicas; captures their JSON log lines; reads their
 * replica status (ChatService.GetReplicaStatus on the client port) and /readyz; cuts replicas off each other
 * or off the store (NetnsHosts.cut); gives a replica a tiny disk that can be filled; reads the store's
 * record; and, once replicas are stopped, reads the state digest and the message ids of their SQLite files.
 *
 * Every replica listens on the same ports inside its own host (clients 50051, peers 50052, HTTP 9100) and
 * finds its peers by their StatefulSet names (chat-i.chat-peers), exactly as in Kubernetes. The test
 * process, in the root namespace, reaches host i at hosts.address(i) through the bridge, so each replica
 * advertises that address to clients. By default a replica is started with every host as a peer; a
 * membership test names a replica's peers itself (`start(index, peers)`), so that a joiner can know more
 * peers than the original replicas do. Conditions are awaited by polling with a deadline, never by sleeping.
 */
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { type ChildProcess, execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chatServiceClientConstructor } from '../../src/api/proto.js';
import { EtcdConfigurationStore } from '../../src/configuration/etcd-configuration-store.js';
import type { ClusterRecord } from '../../src/core/replication/cluster-record.js';
import { computeStateDigest } from '../../src/storage/state-digest.js';
import { cliEnvironment } from './cli-processes.js';
import { type BridgeEtcd, etcdUnavailableReason, startEtcdOnBridge } from './netns-etcd.js';
import { type NetnsHosts, createHosts, netnsUnavailableReason } from './netns.js';
import { makePeerCertificates, type PeerCertificates } from './peer-certificates.js';
import { CLI_PATH } from './processes.js';

export const CLIENT_PORT = 50051;
export const PEER_PORT = 50052;
export const METRICS_PORT = 9100;
/** The store's key prefix and cluster name: the server's defaults, passed explicitly so the test can read the record. */
export const ETCD_PREFIX = '/replichat/';
export const CLUSTER_NAME = 'replichat';

/**
 * How long a replica may take from spawn to its `serving` line (node start-up, SQLite, the store, three
 * listeners): about a second when the machine is idle, over 15 s when two cores run several suites at once.
 */
const START_TIMEOUT_MS = 30_000;
/** How long a signalled replica may take to exit; SIGTERM waits for in-flight calls (5 s grace at most). */
const EXIT_TIMEOUT_MS = 10_000;
/** Deadline of one status or /readyz probe; a paused or dead replica must not stall a poll. */
const PROBE_TIMEOUT_MS = 500;
const POLL_INTERVAL_MS = 25;

/** One JSON log line of a replica, with the incarnation (1 for the first start) that wrote it. */
export type LogLine = Record<string, unknown> & { readonly incarnation: number; readonly msg?: string };

/** A replica's own view of itself, from GetReplicaStatus, with -1 and '' turned into null. */
export interface ReplicaStatus {
  readonly ordinal: number;
  readonly role: string;
  readonly epoch: number;
  readonly leaderOrdinal: number | null;
  readonly leaderAddress: string;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly commitIndex: number;
  readonly members: readonly number[];
  readonly inSync: readonly number[];
  readonly leaseValid: boolean;
  readonly snapshotting: boolean;
  readonly waitingReason: string | null;
  readonly snapshotBytesReceived: number;
  readonly snapshotBytesTotal: number;
  /** Everything the replica sent, for fields this type does not name. */
  readonly raw: Record<string, unknown>;
}

export interface ExitResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface Replica {
  child: ChildProcess | undefined;
  exited: Promise<ExitResult> | undefined;
  paused: boolean;
  /** Set by kill/stop (or expectExit) before the exit, so that any other exit counts as a crash. */
  exitExpected: boolean;
  incarnation: number;
  readonly logs: LogLine[];
  stderr: string;
  /** Status clients are made per incarnation, so that a restarted replica is not behind a reconnect backoff. */
  statusClient: { incarnation: number; client: grpc.Client } | undefined;
  /** The peer ordinals of its last start, reused by a restart. */
  peers: readonly number[] | undefined;
  /** A tmpfs mounted over its data directory by useSmallDisk. */
  smallDisk: boolean;
}

export interface ClusterOptions {
  /** The hosts' prefix (see createHosts): unique per test so that runs never share or tear down hosts. */
  readonly prefix: string;
  /** How many hosts (replica slots); 3 by default. */
  readonly size?: number;
  /** Extra `replichat server` flags for every replica. */
  readonly extraArguments?: readonly string[];
  /** Extra flags for one replica (per-replica certificates, for example). */
  readonly argumentsFor?: (index: number) => readonly string[];
  /** Extra environment variables for every replica (REPLICHAT_ADMIN_TOKEN, for example). */
  readonly environment?: Readonly<Record<string, string>>;
}

/**
 * Why a namespace cluster cannot run here, or undefined: namespaces (netns.ts) and etcd. For
 * `describeOnNetns(name, body, clusterUnavailableReason)`.
 */
export function clusterUnavailableReason(): string | undefined {
  return netnsUnavailableReason() ?? etcdUnavailableReason();
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it returns a value other than undefined/false; fails after `timeoutMs`. */
export async function pollUntil<T>(
  description: string | (() => string),
  condition: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = POLL_INTERVAL_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined && value !== false) return value;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${typeof description === 'string' ? description : description()}`);
    }
    await delay(intervalMs);
  }
}

function sortedNumbers(value: unknown): number[] {
  return Array.isArray(value) ? value.map(Number).sort((a, b) => a - b) : [];
}

function toReplicaStatus(raw: Record<string, unknown>): ReplicaStatus {
  const leader = Number(raw.leaderOrdinal ?? -1);
  const waiting = raw.waitingReason;
  return {
    ordinal: Number(raw.ordinal),
    role: String(raw.role),
    epoch: Number(raw.epoch),
    leaderOrdinal: leader >= 0 ? leader : null,
    leaderAddress: String(raw.leaderAddress ?? ''),
    lastIndex: Number(raw.lastIndex),
    lastEpoch: Number(raw.lastEpoch),
    commitIndex: Number(raw.commitIndex),
    members: sortedNumbers(raw.members),
    inSync: sortedNumbers(raw.inSync),
    leaseValid: raw.leaseValid === true,
    snapshotting: raw.snapshotting === true,
    waitingReason: typeof waiting === 'string' && waiting !== '' ? waiting : null,
    snapshotBytesReceived: Number(raw.snapshotBytesReceived ?? 0),
    snapshotBytesTotal: Number(raw.snapshotBytesTotal ?? 0),
    raw,
  };
}

/** Loading the proto takes tens of milliseconds: once per test file. */
let chatClientConstructor: grpc.ServiceClientConstructor | undefined;
/** A plain grpc-js ChatService client, insecure, with a short reconnect backoff. */
export function chatServiceClient(address: string): grpc.Client {
  chatClientConstructor ??= chatServiceClientConstructor();
  return new chatClientConstructor(address, grpc.credentials.createInsecure(), {
    'grpc.initial_reconnect_backoff_ms': 50,
    'grpc.max_reconnect_backoff_ms': 250,
  });
}

type UnaryCall = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: unknown) => void,
) => void;

/** One unary call with a deadline; rejects with the grpc.ServiceError. */
export function callUnary(client: grpc.Client, method: string, request: object, metadata: grpc.Metadata, deadlineMs: number): Promise<unknown> {
  const call = (client as unknown as Record<string, UnaryCall>)[method]!.bind(client);
  return new Promise((resolve, reject) =>
    call(request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) => (error === null ? resolve(response) : reject(error))),
  );
}

export class NetnsCluster {
  private readonly replicas: Replica[];
  private destroyed = false;
  /** Exits that no kill or stop asked for (an assertion failure crashes a replica, for example). */
  private readonly crashes: string[] = [];
  private storeReader: EtcdConfigurationStore | undefined;
  /** The cluster CA and each replica's peer certificate (chat-N.chat-peers): the peer port is mutual TLS. */
  private peerCertificatesValue: PeerCertificates | undefined;

  private constructor(
    readonly hosts: NetnsHosts,
    /** Holds replica-i/ for every replica, and etcd/; removed by destroy(). */
    readonly dataRoot: string,
    /** The configuration store every replica uses. */
    readonly etcd: BridgeEtcd,
    private readonly options: ClusterOptions,
  ) {
    this.replicas = Array.from({ length: hosts.count }, () => ({
      child: undefined,
      exited: undefined,
      paused: false,
      exitExpected: false,
      incarnation: 0,
      logs: [],
      stderr: '',
      statusClient: undefined,
      peers: undefined,
      smallDisk: false,
    }));
  }

  static async create(options: ClusterOptions): Promise<NetnsCluster> {
    const hosts = await createHosts(options.prefix, options.size ?? 3);
    const dataRoot = mkdtempSync(join(tmpdir(), `replichat-netns-${options.prefix}-`));
    let etcd: BridgeEtcd;
    try {
      etcd = await startEtcdOnBridge(hosts.bridgeAddress, join(dataRoot, 'etcd'), `etcd-${options.prefix}`);
    } catch (error) {
      await hosts.destroy();
      rmSync(dataRoot, { recursive: true, force: true });
      throw error;
    }
    return new NetnsCluster(hosts, dataRoot, etcd, options);
  }

  get size(): number {
    return this.replicas.length;
  }

  get ordinals(): number[] {
    return this.replicas.map((_, index) => index);
  }

  /** Where the test process reaches replica i's client service. */
  clientAddress(index: number): string {
    return `${this.hosts.address(index)}:${CLIENT_PORT}`;
  }

  /** The client addresses of the given replicas (all by default), for ChatClient's server list. */
  clientServers(indexes: readonly number[] = this.ordinals): string[] {
    return indexes.map((index) => this.clientAddress(index));
  }

  /** The peer certificates, made on first use in the data root. */
  get peerCertificates(): PeerCertificates {
    this.peerCertificatesValue ??= makePeerCertificates(join(this.dataRoot, 'peer-certs'));
    return this.peerCertificatesValue;
  }

  /** The peer address replicas use for replica i: its StatefulSet-style name, resolved inside every host. */
  peerAddress(index: number): string {
    return `${this.hosts.hostName(index)}:${PEER_PORT}`;
  }

  dataDirectory(index: number): string {
    return join(this.dataRoot, `replica-${index}`);
  }

  databasePath(index: number): string {
    return join(this.dataDirectory(index), 'replichat.sqlite');
  }

  /** True while replica i's process exists (paused or not). */
  isRunning(index: number): boolean {
    const child = this.replica(index).child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** Replicas that run and are not paused: those expected to answer. */
  live(): number[] {
    return this.ordinals.filter((index) => this.isRunning(index) && !this.replica(index).paused);
  }

  /** Every log line replica i wrote, across its restarts, in order. */
  logs(index: number): readonly LogLine[] {
    return this.replica(index).logs;
  }

  incarnation(index: number): number {
    return this.replica(index).incarnation;
  }

  /** The flags every replica gets for the configuration store. */
  private storeArguments(): string[] {
    return ['--configuration-store', 'etcd', '--etcd-endpoints', this.etcd.endpoint, '--etcd-prefix', ETCD_PREFIX, '--cluster-name', CLUSTER_NAME];
  }

  /**
   * Starts replica i on its data directory with `--peers` naming `peers` (every host by default, or the
   * peers of its previous start), and resolves with its `serving` log line.
   */
  async start(index: number, peers?: readonly number[]): Promise<LogLine> {
    if (this.destroyed) throw new Error('the cluster was destroyed');
    if (this.isRunning(index)) throw new Error(`replica ${index} is already running`);
    const replica = this.replica(index);
    const peerOrdinals = peers ?? replica.peers ?? this.ordinals;
    replica.peers = peerOrdinals;
    replica.incarnation += 1;
    replica.paused = false;
    replica.exitExpected = false;
    const incarnation = replica.incarnation;
    mkdirSync(this.dataDirectory(index), { recursive: true });
    const child = this.hosts.spawnIn(
      index,
      process.execPath,
      [
        CLI_PATH, 'server',
        '--ordinal', String(index),
        '--peers', peerOrdinals.map((ordinal) => `${ordinal}=${this.peerAddress(ordinal)}`).join(','),
        '--listen', `0.0.0.0:${CLIENT_PORT}`,
        '--peer-listen', `0.0.0.0:${PEER_PORT}`,
        '--metrics-listen', `0.0.0.0:${METRICS_PORT}`,
        '--advertise-address', this.clientAddress(index),
        '--insecure',
        '--data-dir', this.dataDirectory(index),
        ...this.peerCertificates.serverArguments(index),
        ...this.storeArguments(),
        // A tenth of OWASP's scrypt cost, as every test cluster (test/support/processes.ts says why).
        '--password-hash-cost-log2', '14',
        ...(this.options.extraArguments ?? []),
        ...(this.options.argumentsFor?.(index) ?? []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnvironment(this.options.environment ?? {}) },
    );
    replica.child = child;
    replica.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        if (!replica.exitExpected && !this.destroyed) {
          this.crashes.push(`replica ${index} (incarnation ${incarnation}) exited by itself: ${code ?? signal}`);
        }
        resolve({ code, signal });
      }),
    );
    let buffered = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          replica.logs.push({ ...(JSON.parse(line) as Record<string, unknown>), incarnation });
        } catch {
          replica.logs.push({ msg: '(not JSON)', text: line, incarnation });
        }
      }
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      replica.stderr += chunk;
    });
    return pollUntil(
      `replica ${index} logs 'serving'`,
      () => {
        const serving = replica.logs.find((line) => line.incarnation === incarnation && line.msg === 'serving');
        if (serving !== undefined) return serving;
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`replica ${index} exited (${child.exitCode ?? child.signalCode}) before serving\n${this.describeReplica(index)}`);
        }
        return undefined;
      },
      START_TIMEOUT_MS,
      10,
    );
  }

  /** Starts the given replicas (all by default) at once. */
  async startAll(indexes: readonly number[] = this.ordinals, peers?: readonly number[]): Promise<void> {
    await Promise.all(indexes.map((index) => this.start(index, peers)));
  }

  /** Sends `signal` (SIGKILL by default) to replica i and waits for its exit. */
  async kill(index: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitResult> {
    const replica = this.replica(index);
    if (!this.isRunning(index)) throw new Error(`replica ${index} is not running`);
    replica.exitExpected = true;
    replica.child!.kill(signal);
    // A paused process receives SIGTERM only once it runs again; SIGKILL needs no help.
    if (replica.paused && signal !== 'SIGKILL') replica.child!.kill('SIGCONT');
    replica.paused = false;
    return this.awaitExit(index);
  }

  /** Signals (SIGKILL by default) several replicas in the same instant, then waits for all of them to exit. */
  async killTogether(indexes: readonly number[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    for (const index of indexes) {
      if (!this.isRunning(index)) throw new Error(`replica ${index} is not running`);
      this.replica(index).exitExpected = true;
    }
    for (const index of indexes) {
      const replica = this.replica(index);
      replica.child!.kill(signal);
      if (replica.paused && signal !== 'SIGKILL') replica.child!.kill('SIGCONT');
      replica.paused = false;
    }
    await Promise.all(indexes.map((index) => this.awaitExit(index)));
  }

  /** A clean stop: SIGTERM, then waits for the exit; resolves with the exit code (0 when clean). */
  async stop(index: number): Promise<number | null> {
    const result = await this.kill(index, 'SIGTERM');
    return result.code;
  }

  /** Stops every running replica cleanly, in parallel; resolves with their exit codes by ordinal (null: not running). */
  async stopAll(): Promise<(number | null)[]> {
    return Promise.all(this.ordinals.map((index) => (this.isRunning(index) ? this.stop(index) : Promise.resolve(null))));
  }

  /**
   * Says that replica i is about to exit by itself (a failed disk, for example), so that its exit is not
   * reported as a crash; resolves with how it exited, within `timeoutMs`.
   */
  async expectExit(index: number, timeoutMs = EXIT_TIMEOUT_MS): Promise<ExitResult> {
    this.replica(index).exitExpected = true;
    return this.awaitExit(index, timeoutMs);
  }

  /** SIGSTOP: the replica stops running at once, holding its sockets and state. */
  pause(index: number): void {
    this.replica(index).child!.kill('SIGSTOP');
    this.replica(index).paused = true;
  }

  /** SIGCONT after pause(). */
  resume(index: number): void {
    this.replica(index).child!.kill('SIGCONT');
    this.replica(index).paused = false;
  }

  /** Deletes replica i's data directory: a lost disk. The replica must be stopped. */
  wipe(index: number): void {
    if (this.isRunning(index)) throw new Error(`replica ${index} must be stopped before its disk is wiped`);
    rmSync(this.dataDirectory(index), { recursive: true, force: true });
  }

  /**
   * Puts replica i's data directory on a tmpfs of `sizeBytes` (before its first start), so that
   * `fillDisk` can make its disk full. The mount is made in the root namespace before the replica's
   * `ip netns exec`, whose new mount namespace starts as a copy and so sees it.
   */
  useSmallDisk(index: number, sizeBytes: number): void {
    if (this.isRunning(index)) throw new Error(`replica ${index} must be stopped before its disk is replaced`);
    mkdirSync(this.dataDirectory(index), { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, `replichat-${this.hosts.prefix}-${index}`, this.dataDirectory(index)]);
    this.replica(index).smallDisk = true;
  }

  /** Fills replica i's small disk (useSmallDisk) with a file until no byte is left; resolves with the bytes written. */
  fillDisk(index: number): number {
    if (!this.replica(index).smallDisk) throw new Error(`replica ${index} has no small disk`);
    const descriptor = openSync(join(this.dataDirectory(index), 'filler'), 'w');
    const chunk = Buffer.alloc(64 * 1024, 0xaa);
    let written = 0;
    try {
      for (let size = chunk.length; size >= 1; ) {
        try {
          written += writeSync(descriptor, chunk, 0, size);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
          // Smaller and smaller writes take the last partial page too.
          size = Math.floor(size / 2);
        }
      }
    } finally {
      closeSync(descriptor);
    }
    return written;
  }

  private unmountSmallDisks(): void {
    for (const index of this.ordinals) {
      if (!this.replica(index).smallDisk) continue;
      // Lazy, so that a file a dying process still holds open does not keep the mount.
      spawnSync('umount', ['-l', this.dataDirectory(index)]);
      this.replica(index).smallDisk = false;
    }
  }

  private async awaitExit(index: number, timeoutMs = EXIT_TIMEOUT_MS): Promise<ExitResult> {
    const replica = this.replica(index);
    if (replica.exited === undefined) throw new Error(`replica ${index} was never started`);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        replica.exited,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`replica ${index} did not exit within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves with the first log line of replica i (any incarnation) that satisfies `predicate`. */
  waitForLog(
    index: number,
    predicate: (line: LogLine) => boolean,
    options: { description: string; timeoutMs: number },
  ): Promise<LogLine> {
    return pollUntil(options.description, () => this.replica(index).logs.find(predicate), options.timeoutMs, 10);
  }

  /** Replica i's GetReplicaStatus, or undefined when it does not answer within PROBE_TIMEOUT_MS. */
  async status(index: number): Promise<ReplicaStatus | undefined> {
    if (!this.isRunning(index)) return undefined;
    const replica = this.replica(index);
    if (replica.statusClient?.incarnation !== replica.incarnation) {
      replica.statusClient?.client.close();
      replica.statusClient = { incarnation: replica.incarnation, client: chatServiceClient(this.clientAddress(index)) };
    }
    try {
      const raw = await callUnary(replica.statusClient.client, 'GetReplicaStatus', {}, new grpc.Metadata(), PROBE_TIMEOUT_MS);
      return toReplicaStatus(raw as Record<string, unknown>);
    } catch {
      return undefined;
    }
  }

  /** The status of each replica in `indexes` (the live ones by default), undefined where there is no answer. */
  async statuses(indexes: readonly number[] = this.live()): Promise<Map<number, ReplicaStatus | undefined>> {
    const answers = await Promise.all(indexes.map((index) => this.status(index)));
    return new Map(indexes.map((index, position) => [index, answers[position]]));
  }

  /**
   * Waits until one of `among` (the live replicas by default) leads, every other one follows it in its
   * epoch, and `condition` holds of the leader's status; resolves with that status.
   */
  async waitForLeader(
    description: string,
    condition: (leader: ReplicaStatus) => boolean = () => true,
    options: { among?: readonly number[]; timeoutMs?: number } = {},
  ): Promise<ReplicaStatus> {
    let last = '';
    return pollUntil(
      () => `${description}; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(options.among ?? this.live());
        last = NetnsCluster.summarise(statuses);
        const answers = [...statuses.values()];
        if (answers.length === 0 || answers.some((status) => status === undefined)) return undefined;
        const leaders = (answers as ReplicaStatus[]).filter((status) => status.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const leader = leaders[0]!;
        const followed = (answers as ReplicaStatus[]).every(
          (status) => status === leader || (status.leaderOrdinal === leader.ordinal && status.epoch === leader.epoch),
        );
        return followed && condition(leader) ? leader : undefined;
      },
      options.timeoutMs ?? 15_000,
    );
  }

  /** The ordinal of the one leader among `among` (the live replicas by default) that the others follow. */
  async leader(options: { among?: readonly number[]; timeoutMs?: number } = {}): Promise<number> {
    const among = options.among ?? this.live();
    return (await this.waitForLeader(`one leader among ${JSON.stringify(among)} that the others follow`, () => true, { ...options, among })).ordinal;
  }

  /**
   * Waits until the leader's in-sync set is exactly `members` (every replica by default) and every member
   * holds, and knows as committed, all of the leader's log: the cluster is quiet and converged. Resolves
   * with the leader's status.
   */
  async waitUntilCaughtUp(members: readonly number[] = this.ordinals, timeoutMs = 15_000): Promise<ReplicaStatus> {
    const expected = JSON.stringify([...members].sort((a, b) => a - b));
    let last = '';
    return pollUntil(
      () => `replicas ${expected} are in sync and caught up; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(members);
        last = NetnsCluster.summarise(statuses);
        const answers = [...statuses.values()];
        if (answers.some((status) => status === undefined)) return undefined;
        const leaders = (answers as ReplicaStatus[]).filter((status) => status.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const leader = leaders[0]!;
        if (JSON.stringify(leader.inSync) !== expected || leader.commitIndex !== leader.lastIndex) return undefined;
        // The in-sync set is the leader's (and the store's) to say; a follower's status may show an older one.
        const caughtUp = (answers as ReplicaStatus[]).every(
          (status) =>
            status.epoch === leader.epoch &&
            status.lastIndex === leader.lastIndex &&
            status.commitIndex === leader.lastIndex,
        );
        return caughtUp ? leader : undefined;
      },
      timeoutMs,
    );
  }

  /**
   * Waits until `members` are caught up (waitUntilCaughtUp), then SIGKILLs every running replica in the
   * same instant, so that their files hold exactly the converged state for digests and message ids. A clean
   * stop of every replica would not do: the last one still running takes over from those that left and
   * writes entries the others never see.
   */
  async haltConverged(members: readonly number[] = this.ordinals, timeoutMs = 15_000): Promise<void> {
    await this.waitUntilCaughtUp(members, timeoutMs);
    await this.killTogether(this.ordinals.filter((index) => this.isRunning(index)));
  }

  /** waitUntilCaughtUp, resolving with the leader's ordinal. */
  async waitUntilInSync(members: readonly number[] = this.ordinals, timeoutMs = 15_000): Promise<number> {
    return (await this.waitUntilCaughtUp(members, timeoutMs)).ordinal;
  }

  /**
   * Waits until a leader among `members` reports exactly `members` as its in-sync set and the other members
   * follow it, without waiting for them to hold the same log (writes may go on); resolves with its status.
   */
  waitForInSyncSet(members: readonly number[] = this.ordinals, timeoutMs = 15_000): Promise<ReplicaStatus> {
    const expected = JSON.stringify([...members].sort((a, b) => a - b));
    return this.waitForLeader(`the leader's in-sync set is ${expected}`, (leader) => JSON.stringify(leader.inSync) === expected, {
      among: members,
      timeoutMs,
    });
  }

  /** GET /readyz of replica i: its HTTP status and body. */
  async readyz(index: number): Promise<{ status: number; body: string }> {
    const response = await fetch(`http://${this.hosts.address(index)}:${METRICS_PORT}/readyz`, {
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS * 2),
    });
    return { status: response.status, body: await response.text() };
  }

  /** The value of one unlabelled metric in replica i's /metrics, or undefined when absent. */
  async metric(index: number, name: string): Promise<number | undefined> {
    const response = await fetch(`http://${this.hosts.address(index)}:${METRICS_PORT}/metrics`, {
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS * 4),
    });
    const text = await response.text();
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.slice(name.length + 1));
  }

  /** The record the configuration store holds now (read through the server's own etcd backend), or null. */
  async storeRecord(): Promise<ClusterRecord | null> {
    this.storeReader ??= new EtcdConfigurationStore({ endpoints: [this.etcd.endpoint], prefix: ETCD_PREFIX, clusterName: CLUSTER_NAME });
    return (await this.storeReader.read())?.record ?? null;
  }

  /** Writes `record` as the store's first record (as replica 0 would when it creates the cluster). */
  async createStoreRecord(record: ClusterRecord): Promise<void> {
    this.storeReader ??= new EtcdConfigurationStore({ endpoints: [this.etcd.endpoint], prefix: ETCD_PREFIX, clusterName: CLUSTER_NAME });
    const outcome = await this.storeReader.compareAndSwap(null, record);
    if (!outcome.swapped) throw new Error(`the store already holds a record: ${JSON.stringify(outcome.current)}`);
  }

  /**
   * Partitions replica i from the replicas `from` in both directions, and also from the store unless
   * `keepStore`; everyone else (the clients in the root namespace included) still reaches it. `heal` ends it.
   */
  async partition(index: number, options: { from: readonly number[]; keepStore?: boolean }): Promise<void> {
    const ports = options.keepStore === true ? [] : [{ address: this.etcd.address, port: this.etcd.port }];
    await this.hosts.cut(index, { addresses: options.from.map((other) => this.hosts.address(other)), ports });
  }

  /** Ends `partition` of replica i. */
  async heal(index: number): Promise<void> {
    await this.hosts.uncut(index);
  }

  /** Opens replica i's database read-only; the replica must be stopped. */
  private openStopped(index: number): Database.Database {
    if (this.isRunning(index)) throw new Error(`replica ${index} must be stopped before its file is read`);
    return new Database(this.databasePath(index), { readonly: true, fileMustExist: true });
  }

  /** The state digest of replica i's file (src/storage/state-digest.ts); the replica must be stopped. */
  digest(index: number): string {
    const database = this.openStopped(index);
    try {
      return computeStateDigest(database);
    } finally {
      database.close();
    }
  }

  /** The state digest of each of `indexes` (every replica by default); they must be stopped. */
  digests(indexes: readonly number[] = this.ordinals): string[] {
    return indexes.map((index) => this.digest(index));
  }

  /** The ids of every message in replica i's file; the replica must be stopped. */
  messageIds(index: number): Set<string> {
    const database = this.openStopped(index);
    try {
      return new Set((database.prepare('SELECT id FROM messages').all() as { id: string }[]).map((row) => row.id));
    } finally {
      database.close();
    }
  }

  /** The epochs in which replica i logged 'became the leader'. */
  leaderEpochs(index: number): number[] {
    return this.logs(index)
      .filter((line) => line.msg === 'became the leader')
      .map((line) => Number(line.epoch));
  }

  /** Who became the leader in which epoch, in time order, from the replicas' logs: "0@1, 2@2". */
  leaderHistory(): string {
    return this.ordinals
      .flatMap((index) => this.logs(index).filter((line) => line.msg === 'became the leader').map((line) => ({ index, line })))
      .sort((a, b) => Number(a.line.time) - Number(b.line.time))
      .map(({ index, line }) => `${index}@${String(line.epoch)}`)
      .join(', ');
  }

  /**
   * What went wrong without being asked for: replicas that exited by themselves, log lines at level error
   * or fatal, and anything on stderr, except for the replicas in `except` (one whose failure the test
   * caused). A test that passes with a crashed replica would hide a bug.
   */
  problems(except: readonly number[] = []): string[] {
    const found = this.crashes.filter((crash) => !except.some((index) => crash.startsWith(`replica ${index} `)));
    for (const index of this.ordinals) {
      if (except.includes(index)) continue;
      const replica = this.replica(index);
      for (const line of replica.logs) {
        if (typeof line.level === 'number' && line.level >= 50) found.push(`replica ${index} logged: ${JSON.stringify(line)}`);
      }
      if (replica.stderr.trim() !== '') found.push(`replica ${index} wrote to stderr: ${replica.stderr.trim().slice(-2000)}`);
    }
    return found;
  }

  static summarise(statuses: Map<number, ReplicaStatus | undefined>): string {
    return [...statuses.entries()]
      .map(([index, status]) =>
        status === undefined
          ? `${index}: no answer`
          : `${index}: ${status.role} epoch ${status.epoch} leader ${status.leaderOrdinal} last ${status.lastIndex} ` +
            `commit ${status.commitIndex} members [${status.members.join(',')}] inSync [${status.inSync.join(',')}]` +
            (status.snapshotting ? ` snapshotting ${status.snapshotBytesReceived}/${status.snapshotBytesTotal}` : '') +
            (status.waitingReason === null ? '' : ` waiting: ${status.waitingReason}`),
      )
      .join('; ');
  }

  private describeReplica(index: number, lines = 40): string {
    const replica = this.replica(index);
    const tail = replica.logs.slice(-lines).map((line) => JSON.stringify(line));
    const stderr = replica.stderr.trim();
    return [
      `--- replica ${index} (incarnation ${replica.incarnation}, ${this.isRunning(index) ? 'running' : 'not running'}) ---`,
      ...tail,
      ...(stderr === '' ? [] : ['stderr:', stderr.slice(-4000)]),
    ].join('\n');
  }

  /** The last log lines and stderr of every replica, for a failure message. */
  describe(lines = 40): string {
    return this.ordinals.map((index) => this.describeReplica(index, lines)).join('\n');
  }

  /** Kills every replica and the store, removes the hosts, small disks and data directories. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const replica of this.replicas) {
      replica.statusClient?.client.close();
      replica.statusClient = undefined;
    }
    await this.storeReader?.close().catch(() => undefined);
    await this.hosts.destroy();
    await this.etcd.stop();
    this.unmountSmallDisks();
    rmSync(this.dataRoot, { recursive: true, force: true });
  }

  private replica(index: number): Replica {
    const replica = this.replicas[index];
    if (replica === undefined) throw new RangeError(`no replica ${index}`);
    return replica;
  }
}
