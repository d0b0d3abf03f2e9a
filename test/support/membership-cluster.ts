/**
 * Harness for the membership tests (test/membership-netns.test.ts): replicas of real `replichat server`
 * processes, each in its own network namespace (netns.ts), where every replica is started with its own
 * static peer list. netns-cluster.ts gives every replica the same list, the whole cluster; a membership test
 * needs the original replicas to know only each other (0..2) while a joiner knows 0..3, which is what
 * `start(index, peers)` allows.
 *
 * Also here: building a replica's database offline (seedDatabase), so that a test can start from a log of
 * tens of thousands of entries without sending them; a stream of sends that records when each one was
 * acknowledged (SendStream); and the operator's RemoveMember call made with plain grpc-js
 * (callRemoveMember), so that the test sees the status and metadata exactly as a server sent them.
 *
 * Replica status comes from ChatService.GetReplicaStatus on each replica's client port, with a grpc client
 * made per incarnation, so that a restarted replica is not hidden behind a reconnect backoff. Conditions are
 * awaited by polling with a deadline, never by sleeping.
 */
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { hashPassword } from '../../src/api/password-hashing.js';
import { chatServiceClientConstructor } from '../../src/api/proto.js';
import { LEADER_METADATA_KEY } from '../../src/api/status-mapping.js';
import { ChatClient } from '../../src/cli/chat-client.js';
import type { Command } from '../../src/core/commands.js';
import { epochFor, type Member } from '../../src/core/replication/types.js';
import { ReplicaStore } from '../../src/storage/replica-store.js';
import { computeStateDigest } from '../../src/storage/state-digest.js';
import { cliEnvironment } from './cli-processes.js';
import { createHosts, type NetnsHosts } from './netns.js';
import { CLI_PATH } from './processes.js';

export const CLIENT_PORT = 50051;
export const PEER_PORT = 50052;
export const METRICS_PORT = 9100;

/** From spawn to the `serving` line: node start-up, opening SQLite, three listeners. */
const START_TIMEOUT_MS = 15_000;
/** SIGTERM waits for in-flight calls (5 s grace at most), so a clean stop may take that long. */
const EXIT_TIMEOUT_MS = 10_000;
/** One status or HTTP probe; a dead replica must not stall a poll. */
const PROBE_TIMEOUT_MS = 500;
const POLL_INTERVAL_MS = 25;

export const PASSWORD = 'correct horse battery staple';

/** One JSON log line of a replica, tagged with the incarnation (1 for the first start) that wrote it. */
export type LogLine = Record<string, unknown> & { readonly incarnation: number; readonly msg?: string };

/** A replica's own view of itself, from GetReplicaStatus, with -1 and '' turned into null. */
export interface MemberStatus {
  readonly ordinal: number;
  readonly role: string;
  readonly epoch: number;
  readonly leaderOrdinal: number | null;
  readonly leaderAddress: string;
  readonly lastIndex: number;
  readonly commitIndex: number;
  readonly members: readonly number[];
  readonly inSync: readonly number[];
  readonly leaseValid: boolean;
  readonly snapshotting: boolean;
  readonly waitingReason: string | null;
  readonly snapshotBytesReceived: number;
  readonly snapshotBytesTotal: number;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it returns something other than undefined or false; fails after `timeoutMs`. */
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

function toMemberStatus(raw: Record<string, unknown>): MemberStatus {
  const leader = Number(raw.leaderOrdinal ?? -1);
  const waiting = raw.waitingReason;
  return {
    ordinal: Number(raw.ordinal),
    role: String(raw.role),
    epoch: Number(raw.epoch),
    leaderOrdinal: leader >= 0 ? leader : null,
    leaderAddress: String(raw.leaderAddress ?? ''),
    lastIndex: Number(raw.lastIndex),
    commitIndex: Number(raw.commitIndex),
    members: sortedNumbers(raw.members),
    inSync: sortedNumbers(raw.inSync),
    leaseValid: raw.leaseValid === true,
    snapshotting: raw.snapshotting === true,
    waitingReason: typeof waiting === 'string' && waiting !== '' ? waiting : null,
    snapshotBytesReceived: Number(raw.snapshotBytesReceived ?? 0),
    snapshotBytesTotal: Number(raw.snapshotBytesTotal ?? 0),
  };
}

/** Loading the proto takes tens of milliseconds: once per test file. */
let chatClientConstructor: grpc.ServiceClientConstructor | undefined;
function chatServiceClient(address: string): grpc.Client {
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

function callUnary(client: grpc.Client, method: string, request: object, metadata: grpc.Metadata, deadlineMs: number): Promise<unknown> {
  const call = (client as unknown as Record<string, UnaryCall>)[method]!.bind(client);
  return new Promise((resolve, reject) =>
    call(request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) => (error === null ? resolve(response) : reject(error))),
  );
}

/** How a RemoveMember call ended: OK, or the status code, details and any `replichat-leader` metadata. */
export interface RemoveMemberOutcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly leaderAddress: string | undefined;
}

