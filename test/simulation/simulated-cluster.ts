/**
 * A cluster of real replicas in one process: each replica is the real driver (ReplicaNode) over a real
 * SQLite file in its own data directory, with the real ChatService in front, wired to the simulated clock,
 * network and configuration store. A crash ends the process's run (its timers, its messages in flight, its
 * memory) and closes its database handle; the file stays, and a restart is a new ReplicaNode on the same
 * directory with a clock that starts again near 0. A pause holds everything addressed to the process.
 * The fatal handler and the storage fault hooks are where fail-stop is enforced and where disk faults and
 * crashes right after a durable write are injected.
 */
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { ChatService } from '../../src/api/chat-service.js';
import { DEFAULT_CHAT_LIMITS } from '../../src/core/limits.js';
import type { PeerMessage } from '../../src/core/replication/messages.js';
import type { Member } from '../../src/core/replication/types.js';
import type { SnapshotFile } from '../../src/storage/snapshot.js';
import {
  createNode,
  observeStatus,
  type ObservedStatus,
  type ReplicaNode,
  type StorageFaultHooks,
  type StorageWriteKind,
} from './driver-adapter.js';
import type { Random } from './random.js';
import { Scheduler, SimulatedCrash, SimulatedProcess } from './scheduler.js';
import { CLOCK_DRIFT_BOUND, SimulatedClock } from './simulated-clock.js';
import { SimulatedConfigurationStore } from './simulated-configuration-store.js';
import { type NetworkEndpoint, SimulatedNetwork } from './simulated-network.js';

/** A fault armed on a replica's next durable write of a kind (or of any kind). */
export interface StorageFault {
  /** `fail`: the write throws (disk full, EIO); `crash-after`: the process dies right after it is durable. */
  readonly effect: 'fail' | 'crash-after';
  readonly kind: StorageWriteKind | 'any';
  /** How many matching writes pass before the fault strikes. */
  skip: number;
  /** A full disk stays full: every later matching write fails too, until the fault is cleared. */
  readonly sticky?: boolean;
  /** How many times it struck. */
  struck?: number;
}

/** Something the run did that a correct driver never does; the checker turns it into a failure. */
export type ViolationReporter = (text: string) => void;

/** With SIMULATION_TRACE set, SIMULATION_TRACE_FILE=path writes the trace there instead of stdout. */
const TRACE_FILE = process.env.SIMULATION_TRACE === undefined ? undefined : process.env.SIMULATION_TRACE_FILE;

export class ReplicaSlot implements NetworkEndpoint {
  readonly peerAddress: string;
  readonly clientAddress: string;
  readonly dataDirectory: string;
  process: SimulatedProcess | undefined;
  node: ReplicaNode | undefined;
  service: ChatService | undefined;
  clock: SimulatedClock | undefined;
  runs = 0;
  storageFault: StorageFault | undefined;
  /** Added to the wall clock at the next start: a step of the machine's clock across a restart. */
  wallClockStepMs = 0;
  /** Listeners told when the current process dies (open client streams break). */
  readonly deathListeners = new Set<() => void>();

  constructor(
    readonly ordinal: number,
    private readonly cluster: SimulatedCluster,
    rootDirectory: string,
  ) {
    this.peerAddress = `replica-${ordinal}.peers:50052`;
    this.clientAddress = `replica-${ordinal}.clients:50051`;
    this.dataDirectory = join(rootDirectory, `replica-${ordinal}`);
  }

  currentProcess(): SimulatedProcess | undefined {
    return this.process?.alive === true ? this.process : undefined;
  }

  get running(): boolean {
    return this.process?.state === 'running';
  }

  get up(): boolean {
    return this.process?.alive === true;
  }

  deliver(message: PeerMessage, fromClientAddress: string): void {
    this.node?.onPeerMessage(message, fromClientAddress);
  }

  createSnapshot(): Promise<SnapshotFile> {
    if (this.node === undefined) return Promise.reject(new Error(`replica ${this.ordinal} is down`));
    return this.node.createSnapshot();
  }

  status(): ObservedStatus | undefined {
    if (!this.up || this.node === undefined) return undefined;
    return this.cluster.guard(this, () => observeStatus(this.node!));
  }

