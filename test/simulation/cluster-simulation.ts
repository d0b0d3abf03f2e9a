/**
 * A deterministic simulation of a replichat cluster: the real protocol core (ReplicaCore) in several
 * replicas, with a simulated clock, network and disk, driven by one seeded random number generator. Faults
 * (crashes, restarts, pauses, drops, delays, duplicates) are drawn from the seed, so a failing seed replays
 * exactly. The invariants of NOTEBOOK.md §8 are checked after every step; a violation throws with the seed.
 */
import { createHash } from 'node:crypto';
import type { EpochStart } from '../../src/core/replication/epoch-history.js';
import type { AppendMessage, Outgoing, PeerMessage } from '../../src/core/replication/messages.js';
import {
  DEFAULT_REPLICATION_TIMINGS,
  type PersistedProtocolState,
  ReplicaCore,
} from '../../src/core/replication/replica-core.js';
import type { Configuration, Member, WireEntry } from '../../src/core/replication/types.js';

/** mulberry32: small, fast and good enough to drive a schedule; the same seed gives the same run. */
export class Random {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  chance(probability: number): boolean {
    return this.next() < probability;
  }
  integer(minimum: number, maximum: number): number {
    return minimum + Math.floor(this.next() * (maximum - minimum + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

interface SimulatedEntry extends WireEntry {
  /** The client request id of a client write. */
  readonly requestId?: string;
}

interface SimulatedReplica {
  readonly ordinal: number;
  /** Durable: survives crashes. */
  currentEpoch: number;
  log: SimulatedEntry[];
  /** Volatile. */
  core: ReplicaCore | undefined;
  alive: boolean;
  paused: boolean;
  /** Client writes waiting for the commit index, by log index. */
  pending: Map<number, string>;
  clockOffsetMs: number;
  clockRate: number;
  snapshotDueAtMs: number | undefined;
  snapshotSource: number | undefined;
  /** The oldest log index the replica still holds; entries before it were truncated. */
  firstIndex: number;
}

interface InFlight {
  readonly deliverAtMs: number;
  readonly to: number;
  readonly message: PeerMessage;
  readonly sequence: number;
}

interface AcknowledgedWrite {
  readonly requestId: string;
  readonly index: number;
  readonly epoch: number;
}

export interface SimulationOptions {
  readonly seed: number;
  readonly replicaCount?: number;
  /** Whether a new replica may join and an operator may remove a member during the run (default true). */
  readonly membershipChanges?: boolean;
  /** Faults happen during this much simulated time; then they stop and the cluster must recover. */
  readonly faultDurationMs?: number;
  /** How long the cluster gets to recover once faults stop. */
  readonly recoveryDeadlineMs?: number;
}

export interface SimulationResult {
  readonly acknowledgedWrites: number;
  readonly elections: number;
  readonly crashes: number;
  readonly snapshots: number;
  readonly finalLastIndex: number;
}

const STEP_MS = 5;

export class ClusterSimulation {
  private readonly random: Random;
  private readonly replicas: SimulatedReplica[] = [];
  private readonly members: Member[];
  private readonly network: InFlight[] = [];
  private nowMs = 0;
  private messageSequence = 0;
  private readonly acknowledged = new Map<string, AcknowledgedWrite>();
  private readonly leaderOfEpoch = new Map<number, number>();
  private readonly readmissionsCheckedUpTo = new Map<SimulatedReplica, number>();
  private readonly clients: { requestId: string; attempt: number; nextAttemptAtMs: number }[] = [];
  private requestCounter = 0;
  private readonly membershipChanges: boolean;
  private readonly initialCount: number;
  private joinerStarted = false;
  private removalsRequested = 0;
  private readonly removalTargets = new Set<number>();
  private incarnations = 0;
  private faultsActive = true;
  private dropProbability: number;
  private duplicateProbability: number;
  private maxDelayMs: number;
  private counters = { elections: 0, crashes: 0, snapshots: 0 };
  private readonly timings = DEFAULT_REPLICATION_TIMINGS;
  /** With SIMULATION_TRACE set, notable events are printed, to understand a failing seed. */
  private readonly tracing = process.env.SIMULATION_TRACE !== undefined;

  private trace(text: string): void {
    if (this.tracing) process.stdout.write(`${String(this.nowMs).padStart(6)} ${text}\n`);
  }

  constructor(private readonly options: SimulationOptions) {
    this.random = new Random(options.seed);
    const count = options.replicaCount ?? 3;
    this.membershipChanges = options.membershipChanges ?? true;
    // One replica more than the initial cluster, started later to join it.
    const total = this.membershipChanges ? count + 1 : count;
    this.initialCount = count;
    this.members = Array.from({ length: total }, (_, ordinal) => ({ ordinal, address: `replica-${ordinal}` }));
    this.dropProbability = this.random.next() * 0.15;
    this.duplicateProbability = this.random.next() * 0.05;
    this.maxDelayMs = this.random.integer(1, 60);
    for (const member of this.members) {
      this.replicas.push({
        ordinal: member.ordinal,
        currentEpoch: 0,
        log: [],
        core: undefined,
        alive: true,
        paused: false,
        pending: new Map(),
        clockOffsetMs: this.random.integer(0, 100_000),
        // Clocks drift by at most 1% here, within the 5% the protocol allows for.
        clockRate: 1 + (this.random.next() - 0.5) * 0.02,
        snapshotDueAtMs: undefined,
        snapshotSource: undefined,
        firstIndex: 1,
      });
    }
    for (const replica of this.replicas) {
      if (replica.ordinal < this.initialCount) this.start(replica);
      else replica.alive = false;
    }
    for (let client = 0; client < 3; client += 1) this.clients.push(this.newRequest());
  }

  /** Runs faults for faultDurationMs, then heals and requires recovery; throws InvariantViolation on failure. */
  run(): SimulationResult {
    const faultDurationMs = this.options.faultDurationMs ?? 8000;
    const recoveryDeadlineMs = this.options.recoveryDeadlineMs ?? 15_000;
    while (this.nowMs < faultDurationMs) {
      this.injectFaults();
      this.step();
    }
    this.heal();
    const acknowledgedBeforeRecovery = this.acknowledged.size;
    const deadline = this.nowMs + recoveryDeadlineMs;
    while (!this.recovered(acknowledgedBeforeRecovery)) {
      if (this.nowMs > deadline) {
        throw this.violation(`no recovery within ${recoveryDeadlineMs} ms after faults stopped: ${this.describe()}`);
      }
      this.step();
    }
    return {
      acknowledgedWrites: this.acknowledged.size,
      elections: this.counters.elections,
      crashes: this.counters.crashes,
      snapshots: this.counters.snapshots,
      finalLastIndex: this.replicas[0]!.log.length,
    };
  }

  // ---------------------------------------------------------------------------------------------------

  private localTime(replica: SimulatedReplica): number {
    return Math.floor(replica.clockOffsetMs + this.nowMs * replica.clockRate);
  }

  private persistedState(replica: SimulatedReplica): PersistedProtocolState {
    // The epoch history covers the entries still in the log; the configuration is state, as in the real
    // store (cluster_state), so it survives truncation of the entry that carried it.
    const epochStarts: EpochStart[] = [];
    for (const entry of replica.log.slice(replica.firstIndex - 1)) {
      if (epochStarts.length === 0 || epochStarts[epochStarts.length - 1]!.epoch !== entry.epoch) {
        epochStarts.push({ epoch: entry.epoch, firstIndex: entry.index });
      }
    }
    let configuration: Configuration | null = null;
    let configurationIndex = 0;
    for (const entry of replica.log) {
      if (entry.configuration !== undefined) {
        configuration = entry.configuration;
        configurationIndex = entry.index;
      }
    }
    return { currentEpoch: replica.currentEpoch, epochStarts, lastIndex: replica.log.length, configuration, configurationIndex };
  }

  private start(replica: SimulatedReplica): void {
    this.trace(`start ${replica.ordinal} (log ${replica.log.length}, epoch ${replica.currentEpoch})`);
    this.incarnations += 1;
    // The original replicas know only each other; the joiner knows them all, as a StatefulSet scaled up.
    const peers = replica.ordinal < this.initialCount ? this.members.slice(0, this.initialCount) : this.members;
    replica.core = new ReplicaCore(replica.ordinal, peers, this.timings, this.persistedState(replica), this.incarnations);
    replica.alive = true;
    replica.paused = false;
    replica.pending.clear();
    replica.snapshotDueAtMs = undefined;
  }

  private crash(replica: SimulatedReplica): void {
    this.trace(`crash ${replica.ordinal} (log ${replica.log.length})`);
    replica.core = undefined;
    replica.alive = false;
    replica.pending.clear();
    replica.snapshotDueAtMs = undefined;
    this.counters.crashes += 1;
  }

  private injectFaults(): void {
    if (this.membershipChanges) this.changeMembership();
    const down = this.replicas.filter((replica) => !replica.alive || replica.paused).length;
    for (const replica of this.replicas) {
      if (replica.ordinal >= this.initialCount && !this.joinerStarted) continue;
      if (replica.alive && !replica.paused) {
        // Up to every replica may be down at once: safety must hold regardless; only liveness needs one up.
        if (this.random.chance(0.0015) && down < this.replicas.length) this.crash(replica);
        else if (this.random.chance(0.0008)) {
          replica.paused = true;
          this.trace(`pause ${replica.ordinal}`);
        }
      } else if (!replica.alive) {
        if (this.random.chance(0.004)) this.start(replica);
      } else if (replica.paused && this.random.chance(0.004)) {
        replica.paused = false;
        this.trace(`resume ${replica.ordinal}`);
      }
    }
  }

  /** A new replica joins once, and an operator asks the leader to remove a member once, at seeded times. */
  private changeMembership(): void {
    const joiner = this.replicas[this.initialCount]!;
    if (!this.joinerStarted && this.random.chance(0.0006)) {
      this.joinerStarted = true;
      this.trace(`joiner ${joiner.ordinal} starts`);
      this.start(joiner);
    }
    if (this.removalsRequested === 0 && this.random.chance(0.001)) {
      const leader = this.replicas.find((replica) => replica.alive && !replica.paused && replica.core!.isLeader);
      const members = leader?.core!.status().configuration?.members ?? [];
      if (leader === undefined || members.length <= 2) return;
      const ordinal = this.random.pick(members).ordinal;
      const refusal = leader.core!.requestRemoval(ordinal, this.localTime(leader));
      this.trace(`operator removes ${ordinal} via leader ${leader.ordinal}: ${refusal ?? 'accepted'}`);
      if (refusal === undefined) {
        this.removalsRequested += 1;
        this.removalTargets.add(ordinal);
      }
      this.carryOut(leader);
    }
  }

  private heal(): void {
    this.faultsActive = false;
    for (const replica of this.replicas) {
      if (replica.ordinal >= this.initialCount && !this.joinerStarted) continue;
      if (!replica.alive) this.start(replica);
      replica.paused = false;
    }
  }

  private step(): void {
    this.nowMs += STEP_MS;
    // Deliver due messages in a seeded order.
    const due = this.network.filter((inFlight) => inFlight.deliverAtMs <= this.nowMs);
    for (const inFlight of due) {
      const replica = this.replicas[inFlight.to]!;
      if (replica.paused) continue; // Stays queued until the replica runs again.
      this.network.splice(this.network.indexOf(inFlight), 1);
      if (!replica.alive) continue;
      this.deliver(replica, inFlight.message);
    }
    for (const replica of this.replicas) {
      if (!replica.alive || replica.paused) continue;
      if (replica.snapshotDueAtMs !== undefined && this.nowMs >= replica.snapshotDueAtMs) this.finishSnapshot(replica);
      replica.core!.tick(this.localTime(replica));
      this.carryOut(replica);
      this.truncateLog(replica);
    }
    this.submitClientWrites();
    for (const replica of this.replicas) {
      if (!replica.alive || replica.paused || !replica.core!.isLeader) continue;
      replica.core!.flush(this.localTime(replica));
      this.carryOut(replica);
    }
    this.checkInvariants();
  }

  private deliver(replica: SimulatedReplica, message: PeerMessage): void {
    if (process.env.SIMULATION_TRACE_MESSAGES !== undefined && this.nowMs > Number(process.env.SIMULATION_TRACE_MESSAGES)) {
      const { entries, ...rest } = message as AppendMessage;
      this.trace(`deliver to ${replica.ordinal}: ${JSON.stringify({ ...rest, entries: entries?.map((entry) => entry.index) })}`);
    }
    let delivered = message;
    if (message.type === 'appendReply' && message.digest !== undefined && replica.core!.isLeader) {
      delivered = { ...message, digestVerified: message.digest.value === this.digestAt(replica, message.digest.index) };
    }
    const epochBefore = replica.currentEpoch;
    replica.core!.receive(delivered, this.localTime(replica));
    if (message.type === 'append' && message.epoch < epochBefore) {
      const output = replica.core!.takeOutput();
      if (output.entriesToPersist.length > 0) {
        throw this.violation(`replica ${replica.ordinal} in epoch ${epochBefore} appended entries from epoch ${message.epoch}`);
      }
      this.carryOutOutput(replica, output);
      return;
    }
    this.carryOut(replica);
  }

  private carryOut(replica: SimulatedReplica): void {
    this.carryOutOutput(replica, replica.core!.takeOutput());
  }

  /** The driver's contract: persist the epoch, persist entries, send, acknowledge. */
  private carryOutOutput(replica: SimulatedReplica, output: ReturnType<ReplicaCore['takeOutput']>): void {
    if (output.persistEpoch !== undefined) {
      if (output.persistEpoch < replica.currentEpoch) throw this.violation(`replica ${replica.ordinal}'s epoch went back`);
      replica.currentEpoch = output.persistEpoch;
    }
    if (output.becameLeader) this.onBecameLeader(replica);
    for (const entry of output.entriesToPersist) this.persist(replica, entry);
    for (const outgoing of output.messages) this.send(replica, outgoing);
    if (output.steppedDown) replica.pending.clear();
    if (replica.core?.isLeader) {
      this.checkReadmissions(replica, output.commitIndex);
      this.acknowledgeUpTo(replica, output.commitIndex);
    }
    if (output.fetchSnapshotFrom !== undefined) {
      replica.snapshotDueAtMs = this.nowMs + this.random.integer(5, 200);
      replica.snapshotSource = output.fetchSnapshotFrom;
    }
  }

  private persist(replica: SimulatedReplica, entry: SimulatedEntry): void {
    if (entry.index !== replica.log.length + 1) {
      throw this.violation(`replica ${replica.ordinal} persisted entry ${entry.index} after ${replica.log.length}`);
    }
    replica.log.push(entry);
    if (entry.configuration !== undefined) this.trace(`replica ${replica.ordinal} config at ${entry.index}@${entry.epoch}: inSync ${JSON.stringify(entry.configuration.inSync)}`);
  }

  /** Keeps the last 100 to 150 entries, as the driver does with --log-retention-entries, so snapshots are exercised. */
  private truncateLog(replica: SimulatedReplica): void {
    if (replica.log.length - replica.firstIndex < 150) return;
    replica.firstIndex = replica.log.length - 99;
    replica.core!.logTruncated(replica.firstIndex);
  }

  private send(from: SimulatedReplica, outgoing: Outgoing): void {
    // As in the driver, a message goes only where the core knows an address for.
    if (from.core?.memberAddress(outgoing.to) === undefined) return;
    let message = outgoing.message;
    if (message.type === 'append' && message.entryRange !== undefined) {
      const entries = from.log.slice(message.entryRange.fromIndex - 1, message.entryRange.toIndex);
      message = { ...message, entries } satisfies AppendMessage;
    }
    if (message.type === 'appendReply' && message.digest !== undefined) {
      message = { ...message, digest: { index: message.digest.index, value: this.digestAt(from, message.digest.index) } };
    }
    const copies = this.faultsActive && this.random.chance(this.duplicateProbability) ? 2 : 1;
    for (let copy = 0; copy < copies; copy += 1) {
      if (this.faultsActive && this.random.chance(this.dropProbability)) continue;
      const delayMs = this.random.integer(1, this.faultsActive ? this.maxDelayMs : 5);
      this.network.push({ deliverAtMs: this.nowMs + delayMs, to: outgoing.to, message, sequence: this.messageSequence++ });
    }
  }

  private finishSnapshot(replica: SimulatedReplica): void {
    replica.snapshotDueAtMs = undefined;
    const source = this.replicas[replica.snapshotSource!]!;
    if (!source.alive || source.paused || !source.core?.isLeader) {
      replica.core!.snapshotFailed(this.localTime(replica));
      this.carryOut(replica);
      return;
    }
    // A snapshot is a consistent copy of the source's log and state at this instant.
    replica.log = source.log.map((entry) => ({ ...entry }));
    replica.firstIndex = source.firstIndex;
    this.counters.snapshots += 1;
    replica.core!.snapshotInstalled(this.persistedState(replica), this.localTime(replica));
    this.carryOut(replica);
  }

  /** The simulated state machine's digest: a hash of the client writes applied up to `index`. */
  private digestAt(replica: SimulatedReplica, index: number): string {
    const hash = createHash('sha256');
    for (const entry of replica.log.slice(0, index)) hash.update(`${entry.requestId ?? '-'}|`);
    return `${index}:${hash.digest('hex')}`;
  }

  // ---------------------------------------------------------------------------------------------------
  // Clients.

  private newRequest() {
    this.requestCounter += 1;
    return { requestId: `request-${this.requestCounter}`, attempt: 0, nextAttemptAtMs: 0 };
  }

  private submitClientWrites(): void {
    for (let position = 0; position < this.clients.length; position += 1) {
      const client = this.clients[position]!;
      if (this.acknowledged.has(client.requestId)) {
        this.clients[position] = this.newRequest();
        continue;
      }
      if (this.nowMs < client.nextAttemptAtMs) continue;
      // The client tries a replica that believes it leads (as the real client follows leader hints).
      const leaders = this.replicas.filter((replica) => replica.alive && !replica.paused && replica.core!.isLeader);
      client.nextAttemptAtMs = this.nowMs + 100;
      client.attempt += 1;
      if (leaders.length === 0) continue;
      const leader = this.random.pick(leaders);
      if ([...leader.pending.values()].includes(client.requestId)) continue;
      // Idempotency: a request id already in the leader's log is not appended again.
      const existing = leader.log.find((entry) => entry.requestId === client.requestId);
      if (existing !== undefined) {
        leader.pending.set(existing.index, client.requestId);
        continue;
      }
      const position2 = leader.core!.nextClientPosition()!;
      leader.log.push({ index: position2.index, epoch: position2.epoch, requestId: client.requestId });
      leader.core!.clientEntryAppended(position2.index, this.localTime(leader));
      leader.pending.set(position2.index, client.requestId);
    }
  }

  private acknowledgeUpTo(leader: SimulatedReplica, commitIndex: number): void {
    for (const [index, requestId] of leader.pending) {
      if (index > commitIndex) continue;
      leader.pending.delete(index);
      const entry = leader.log[index - 1]!;
      if (entry.requestId !== requestId) throw this.violation(`leader ${leader.ordinal} index ${index} changed under a pending write`);
      this.checkDurableOnInSyncSet(leader, entry);
      const earlier = this.acknowledged.get(requestId);
      if (earlier !== undefined && (earlier.index !== index || earlier.epoch !== entry.epoch)) {
        throw this.violation(`${requestId} acknowledged at two positions: ${earlier.index} and ${index}`);
      }
      this.acknowledged.set(requestId, { requestId, index, epoch: entry.epoch });
      this.trace(`ack ${requestId} at ${index}@${entry.epoch} by ${leader.ordinal} inSync ${JSON.stringify(leader.core!.status().configuration!.inSync)} leases ${this.replicas.map((r) => r.core?.status().leaseValid).join(',')}`);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Invariants.

  private violation(message: string): InvariantViolation {
    return new InvariantViolation(
      `seed ${this.options.seed} at ${this.nowMs} ms: ${message}\n` +
        `replay with: SIMULATION_SEED=${this.options.seed} npm run test:simulation`,
    );
  }

  /** Invariant 1: at the moment of an acknowledgement, every in-sync member holds the write durably. */
  private checkDurableOnInSyncSet(leader: SimulatedReplica, entry: SimulatedEntry): void {
    const inSync = leader.core!.status().configuration!.inSync;
    for (const ordinal of inSync) {
      const held = this.replicas[ordinal]!.log[entry.index - 1];
      if (held?.epoch !== entry.epoch || held.requestId !== entry.requestId) {
        throw this.violation(`acknowledged ${entry.requestId} at ${entry.index} but in-sync replica ${ordinal} lacks it`);
      }
    }
  }

  /** Invariants 2 and 3: a new leader's epoch is its own alone, and its log holds every acknowledged write. */
  private onBecameLeader(replica: SimulatedReplica): void {
    this.counters.elections += 1;
    const epoch = replica.currentEpoch;
    this.trace(`leader ${replica.ordinal} epoch ${epoch} log ${replica.log.length} logs ${this.replicas.map((r) => `${r.ordinal}:${r.log.length}@${r.log[r.log.length - 1]?.epoch ?? 0}`).join(' ')}`);
    const earlier = this.leaderOfEpoch.get(epoch);
    if (earlier !== undefined) throw this.violation(`epoch ${epoch} led by ${earlier} and then by ${replica.ordinal}`);
    this.leaderOfEpoch.set(epoch, replica.ordinal);
    for (const write of this.acknowledged.values()) {
      const held = replica.log[write.index - 1];
      if (held?.epoch !== write.epoch || held.requestId !== write.requestId) {
        throw this.violation(`replica ${replica.ordinal} became leader of ${epoch} without acknowledged ${write.requestId}`);
      }
    }
  }

  /**
   * Invariant 4: a member re-enters the in-sync set only caught up exactly. When a configuration entry that
   * adds a member is committed (that is when it takes effect), the member's log equals the leader's up to it,
   * unless a later configuration already removed the member again.
   */
  private checkReadmissions(leader: SimulatedReplica, commitIndex: number): void {
    const checkedUpTo = this.readmissionsCheckedUpTo.get(leader) ?? 0;
    let previous: Configuration | undefined;
    for (const entry of leader.log.slice(0, commitIndex)) {
      if (entry.configuration === undefined) continue;
      if (entry.index > checkedUpTo && previous !== undefined) {
        const latestInSync = leader.core!.status().configuration!.inSync;
        for (const ordinal of entry.configuration.inSync) {
          // A member removed again before the commit never counted for an acknowledgement as re-admitted.
          if (previous.inSync.includes(ordinal) || !latestInSync.includes(ordinal)) continue;
          const follower = this.replicas[ordinal]!;
          const held = follower.log[entry.index - 1];
          if (held?.epoch !== entry.epoch || this.digestAt(follower, entry.index) !== this.digestAt(leader, entry.index)) {
            throw this.violation(`replica ${ordinal} re-entered the in-sync set at ${entry.index} without the leader's log`);
          }
        }
      }
      previous = entry.configuration;
    }
    this.readmissionsCheckedUpTo.set(leader, commitIndex);
  }

  private checkInvariants(): void {
    // Invariant 5: a request id takes effect once in any replica's log.
    for (const replica of this.replicas) {
      const seen = new Set<string>();
      for (const entry of replica.log) {
        if (entry.requestId === undefined) continue;
        if (seen.has(entry.requestId)) throw this.violation(`replica ${replica.ordinal} applied ${entry.requestId} twice`);
        seen.add(entry.requestId);
      }
    }
    // At most one leader per epoch at any instant, and log matching between any two replicas.
    const leaders = new Map<number, number>();
    for (const replica of this.replicas) {
      if (!replica.alive || !replica.core?.isLeader) continue;
      const other = leaders.get(replica.core.epoch);
      if (other !== undefined) throw this.violation(`replicas ${other} and ${replica.ordinal} both lead epoch ${replica.core.epoch}`);
      leaders.set(replica.core.epoch, replica.ordinal);
    }
  }

  private recovered(acknowledgedBeforeRecovery: number): boolean {
    const leader = this.replicas.find((replica) => replica.core?.isLeader);
    if (leader === undefined) return false;
    // New writes are acknowledged again, and every replica holds the same log as the leader.
    if (this.acknowledged.size <= acknowledgedBeforeRecovery + 3) return false;
    const digest = this.digestAt(leader, leader.log.length);
    const configuration = leader.core!.status().configuration!;
    const members = this.replicas.filter((replica) => configuration.members.some((member) => member.ordinal === replica.ordinal));
    // A replica that started to join must have joined, unless an operator removed it.
    const joiner = this.replicas[this.initialCount];
    if (
      this.joinerStarted &&
      joiner !== undefined &&
      !this.removalTargets.has(joiner.ordinal) &&
      !members.includes(joiner)
    ) {
      return false;
    }
    return (
      members.every(
        (replica) => replica.log.length === leader.log.length && this.digestAt(replica, replica.log.length) === digest,
      ) && configuration.inSync.length === members.length
    );
  }

  private describe(): string {
    return this.replicas
      .map((replica) => {
        const status = replica.core?.status();
        return `replica ${replica.ordinal}: ${replica.alive ? (replica.paused ? 'paused' : 'up') : 'down'} log ${replica.log.length} ` +
          (status === undefined ? '' : `${status.role} epoch ${status.epoch} leader ${status.leaderOrdinal} inSync ` +
            `${JSON.stringify(status.configuration?.inSync)} commit ${status.commitIndex} waiting ${status.waitingReason} followers ${JSON.stringify(status.followers)} snapshotting ${status.snapshotting}`);
      })
      .join('; ');
  }
}