/** Calls RemoveMember({ordinal}) on the replica at `address` with `authorization: Bearer <token>`. */
export async function callRemoveMember(address: string, ordinal: number, token: string | undefined): Promise<RemoveMemberOutcome> {
  const client = chatServiceClient(address);
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  try {
    await callUnary(client, 'RemoveMember', { ordinal }, metadata, 5_000);
    return { code: grpc.status.OK, details: '', leaderAddress: undefined };
  } catch (error) {
    const serviceError = error as grpc.ServiceError;
    const leader = serviceError.metadata?.get(LEADER_METADATA_KEY)[0];
    return {
      code: serviceError.code,
      details: serviceError.details,
      leaderAddress: typeof leader === 'string' ? leader : undefined,
    };
  } finally {
    client.close();
  }
}

interface Replica {
  child: ChildProcess | undefined;
  exited: Promise<void> | undefined;
  /** Set before a kill or stop, so that any other exit counts as a crash. */
  exitExpected: boolean;
  incarnation: number;
  readonly logs: LogLine[];
  stderr: string;
  statusClient: { incarnation: number; client: grpc.Client } | undefined;
}

export interface MembershipClusterOptions {
  /** The hosts' prefix (see createHosts): unique per test and run. */
  readonly prefix: string;
  /** How many hosts (replica slots) to make. */
  readonly hosts: number;
  /** Extra `replichat server` flags for every replica. */
  readonly extraArguments?: readonly string[];
}

export class MembershipCluster {
  private readonly replicas: Replica[];
  /** The peer ordinals each replica was last started with, reused by restart(). */
  private readonly peerOrdinals = new Map<number, readonly number[]>();
  private readonly crashes: string[] = [];
  private destroyed = false;

  private constructor(
    readonly hosts: NetnsHosts,
    /** Holds replica-i/ for every replica; removed by destroy(). */
    readonly dataRoot: string,
    private readonly extraArguments: readonly string[],
  ) {
    this.replicas = Array.from({ length: hosts.count }, () => ({
      child: undefined,
      exited: undefined,
      exitExpected: false,
      incarnation: 0,
      logs: [],
      stderr: '',
      statusClient: undefined,
    }));
  }

  static async create(options: MembershipClusterOptions): Promise<MembershipCluster> {
    const hosts = await createHosts(options.prefix, options.hosts);
    const dataRoot = mkdtempSync(join(tmpdir(), `replichat-membership-${options.prefix}-`));
    return new MembershipCluster(hosts, dataRoot, options.extraArguments ?? []);
  }

  get ordinals(): number[] {
    return this.replicas.map((_, index) => index);
  }

  /** Where the test process reaches replica i's client service (through the bridge). */
  clientAddress(index: number): string {
    return `${this.hosts.address(index)}:${CLIENT_PORT}`;
  }