  storageHooks(process: SimulatedProcess): StorageFaultHooks {
    return {
      beforeWrite: (kind) => {
        // A process that is already dead writes nothing more: process.exit would have stopped it.
        if (!process.alive) throw new SimulatedCrash(`replica ${this.ordinal} is dead`);
        const fault = this.matchingFault('fail', kind);
        if (fault) {
          this.cluster.trace(`replica ${this.ordinal}: ${kind} write fails (simulated disk error)`);
          const error = new Error(`SQLITE_IOERR: simulated disk error on a ${kind} write`) as Error & { code: string };
          error.code = 'SQLITE_IOERR';
          throw error;
        }
      },
      afterWrite: (kind) => {
        if (!process.alive) throw new SimulatedCrash(`replica ${this.ordinal} is dead`);
        if (this.matchingFault('crash-after', kind)) {
          this.cluster.crash(this.ordinal, `crash right after a durable ${kind} write`);
          throw new SimulatedCrash(`replica ${this.ordinal} crashed after a ${kind} write`);
        }
      },
    };
  }

  private matchingFault(effect: StorageFault['effect'], kind: StorageWriteKind): boolean {
    const fault = this.storageFault;
    if (fault === undefined || fault.effect !== effect || (fault.kind !== 'any' && fault.kind !== kind)) return false;
    if (fault.skip > 0) {
      fault.skip -= 1;
      return false;
    }
    fault.struck = (fault.struck ?? 0) + 1;
    if (fault.sticky !== true) this.storageFault = undefined;
    return true;
  }
}

export interface ClusterOptions {
  readonly replicaCount: number;
  readonly random: Random;
  readonly name: string;
  readonly logRetentionEntries?: number;
  /** Where a clock's rate is drawn from; defaults to anywhere in 1 ± CLOCK_DRIFT_BOUND, often at an edge. */
  readonly clockRate?: (ordinal: number, run: number) => number;
}

export class SimulatedCluster {
  readonly scheduler = new Scheduler();
  readonly network: SimulatedNetwork;
  readonly store: SimulatedConfigurationStore;
  readonly replicas: ReplicaSlot[] = [];
  readonly members: Member[];
  readonly rootDirectory: string;
  readonly random: Random;
  private readonly violations: string[] = [];
  private readonly traceLines: string[] = [];
  readonly tracing = process.env.SIMULATION_TRACE !== undefined;
  /** Called after every event: the checker's hook. */
  afterEvent: (() => void) | undefined;
  counters = { crashes: 0, fatalCrashes: 0, restarts: 0, pauses: 0 };

  constructor(readonly options: ClusterOptions) {
    this.random = options.random;
    const base = process.platform === 'linux' ? '/dev/shm' : tmpdir();
    this.rootDirectory = join(base, `replichat-sim-${process.pid}-${options.name}`);
    rmSync(this.rootDirectory, { recursive: true, force: true });
    mkdirSync(this.rootDirectory, { recursive: true });
    this.network = new SimulatedNetwork(this.scheduler, this.random.fork(), (text) => this.trace(text));
    this.store = new SimulatedConfigurationStore(this.scheduler, this.random.fork(), (text) => this.trace(text));
    for (let ordinal = 0; ordinal < options.replicaCount; ordinal += 1) {
      const slot = new ReplicaSlot(ordinal, this, this.rootDirectory);
      this.replicas.push(slot);
      this.network.addEndpoint(slot);
    }
    this.members = this.replicas.map((slot) => ({ ordinal: slot.ordinal, address: slot.peerAddress }));
    this.scheduler.onEscapedError((error, event) => {
      this.violation(`an error escaped the driver in "${event.label}" instead of ending the replica: ${describeError(error)}`);
    });
  }

  get nowMs(): number {
    return this.scheduler.nowMs;
  }

  trace(text: string): void {
    const line = `${this.scheduler.nowMs.toFixed(1).padStart(9)} ${text}`;
    this.traceLines.push(line);
    if (this.traceLines.length > 400) this.traceLines.splice(0, 100);
    if (TRACE_FILE !== undefined) appendFileSync(TRACE_FILE, `${line}\n`);
    else if (this.tracing) process.stdout.write(`${line}\n`);
  }

