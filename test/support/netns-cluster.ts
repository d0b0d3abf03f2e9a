/**
 * A three-replica replichat cluster of real processes, each replica in its own network namespace (a
 * "machine" from netns.ts), for integration tests of replication: start, SIGKILL, SIGSTOP/SIGCONT and clean
 * stops of single replicas, their JSON log lines, their protocol status (PeerService.GetStatus), their
 * /readyz, and, once they are stopped, the state digest and the message ids of each replica's SQLite file.
 *
 * Every replica listens on the same ports inside its own host (clients 50051, peers 50052, HTTP 9100) and
 * finds its peers by their StatefulSet names (chat-i.chat-peers), exactly as in Kubernetes. The test
 * process, in the root namespace, reaches host i at hosts.address(i) through the bridge, so each replica
 * advertises that address to clients. Conditions are awaited by polling with a deadline, never by sleeping.
 */
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeStateDigest } from '../../src/storage/state-digest.js';
import { peerServiceClientConstructor } from '../../src/transport/peer-proto.js';
import { cliEnvironment } from './cli-processes.js';
import { type NetnsHosts, createHosts } from './netns.js';
import { CLI_PATH } from './processes.js';

export const CLIENT_PORT = 50051;
export const PEER_PORT = 50052;
export const METRICS_PORT = 9100;

/** How long a replica may take from spawn to its `serving` line (node start-up, SQLite, three listeners). */
const START_TIMEOUT_MS = 15_000;
/** How long a signalled replica may take to exit; SIGTERM waits for in-flight calls (5 s grace at most). */
const EXIT_TIMEOUT_MS = 10_000;
/** Deadline of one GetStatus or /readyz probe; a paused or dead replica must not stall a poll. */
const PROBE_TIMEOUT_MS = 500;
const POLL_INTERVAL_MS = 25;

/** One JSON log line of a replica, with the incarnation (1 for the first start) that wrote it. */
export type LogLine = Record<string, unknown> & { readonly incarnation: number; readonly msg?: string };

/** A replica's view of itself, from PeerService.GetStatus (ReplicaNode.status()), normalised. */
export interface ReplicaStatus {
  readonly ordinal: number;
  readonly role: 'leader' | 'follower';
  readonly epoch: number;
  readonly leaderOrdinal: number | null;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly commitIndex: number;
  readonly inSync: readonly number[];
  readonly waitingReason: string | null;
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
  /** Set by kill/stop before signalling, so that any other exit counts as a crash. */
  exitExpected: boolean;
  incarnation: number;
  readonly logs: LogLine[];
  stderr: string;
  /** Peer clients are made per incarnation, so that a restarted replica is not behind a reconnect backoff. */
  peerClient: { incarnation: number; client: grpc.Client } | undefined;
}

export interface ClusterOptions {
  /** The hosts' prefix (see createHosts): unique per test so that runs never share or tear down hosts. */
  readonly prefix: string;
  readonly size?: number;
  /** Extra `replichat server` flags for every replica. */
  readonly extraArguments?: readonly string[];
}

const PeerServiceClient = peerServiceClientConstructor();

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

function normaliseStatus(raw: Record<string, unknown>): ReplicaStatus {
  const configuration = raw.configuration as { inSync?: number[] } | null | undefined;
  const leader = raw.leaderOrdinal;
  const waiting = raw.waitingReason;
  return {
    ordinal: Number(raw.ordinal),
    role: raw.role === 'leader' ? 'leader' : 'follower',
    epoch: Number(raw.epoch),
    leaderOrdinal: typeof leader === 'number' && leader >= 0 ? leader : null,
    lastIndex: Number(raw.lastIndex),
    lastEpoch: Number(raw.lastEpoch),
    commitIndex: Number(raw.commitIndex),
    inSync: [...(configuration?.inSync ?? (raw.inSync as number[] | undefined) ?? [])].sort((a, b) => a - b),
    waitingReason: typeof waiting === 'string' && waiting !== '' ? waiting : null,
    raw,
  };
}

export class NetnsCluster {
  private readonly replicas: Replica[];
  private destroyed = false;
  /** Exits that no kill or stop asked for (an assertion failure crashes a replica, for example). */
  private readonly crashes: string[] = [];

  private constructor(
    readonly hosts: NetnsHosts,
    /** Holds replica-i/ for every replica; removed by destroy(). */
    readonly dataRoot: string,
    private readonly extraArguments: readonly string[],
  ) {
    this.replicas = Array.from({ length: hosts.count }, () => ({
      child: undefined,
      exited: undefined,
      paused: false,
      exitExpected: false,
      incarnation: 0,
      logs: [],
      stderr: '',
      peerClient: undefined,
    }));
  }