  clientServers(indexes: readonly number[] = this.ordinals): string[] {
    return indexes.map((index) => this.clientAddress(index));
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

  isRunning(index: number): boolean {
    const child = this.replica(index).child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  live(): number[] {
    return this.ordinals.filter((index) => this.isRunning(index));
  }

  logs(index: number): readonly LogLine[] {
    return this.replica(index).logs;
  }

  incarnation(index: number): number {
    return this.replica(index).incarnation;
  }

  /**
   * Starts replica i with `--peers` naming exactly `peers` (their ordinals), and resolves once it logs
   * `serving`. Without `peers`, the list of its previous start is used.
   */
  async start(index: number, peers?: readonly number[]): Promise<void> {
    if (this.destroyed) throw new Error('the cluster was destroyed');
    if (this.isRunning(index)) throw new Error(`replica ${index} is already running`);
    const peerOrdinals = peers ?? this.peerOrdinals.get(index);
    if (peerOrdinals === undefined) throw new Error(`replica ${index} was never started: name its peers`);
    this.peerOrdinals.set(index, peerOrdinals);
    const replica = this.replica(index);
    replica.incarnation += 1;
    replica.exitExpected = false;
    const incarnation = replica.incarnation;
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
        ...this.extraArguments,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnvironment() },
    );
    replica.child = child;
    replica.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        if (!replica.exitExpected && !this.destroyed) {
          this.crashes.push(`replica ${index} (incarnation ${incarnation}) exited by itself: ${code ?? signal}`);
        }
        resolve();
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
    await pollUntil(
      `replica ${index} logs 'serving'`,
      () => {
        if (replica.logs.some((line) => line.incarnation === incarnation && line.msg === 'serving')) return true;
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`replica ${index} exited (${child.exitCode ?? child.signalCode}) before serving\n${this.describeReplica(index)}`);
        }
        return undefined;
      },
      START_TIMEOUT_MS,
      10,
    );
  }

  /** Sends `signal` (SIGKILL by default) to replica i and waits for it to exit. */
  async kill(index: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.killTogether([index], signal);
  }

  /** Signals several replicas in the same instant, then waits for all of them to exit. */
  async killTogether(indexes: readonly number[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    for (const index of indexes) {
      if (!this.isRunning(index)) throw new Error(`replica ${index} is not running`);
      this.replica(index).exitExpected = true;
    }
    for (const index of indexes) this.replica(index).child!.kill(signal);
    await Promise.all(indexes.map((index) => this.awaitExit(index)));
  }

  /** A clean stop of every running replica (SIGTERM), in parallel. */
  async stopAll(): Promise<void> {
    await this.killTogether(this.live(), 'SIGTERM');
  }

  /** Deletes replica i's data directory: a lost disk. The replica must be stopped. */
  wipe(index: number): void {
    if (this.isRunning(index)) throw new Error(`replica ${index} must be stopped before its disk is wiped`);
    rmSync(this.dataDirectory(index), { recursive: true, force: true });
  }

  private async awaitExit(index: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.replica(index).exited!,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`replica ${index} did not exit within ${EXIT_TIMEOUT_MS} ms`)), EXIT_TIMEOUT_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves with the first log line of replica i that satisfies `predicate`. */
  waitForLog(index: number, predicate: (line: LogLine) => boolean, description: string, timeoutMs: number): Promise<LogLine> {
    return pollUntil(description, () => this.replica(index).logs.find(predicate), timeoutMs, 10);
  }

  /** Replica i's GetReplicaStatus, or undefined when it does not answer within PROBE_TIMEOUT_MS. */
  async status(index: number): Promise<MemberStatus | undefined> {
    if (!this.isRunning(index)) return undefined;
    const replica = this.replica(index);
    if (replica.statusClient?.incarnation !== replica.incarnation) {
      replica.statusClient?.client.close();
      replica.statusClient = { incarnation: replica.incarnation, client: chatServiceClient(this.clientAddress(index)) };
    }
    try {
      const raw = await callUnary(replica.statusClient.client, 'GetReplicaStatus', {}, new grpc.Metadata(), PROBE_TIMEOUT_MS);
      return toMemberStatus(raw as Record<string, unknown>);
    } catch {
      return undefined;
    }
  }

  async statuses(indexes: readonly number[] = this.live()): Promise<Map<number, MemberStatus | undefined>> {
    const answers = await Promise.all(indexes.map((index) => this.status(index)));
    return new Map(indexes.map((index, position) => [index, answers[position]]));
  }

  /**
   * Waits until one of `among` (the running replicas by default) leads and the others follow it in its
   * epoch, and `condition` holds of the leader's status; resolves with that status.
   */
  async waitForLeader(
    description: string,
    condition: (leader: MemberStatus) => boolean = () => true,
    options: { among?: readonly number[]; timeoutMs?: number } = {},
  ): Promise<MemberStatus> {
    let last = '';
    return pollUntil(
      () => `${description}; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(options.among ?? this.live());
        last = MembershipCluster.summarise(statuses);
        const answers = [...statuses.values()];
        if (answers.some((status) => status === undefined)) return undefined;
        const leaders = (answers as MemberStatus[]).filter((status) => status.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const leader = leaders[0]!;
        const followed = (answers as MemberStatus[]).every(
          (status) => status === leader || (status.leaderOrdinal === leader.ordinal && status.epoch === leader.epoch),
        );
        return followed && condition(leader) ? leader : undefined;
      },
      options.timeoutMs ?? 15_000,
    );
  }

  /** Waits until the leader's in-sync set is exactly `members` (writes may go on); resolves with the leader. */
  waitForInSyncSet(members: readonly number[], timeoutMs = 15_000): Promise<MemberStatus> {
    const expected = JSON.stringify([...members].sort((a, b) => a - b));
    return this.waitForLeader(`the leader's in-sync set is ${expected}`, (leader) => JSON.stringify(leader.inSync) === expected, {
      among: members,
      timeoutMs,
    });
  }

  /**
   * Waits until the leader's in-sync set is exactly `members` and every one of them holds, and knows as
   * committed, all of the leader's log: the cluster is quiet and converged. Resolves with the leader.
   */
  async waitUntilCaughtUp(members: readonly number[], timeoutMs = 15_000): Promise<MemberStatus> {
    const expected = JSON.stringify([...members].sort((a, b) => a - b));
    let last = '';
    return pollUntil(
      () => `replicas ${expected} are in sync and caught up; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(members);
        last = MembershipCluster.summarise(statuses);
        const answers = [...statuses.values()];
        if (answers.some((status) => status === undefined)) return undefined;
        const leaders = (answers as MemberStatus[]).filter((status) => status.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const leader = leaders[0]!;
        if (JSON.stringify(leader.inSync) !== expected || leader.commitIndex !== leader.lastIndex) return undefined;
        const caughtUp = (answers as MemberStatus[]).every(
          (status) =>
            status.epoch === leader.epoch &&
            status.lastIndex === leader.lastIndex &&
            status.commitIndex === leader.lastIndex &&
            JSON.stringify(status.inSync) === expected,
        );
        return caughtUp ? leader : undefined;
      },
      timeoutMs,
    );
  }

  /** GET /readyz of replica i. */
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

  /** The ids of every message in replica i's file; the replica must be stopped. */
  messageIds(index: number): Set<string> {
    const database = this.openStopped(index);
    try {
      return new Set((database.prepare('SELECT id FROM messages').all() as { id: string }[]).map((row) => row.id));
    } finally {
      database.close();
    }
  }

  /**
   * What went wrong without being asked for: replicas that exited by themselves, log lines at level error
   * or fatal, anything on stderr. A test that passes while a replica crashed would hide a bug.
   */
  problems(): string[] {
    const found = [...this.crashes];
    for (const index of this.ordinals) {
      const replica = this.replica(index);
      for (const line of replica.logs) {
        if (typeof line.level === 'number' && line.level >= 50) found.push(`replica ${index} logged: ${JSON.stringify(line)}`);
      }
      if (replica.stderr.trim() !== '') found.push(`replica ${index} wrote to stderr: ${replica.stderr.trim().slice(-2000)}`);
    }
    return found;
  }

  static summarise(statuses: Map<number, MemberStatus | undefined>): string {
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
    const stderr = replica.stderr.trim();
    return [
      `--- replica ${index} (incarnation ${replica.incarnation}, ${this.isRunning(index) ? 'running' : 'not running'}) ---`,
      ...replica.logs.slice(-lines).map((line) => JSON.stringify(line)),
      ...(stderr === '' ? [] : ['stderr:', stderr.slice(-4000)]),
    ].join('\n');
  }

  /** The last log lines and stderr of every replica, for a failure message. */
  describe(lines = 40): string {
    return this.ordinals.map((index) => this.describeReplica(index, lines)).join('\n');
  }

  /** Kills every replica, removes the hosts and the data directories. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const replica of this.replicas) {
      replica.statusClient?.client.close();
      replica.statusClient = undefined;
    }
    await this.hosts.destroy();
    rmSync(this.dataRoot, { recursive: true, force: true });
  }

  private replica(index: number): Replica {
    const replica = this.replicas[index];
    if (replica === undefined) throw new RangeError(`no replica ${index}`);
    return replica;
  }
}

// -------------------------------------------------------------------------------------------------------
// Offline seeding.

export interface SeedOptions {
  /** The members of the configuration entry; replica 0 is its whole in-sync set. */
  readonly members: readonly Member[];
  readonly messageCount: number;
  /** Bytes of each message body (ASCII); bigger bodies make a bigger snapshot for the same seeding time. */
  readonly bodyBytes?: number;
}

/** A message's id, shaped like the UUIDs the server makes: the seed's n-th message. */
export function seededMessageId(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

/**
 * Builds replica 0's database directly, as the protocol would have left it: `initializeCluster`, a
 * configuration entry (the given members, in-sync set {0}), accounts alice and bob (password PASSWORD), then
 * `messageCount` messages from alice to bob, all in epoch 1024 (counter 1, ordinal 0) and in one transaction,
 * which is what makes it fast: one fsync instead of one per entry. Started, replica 0 elects itself (it is
 * the whole in-sync set) and the other members, started empty, catch up from a snapshot.
 */
export async function seedDatabase(path: string, options: SeedOptions): Promise<{ lastIndex: number; seconds: number }> {
  const startedAtMs = performance.now();
  const epoch = epochFor(1, 0);
  const passwordHashes = { alice: await hashPassword(PASSWORD), bob: await hashPassword(PASSWORD) };
  const body = 'x'.repeat(options.bodyBytes ?? 64);
  const store = ReplicaStore.open(path);
  try {
    // Timestamps never run backwards and end about now, so that the cluster's next ones follow on.
    let timestampMs = Date.now() - options.messageCount - 10;
    const next = (): number => (timestampMs += 1);
    store.database.transaction(() => {
      const append = (command: Command): void => {
        store.appendAndApply(epoch, command);
      };
      append({ kind: 'initializeCluster', clusterId: 'seeded', sessionSecretHex: 'ab'.repeat(32), timestampMs: next() });
      append({
        kind: 'configuration',
        configuration: { members: [...options.members].sort((a, b) => a.ordinal - b.ordinal), inSync: [0] },
        timestampMs: next(),
      });
      for (const username of ['alice', 'bob'] as const) {
        append({
          kind: 'createAccount',
          requestId: `seed-account-${username}`,
          principal: `user:${username}`,
          fingerprint: `seed-account-${username}`,
          timestampMs: next(),
          username,
          passwordHash: passwordHashes[username],
        });
      }
      for (let n = 0; n < options.messageCount; n += 1) {
        append({
          kind: 'sendMessage',
          requestId: `seed-message-${n}`,
          principal: `session:${'0'.repeat(32)}`,
          fingerprint: `seed-message-${n}`,
          timestampMs: next(),
          messageId: seededMessageId(n),
          sender: 'alice',
          recipient: 'bob',
          body: `${n} ${body}`,
          instant: false,
        });
      }
    })();
    return { lastIndex: store.lastIndex, seconds: (performance.now() - startedAtMs) / 1000 };
  } finally {
    store.close();
  }
}

// -------------------------------------------------------------------------------------------------------
// A stream of sends.

export interface Acknowledged {
  readonly id: string;
  readonly body: string;
  /** performance.now() when the call (with all its retries) began, and when it resolved. */
  readonly startedAtMs: number;
  readonly ackedAtMs: number;
}

/**
 * Clients that send messages from alice to bob, each one call at a time, until stopped: the "steady stream"
 * of the membership tests. ChatClient follows the leader and retries a failed call with the same request
 * id, so a failure here means a send failed for good (after about 15 s of retries).
 */
export class SendStream {
  readonly acknowledged: Acknowledged[] = [];
  readonly failures: string[] = [];
  private running = true;
  private readonly clients: ChatClient[];
  private readonly loops: Promise<void>[];

  constructor(servers: readonly string[], sessionToken: string, label: string, concurrency: number) {
    this.clients = Array.from({ length: concurrency }, () => new ChatClient({ servers, tls: 'insecure', sessionToken }));
    this.loops = this.clients.map((client, number) => this.loop(client, `${label}-${number}`));
  }

  private async loop(client: ChatClient, label: string): Promise<void> {
    for (let sequence = 0; this.running; sequence += 1) {
      const body = `${label}.${sequence}`;
      const startedAtMs = performance.now();
      try {
        const message = await client.sendMessage('bob', body);
        this.acknowledged.push({ id: message.id, body, startedAtMs, ackedAtMs: performance.now() });
      } catch (error) {
        if (this.running) this.failures.push(`${body}: ${(error as Error).message}`);
      }
    }
  }

  /** Waits until `count` more sends are acknowledged than now. */
  async awaitMore(count: number, timeoutMs = 15_000): Promise<void> {
    const target = this.acknowledged.length + count;
    await pollUntil(
      () => `${target} sends are acknowledged (have ${this.acknowledged.length}; failures: ${JSON.stringify(this.failures.slice(-3))})`,
      () => this.acknowledged.length >= target,
      timeoutMs,
    );
  }

  /**
   * The longest time without an acknowledgement between `fromMs` and `toMs` (performance.now()), counting
   * from `fromMs` to the first acknowledgement and from the last one to `toMs`: how long the stream stalled.
   */
  longestGapMs(fromMs: number, toMs: number): number {
    const times = this.acknowledged.map((ack) => ack.ackedAtMs).filter((at) => at > fromMs && at < toMs).sort((a, b) => a - b);
    let longest = 0;
    let previous = fromMs;
    for (const at of [...times, toMs]) {
      longest = Math.max(longest, at - previous);
      previous = at;
    }
    return longest;
  }

  /** The longest single call (first attempt to acknowledgement) among sends begun after `fromMs`. */
  longestCallMs(fromMs: number): number {
    return Math.max(0, ...this.acknowledged.filter((ack) => ack.startedAtMs > fromMs).map((ack) => ack.ackedAtMs - ack.startedAtMs));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    for (const client of this.clients) client.close();
  }
}

/** Creates alice and bob through the cluster (unless they exist) and logs both in; resolves with alice's token. */
export async function logInAlice(servers: readonly string[], createAccounts: boolean): Promise<string> {
  const client = new ChatClient({ servers, tls: 'insecure' });
  try {
    if (createAccounts) {
      await client.createAccount('alice', PASSWORD);
      await client.createAccount('bob', PASSWORD);
    }
    return (await client.login('alice', PASSWORD)).sessionToken;
  } finally {
    client.close();
  }
}

/** The ids and bodies of every message alice sent, read through the cluster (her history, paged). */
export async function readSentMessages(servers: readonly string[], aliceToken: string): Promise<Map<string, string>> {
  const client = new ChatClient({ servers, tls: 'insecure', sessionToken: aliceToken });
  const bodies = new Map<string, string>();
  try {
    let pageToken = '';
    do {
      const page = await client.listHistory({ pageSize: 500, pageToken });
      for (const message of page.messages) bodies.set(message.id, message.body);
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
  } finally {
    client.close();
  }
  return bodies;
}