  /** The last lines of the trace, for a failure message. */
  recentTrace(): string {
    return this.traceLines.slice(-60).join('\n');
  }

  violation(text: string): void {
    this.trace(`VIOLATION: ${text}`);
    this.violations.push(`at ${this.scheduler.nowMs.toFixed(1)} ms: ${text}`);
  }

  get violationList(): readonly string[] {
    return this.violations;
  }

  /** Runs `action` on behalf of a replica: a SimulatedCrash ends it, any other error is a violation. */
  guard<T>(slot: ReplicaSlot, action: () => T): T | undefined {
    try {
      return action();
    } catch (error) {
      if (!(error instanceof SimulatedCrash)) {
        this.violation(`replica ${slot.ordinal} threw from a call that must not fail: ${describeError(error)}`);
      }
      return undefined;
    }
  }

  replica(ordinal: number): ReplicaSlot {
    const slot = this.replicas[ordinal];
    if (slot === undefined) throw new Error(`no replica ${ordinal}`);
    return slot;
  }

  /** Starts a new run of the replica on its data directory. */
  start(ordinal: number): void {
    const slot = this.replica(ordinal);
    if (slot.up) return;
    slot.runs += 1;
    if (slot.runs > 1) this.counters.restarts += 1;
    const process = new SimulatedProcess(`replica ${ordinal} run ${slot.runs}`, this.scheduler.nowMs);
    const rate = this.options.clockRate?.(ordinal, slot.runs) ?? this.drawClockRate();
    const clock = new SimulatedClock(this.scheduler, process, {
      // performance.now() in a fresh Node process reads a few tens of milliseconds.
      originMs: this.random.between(20, 60),
      rate,
      wallClockAtStartMs: 1_800_000_000_000 + this.scheduler.nowMs + slot.wallClockStepMs,
    });
    slot.process = process;
    slot.clock = clock;
    const logger = this.loggerFor(ordinal);
    const fatal = (error: unknown, context: string): never => {
      this.counters.fatalCrashes += 1;
      this.trace(`replica ${ordinal}: fatal (${context}): ${describeError(error)}`);
      this.endProcess(slot, process, `fatal: ${context}`);
      throw new SimulatedCrash(`replica ${ordinal} ended by its fatal handler: ${context}`);
    };
    this.trace(`replica ${ordinal}: start (run ${slot.runs}, clock rate ${rate.toFixed(3)})`);
    // The previous run's files are closed before a new run opens them, as the OS has closed a killed
    // process's files by the time another starts. endProcess closes them in a microtask, and the scheduler
    // may reach this start without yielding to microtasks in between (seeds 1901 and 1947 did: the new run
    // found the data directory locked).
    try {
      slot.node?.stop();
    } catch {
      // A half-dead driver may complain while it is torn down; the file is what matters.
    }
    try {
      const node = createNode(
        {
          ordinal,
          members: this.members,
          dataDirectory: slot.dataDirectory,
          clientAddress: slot.clientAddress,
          logRetentionEntries: this.options.logRetentionEntries ?? 100_000,
        },
        {
          clock,
          transport: this.network.transportFor(ordinal, process),
          configurationStore: this.store.clientFor(ordinal, process),
          fatal,
          storageFaults: slot.storageHooks(process),
        },
        logger,
      );
      slot.node = node;
      slot.service = new ChatService(node, DEFAULT_CHAT_LIMITS, logger, { observe: () => undefined });
      node.start();
    } catch (error) {
      if (!(error instanceof SimulatedCrash)) {
        this.violation(`replica ${ordinal} failed to start: ${describeError(error)}`);
        this.endProcess(slot, process, 'failed to start');
      }
    }
  }

  private drawClockRate(): number {
    const choice = this.random.next();
    if (choice < 0.3) return 1 - CLOCK_DRIFT_BOUND;
    if (choice < 0.6) return 1 + CLOCK_DRIFT_BOUND;
    return 1 + this.random.between(-CLOCK_DRIFT_BOUND, CLOCK_DRIFT_BOUND);
  }