  static async create(options: ClusterOptions): Promise<NetnsCluster> {
    const hosts = await createHosts(options.prefix, options.size ?? 3);
    const dataRoot = mkdtempSync(join(tmpdir(), `replichat-netns-${options.prefix}-`));
    return new NetnsCluster(hosts, dataRoot, options.extraArguments ?? []);
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

  /** The client addresses of every replica, for ChatClient's server list. */
  clientServers(): string[] {
    return this.ordinals.map((index) => this.clientAddress(index));
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

  /** Starts replica i on its data directory and resolves once it logs `serving`. */
  async start(index: number): Promise<void> {
    if (this.destroyed) throw new Error('the cluster was destroyed');
    if (this.isRunning(index)) throw new Error(`replica ${index} is already running`);
    const replica = this.replica(index);
    replica.incarnation += 1;
    replica.paused = false;
    replica.exitExpected = false;
    const incarnation = replica.incarnation;
    const peers = this.ordinals.map((ordinal) => `${ordinal}=${this.hosts.hostName(ordinal)}:${PEER_PORT}`).join(',');
    const child = this.hosts.spawnIn(
      index,
      process.execPath,
      [
        CLI_PATH, 'server',
        '--ordinal', String(index),
        '--peers', peers,
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
    await pollUntil(
      `replica ${index} logs 'serving'`,
      () => {
        const serving = replica.logs.find((line) => line.incarnation === incarnation && line.msg === 'serving');
        if (serving !== undefined) return serving;
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(
            `replica ${index} exited (${child.exitCode ?? child.signalCode}) before serving\n${this.describeReplica(index)}`,
          );
        }
        return undefined;
      },
      START_TIMEOUT_MS,
      10,
    );
  }

  /** Starts the given replicas (all by default) at once. */
  async startAll(indexes: readonly number[] = this.ordinals): Promise<void> {
    await Promise.all(indexes.map((index) => this.start(index)));
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

  /** SIGKILLs several replicas in the same instant, then waits for all of them to exit. */
  async killTogether(indexes: readonly number[]): Promise<void> {
    for (const index of indexes) {
      this.replica(index).exitExpected = true;
      this.replica(index).child?.kill('SIGKILL');
    }
    await Promise.all(indexes.map((index) => this.awaitExit(index)));
  }

  /** A clean stop: SIGTERM, then waits for the exit; resolves with the exit code (0 when clean). */
  async stop(index: number): Promise<number | null> {
    const result = await this.kill(index, 'SIGTERM');
    return result.code;
  }

  /** Stops every running replica cleanly, in parallel; resolves with their exit codes by ordinal. */
  async stopAll(): Promise<(number | null)[]> {
    return Promise.all(this.ordinals.map((index) => (this.isRunning(index) ? this.stop(index) : Promise.resolve(null))));
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

  private async awaitExit(index: number): Promise<ExitResult> {
    const replica = this.replica(index);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        replica.exited!,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`replica ${index} did not exit within ${EXIT_TIMEOUT_MS} ms`)), EXIT_TIMEOUT_MS);
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

  /** Replica i's protocol status, or undefined when it does not answer within PROBE_TIMEOUT_MS. */
  async status(index: number): Promise<ReplicaStatus | undefined> {
    if (!this.isRunning(index)) return undefined;
    const replica = this.replica(index);
    if (replica.peerClient?.incarnation !== replica.incarnation) {
      replica.peerClient?.client.close();
      const client = new PeerServiceClient(`${this.hosts.address(index)}:${PEER_PORT}`, grpc.credentials.createInsecure(), {
        'grpc.initial_reconnect_backoff_ms': 50,
        'grpc.max_reconnect_backoff_ms': 250,
      });
      replica.peerClient = { incarnation: replica.incarnation, client };
    }
    const client = replica.peerClient.client as grpc.Client & Record<string, Function>;
    return new Promise((resolve) => {
      client.GetStatus!.call(
        client,
        {},
        new grpc.Metadata(),
        { deadline: Date.now() + PROBE_TIMEOUT_MS },
        (error: grpc.ServiceError | null, response: { json?: string } | undefined) => {
          if (error !== null || response?.json === undefined) return resolve(undefined);
          try {
            resolve(normaliseStatus(JSON.parse(response.json) as Record<string, unknown>));
          } catch {
            resolve(undefined);
          }
        },
      );
    });
  }

  /** The status of each replica in `indexes` (the live ones by default), undefined where there is no answer. */
  async statuses(indexes: readonly number[] = this.live()): Promise<Map<number, ReplicaStatus | undefined>> {
    const answers = await Promise.all(indexes.map((index) => this.status(index)));
    return new Map(indexes.map((index, position) => [index, answers[position]]));
  }

  /**
   * Polls GetStatus until exactly one of `among` (the live replicas by default) reports the leader role and
   * every other one follows it, in its epoch; resolves with the leader's ordinal.
   */
  async leader(options: { among?: readonly number[]; timeoutMs?: number } = {}): Promise<number> {
    let last = '';
    return pollUntil(
      () => `one leader among ${JSON.stringify(options.among ?? this.live())} that the others follow; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(options.among ?? this.live());
        last = NetnsCluster.summarise(statuses);
        if ([...statuses.values()].some((status) => status === undefined)) return undefined;
        const all = [...statuses.values()] as ReplicaStatus[];
        const leaders = all.filter((status) => status.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const leader = leaders[0]!;
        const following = all.every(
          (status) => status === leader || (status.leaderOrdinal === leader.ordinal && status.epoch === leader.epoch),
        );
        return following ? leader.ordinal : undefined;
      },
      options.timeoutMs ?? 15_000,
    );
  }

  /**
   * Waits until the leader's in-sync set is exactly `members` (every replica by default) and every member
   * holds and knows as committed all of the leader's log; resolves with the leader's ordinal.
   */
  async waitUntilInSync(members: readonly number[] = this.ordinals, timeoutMs = 15_000): Promise<number> {
    const expected = [...members].sort((a, b) => a - b);
    let last = '';
    return pollUntil(
      () => `replicas ${JSON.stringify(expected)} are in sync and caught up; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(expected);
        last = NetnsCluster.summarise(statuses);
        const all = [...statuses.values()];
        if (all.some((status) => status === undefined)) return undefined;
        const leaders = (all as ReplicaStatus[]).filter((status) => status.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const leader = leaders[0]!;
        if (JSON.stringify(leader.inSync) !== JSON.stringify(expected)) return undefined;
        if (leader.commitIndex !== leader.lastIndex) return undefined;
        const caughtUp = (all as ReplicaStatus[]).every(
          (status) =>
            status.epoch === leader.epoch &&
            status.lastIndex === leader.lastIndex &&
            status.commitIndex === leader.lastIndex &&
            JSON.stringify(status.inSync) === JSON.stringify(expected),
        );
        return caughtUp ? leader.ordinal : undefined;
      },
      timeoutMs,
    );
  }

  /**
   * Waits until the leader's in-sync set is exactly `members`, without waiting for the replicas to hold the
   * same log (writes may go on); resolves with the leader's ordinal.
   */
  async waitForInSyncSet(members: readonly number[] = this.ordinals, timeoutMs = 15_000): Promise<number> {
    const expected = JSON.stringify([...members].sort((a, b) => a - b));
    let last = '';
    return pollUntil(
      () => `the leader's in-sync set is ${expected}; last seen: ${last}`,
      async () => {
        const statuses = await this.statuses(this.live());
        last = NetnsCluster.summarise(statuses);
        const leader = [...statuses.values()].find((status) => status?.role === 'leader');
        return leader !== undefined && JSON.stringify(leader.inSync) === expected ? leader.ordinal : undefined;
      },
      timeoutMs,
    );
  }

  /** GET /readyz of replica i: its HTTP status and body. */
  async readyz(index: number): Promise<{ status: number; body: string }> {
    const response = await fetch(`http://${this.hosts.address(index)}:${METRICS_PORT}/readyz`, {
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS * 2),
    });
    return { status: response.status, body: await response.text() };
  }

  /** Opens replica i's database read-only; the replica must be stopped. */
  private openStopped(index: number): Database.Database {
    if (this.isRunning(index)) throw new Error(`replica ${index} must be stopped before its file is read`);
    return new Database(this.databasePath(index), { readonly: true, fileMustExist: true });
  }

  /** The state digest of each replica's file (src/storage/state-digest.ts); every replica must be stopped. */
  digests(): string[] {
    return this.ordinals.map((index) => {
      const database = this.openStopped(index);
      try {
        return computeStateDigest(database);
      } finally {
        database.close();
      }
    });
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

  /**
   * What went wrong without being asked for: replicas that exited by themselves, log lines at level error
   * or fatal, and anything on stderr. A test that passes with a crashed replica would hide a bug.
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

  static summarise(statuses: Map<number, ReplicaStatus | undefined>): string {
    return [...statuses.entries()]
      .map(([index, status]) =>
        status === undefined
          ? `${index}: no answer`
          : `${index}: ${status.role} epoch ${status.epoch} leader ${status.leaderOrdinal} last ${status.lastIndex}` +
            ` commit ${status.commitIndex} inSync [${status.inSync.join(',')}]` +
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

  /** Kills every replica, removes the hosts and the data directories. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const replica of this.replicas) {
      replica.peerClient?.client.close();
      replica.peerClient = undefined;
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