  private loggerFor(ordinal: number): Logger {
    if (!this.tracing) return pino({ level: 'silent' });
    return pino(
      { level: 'info', base: undefined, timestamp: false },
      {
        write: (line: string) => {
          const { level: _level, msg, ...rest } = JSON.parse(line) as Record<string, unknown>;
          this.trace(`replica ${ordinal} log: ${String(msg)} ${JSON.stringify(rest)}`);
        },
      },
    );
  }

  /** Kills the replica's current process (SIGKILL): memory gone, file kept. */
  crash(ordinal: number, reason = 'crash'): void {
    const slot = this.replica(ordinal);
    const process = slot.process;
    if (process === undefined || !process.alive) return;
    this.counters.crashes += 1;
    this.trace(`replica ${ordinal}: ${reason}`);
    this.endProcess(slot, process, reason);
  }

  private endProcess(slot: ReplicaSlot, process: SimulatedProcess, reason: string): void {
    if (!process.alive) return;
    this.scheduler.kill(process, reason);
    for (const listener of [...slot.deathListeners]) listener();
    slot.deathListeners.clear();
    const node = slot.node;
    // The database handle closes once the stack that is running the dying code has unwound, as the OS
    // closes a killed process's files; nothing the dead process does meanwhile reaches anyone.
    queueMicrotask(() => {
      try {
        node?.stop();
      } catch {
        // A half-dead driver may complain while it is torn down; the file is what matters.
      }
    });
  }

  pause(ordinal: number): void {
    const slot = this.replica(ordinal);
    if (slot.process?.state !== 'running') return;
    this.counters.pauses += 1;
    this.trace(`replica ${ordinal}: paused`);
    this.scheduler.pause(slot.process);
  }

  resume(ordinal: number): void {
    const slot = this.replica(ordinal);
    if (slot.process?.state !== 'paused') return;
    this.trace(`replica ${ordinal}: resumed`);
    this.scheduler.resume(slot.process);
  }

  /** Runs the simulation for `durationMs` of virtual time. */
  async runFor(durationMs: number): Promise<void> {
    await this.scheduler.runUntil(this.scheduler.nowMs + durationMs, this.afterEvent);
  }

  /** Runs until `condition` holds or `timeoutMs` passes; returns whether it held. */
  async runUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    return this.scheduler.runUntilCondition(condition, this.scheduler.nowMs + timeoutMs, this.afterEvent);
  }

  /** The ordinal the store names leader, or undefined before the cluster exists. */
  recordedLeader(): number | undefined {
    return this.store.peek()?.record.leader;
  }

  recordedInSync(): readonly number[] {
    return this.store.peek()?.record.inSync ?? [];
  }

  /** The replica that leads according to itself and the store, if one does now. */
  servingLeader(): ReplicaSlot | undefined {
    const record = this.store.peek()?.record;
    if (record === undefined) return undefined;
    const slot = this.replicas[record.leader];
    if (slot === undefined || !slot.running) return undefined;
    const status = slot.status();
    return status?.leading === true && status.epoch === record.epoch ? slot : undefined;
  }

  /** Every replica's own view, for failure messages. */
  describeReplicas(): string {
    return this.replicas
      .map((slot) => {
        if (!slot.up || slot.node === undefined) return `replica ${slot.ordinal}: down`;
        const status = this.guard(slot, () => slot.node!.status());
        if (status === undefined) return `replica ${slot.ordinal}: no status`;
        const { role, epoch, leaderOrdinal, lastIndex, lastEpoch, commitIndex, waitingReason, followers, snapshotting } = status;
        return `replica ${slot.ordinal} (${slot.process!.state}): ${JSON.stringify({ role, epoch, leaderOrdinal, lastIndex, lastEpoch, commitIndex, snapshotting, waitingReason, followers })}`;
      })
      .join('\n  ');
  }

  /** Stops every replica and deletes the data directories. */
  async dispose(): Promise<void> {
    for (const slot of this.replicas) {
      if (slot.process !== undefined) this.endProcess(slot, slot.process, 'end of run');
    }
    await new Promise((resolve) => setImmediate(resolve));
    rmSync(this.rootDirectory, { recursive: true, force: true });
  }
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}${error.stack ? `\n${error.stack.split('\n').slice(1, 6).join('\n')}` : ''}`;
  return String(error);
}
