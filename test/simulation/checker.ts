/**
 * The checks of the simulation, on the real tables of the real replicas. After every event: one leader per
 * epoch, a leader leads only an epoch the store gave it, and a replica that starts leading already holds
 * every write acknowledged in an earlier epoch. At every acknowledgement: the write is durable on every
 * replica of the in-sync set the store holds at that instant (read from the live replica's tables, or from
 * the file of a crashed one). Whatever a replica shows a client (a history page, ReadMessages, a
 * subscription's replay or push) must likewise be committed at the instant it is shown. At every completed
 * read: it shows each write of its user acknowledged before it was invoked. At the end, on the converged state: every acknowledged write is there with the result
 * the client was given, no request id was applied twice (each request's unique message body occurs at most
 * once), and everything any client was shown (history, ReadMessages, subscription replay and pushes)
 * survived.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { checkerRead } from './checker-mutants.js';
import type { ReplicaSlot, SimulatedCluster } from './simulated-cluster.js';
import type { AcknowledgedWrite, HistoryRead, Workload, WorkloadHooks } from './workload.js';

/** SIMULATION_TRACE=acknowledgements adds every acknowledged write to the trace. */
const TRACE_ACKNOWLEDGEMENTS = process.env.SIMULATION_TRACE === 'acknowledgements';

/** How many messages of one answer are checked for being committed (history pages: the newest). */
const SHOWN_CHECKED_PER_ANSWER = 8;

export class Checker implements WorkloadHooks {
  private readonly leaderOfEpoch = new Map<number, number>();
  private readonly leadershipsChecked = new Set<string>();
  private swapsChecked = 0;
  private readonly storeLeaderOfEpoch = new Map<number, number>();
  workload: Workload | undefined;
  counters = { acknowledgements: 0, leadershipsChecked: 0, readsChecked: 0, fileChecks: 0, shownChecked: 0 };

  constructor(private readonly cluster: SimulatedCluster) {}

  /** Whether the write's request id is recorded in the replica's tables (the real de-duplication record). */
  private holds(slot: ReplicaSlot, requestId: string): boolean {
    if (slot.up && slot.node !== undefined) {
      try {
        return checkerRead(() => slot.node!.chat.request(requestId)) !== undefined;
      } catch {
        // The handle is closed (a snapshot is being swapped in): the file tells.
      }
    }
    return this.fileHolds(slot, requestId);
  }

  /** Whether the message is in the replica's tables. */
  private holdsMessage(slot: ReplicaSlot, messageId: string): boolean {
    if (slot.up && slot.node !== undefined) {
      try {
        return slot.node.chat.message(messageId) !== undefined;
      } catch {
        // As in holds().
      }
    }
    return this.fileQuery(slot, 'SELECT 1 FROM messages WHERE id = ?', messageId);
  }

  /** Reads a crashed or paused replica's database file directly, as an operator would after the fact. */
  private fileHolds(slot: ReplicaSlot, requestId: string): boolean {
    return this.fileQuery(slot, 'SELECT 1 FROM requests WHERE request_id = ?', requestId);
  }

  private fileQuery(slot: ReplicaSlot, sql: string, key: string): boolean {
    this.counters.fileChecks += 1;
    const database = new Database(join(slot.dataDirectory, 'replichat.sqlite'), { readonly: true, fileMustExist: true });
    try {
      return database.prepare(sql).get(key) !== undefined;
    } finally {
      database.close();
    }
  }

  /**
   * What a replica shows a client must be committed: held by every replica of the recorded in-sync set at
   * that instant (then no failover can take it back). For a history page only the newest few are checked:
   * uncommitted messages would be the newest.
   */
  onShown(messages: readonly { id: string; body: string }[], how: string, slot: ReplicaSlot): void {
    const record = this.cluster.store.peek()?.record;
    if (record === undefined) return;
    for (const message of messages.slice(0, SHOWN_CHECKED_PER_ANSWER)) {
      this.counters.shownChecked += 1;
      for (const ordinal of record.inSync) {
        const member = this.cluster.replicas[ordinal];
        if (member === undefined) continue;
        let held: boolean;
        try {
          held = this.holdsMessage(member, message.id);
        } catch (error) {
          this.cluster.trace(`checker: could not read replica ${ordinal}'s file: ${String(error)}`);
          continue;
        }
        if (!held) {
          this.cluster.violation(
            `replica ${slot.ordinal} showed "${message.body}" (${how}) before it was committed: replica ${ordinal} of the recorded in-sync set {${record.inSync.join(',')}} did not hold it`,
          );
        }
      }
    }
  }

  onAcknowledged(write: AcknowledgedWrite, slot: ReplicaSlot): void {
    this.counters.acknowledgements += 1;
    if (TRACE_ACKNOWLEDGEMENTS) this.cluster.trace(`acknowledged ${write.requestId} by replica ${slot.ordinal}`);
    const record = this.cluster.store.peek()?.record;
    if (record === undefined) {
      this.cluster.violation(`replica ${slot.ordinal} acknowledged ${write.requestId} before the cluster record existed`);
      return;
    }
    for (const ordinal of record.inSync) {
      const member = this.cluster.replicas[ordinal];
      if (member === undefined) continue;
      let held: boolean;
      try {
        held = this.holds(member, write.requestId);
      } catch (error) {
        // A file being swapped for a snapshot cannot be read at this instant; its replica is not in sync then.
        this.cluster.trace(`checker: could not read replica ${ordinal}'s file: ${String(error)}`);
        continue;
      }
      if (!held) {
        this.cluster.violation(
          `replica ${slot.ordinal} (epoch ${write.epoch}) acknowledged ${write.requestId} while replica ${ordinal} of the recorded in-sync set {${record.inSync.join(',')}} (epoch ${record.epoch}) did not hold it`,
        );
      }
    }
  }

  onHistoryRead(read: HistoryRead): void {
    this.counters.readsChecked += 1;
    if (!read.complete || this.workload === undefined) return;
    for (const write of this.workload.acknowledged.values()) {
      if (write.kind !== 'sendMessage' || write.sender !== read.username || write.ackedAtMs >= read.invokedAtMs) continue;
      const shownId = read.bodies.get(write.body!);
      if (shownId === undefined) {
        this.cluster.violation(
          `a history read of ${read.username} on replica ${read.ordinal}, invoked at ${read.invokedAtMs.toFixed(1)} ms, missed ${write.requestId}, acknowledged at ${write.ackedAtMs.toFixed(1)} ms by replica ${write.ordinal}`,
        );
      } else if (shownId !== write.messageId) {
        this.cluster.violation(`a history read showed ${write.requestId} with message id ${shownId}, but the client was given ${write.messageId}`);
      }
    }
  }

  /** The checks after every event. */
  afterEvent(): void {
    const swaps = this.cluster.store.swaps;
    for (; this.swapsChecked < swaps.length; this.swapsChecked += 1) {
      const swap = swaps[this.swapsChecked]!;
      const earlier = this.storeLeaderOfEpoch.get(swap.record.epoch);
      if (earlier !== undefined && earlier !== swap.record.leader) {
        this.cluster.violation(`the store named two leaders for epoch ${swap.record.epoch}: ${earlier} and ${swap.record.leader}`);
      }
      this.storeLeaderOfEpoch.set(swap.record.epoch, swap.record.leader);
    }
    for (const slot of this.cluster.replicas) {
      if (!slot.running) continue;
      const status = slot.status();
      if (status === undefined || !status.leading) continue;
      const earlier = this.leaderOfEpoch.get(status.epoch);
      if (earlier !== undefined && earlier !== slot.ordinal) {
        this.cluster.violation(`two leaders in epoch ${status.epoch}: replicas ${earlier} and ${slot.ordinal}`);
      }
      this.leaderOfEpoch.set(status.epoch, slot.ordinal);
      const key = `${slot.ordinal}@${status.epoch}`;
      if (this.leadershipsChecked.has(key)) continue;
      this.leadershipsChecked.add(key);
      this.counters.leadershipsChecked += 1;
      const named = this.storeLeaderOfEpoch.get(status.epoch);
      if (named !== slot.ordinal) {
        this.cluster.violation(`replica ${slot.ordinal} leads epoch ${status.epoch}, which the store gave to ${named ?? 'nobody'}`);
      }
      this.checkHoldsEarlierWrites(slot, status.epoch);
    }
  }

  /** A new leader of `epoch` must hold every write acknowledged in an earlier epoch. */
  private checkHoldsEarlierWrites(slot: ReplicaSlot, epoch: number): void {
    if (this.workload === undefined) return;
    for (const write of this.workload.acknowledged.values()) {
      if (write.epoch >= epoch) continue;
      if (!this.holds(slot, write.requestId)) {
        this.cluster.violation(
          `replica ${slot.ordinal} leads epoch ${epoch} without ${write.requestId}, acknowledged by replica ${write.ordinal} in epoch ${write.epoch} at ${write.ackedAtMs.toFixed(1)} ms`,
        );
      }
    }
  }

  /** The checks on the converged state at the end of a run; `survivors` are the replicas compared. */
  checkConverged(survivors: readonly ReplicaSlot[]): void {
    const workload = this.workload;
    if (workload === undefined || survivors.length === 0) return;
    const digests = survivors.map((slot) => this.cluster.guard(slot, () => slot.node!.stateDigest()));
    for (let index = 1; index < survivors.length; index += 1) {
      if (digests[index] !== digests[0]) {
        this.cluster.violation(
          `replicas ${survivors[0]!.ordinal} and ${survivors[index]!.ordinal} did not converge: state digests ${digests[0]} and ${digests[index]}`,
        );
      }
    }
    const reference = survivors[0]!;
    const chat = reference.node!.chat;
    // Every message of every user, by body: each request's body is unique, so a body seen twice is a request
    // applied twice.
    const idsByBody = new Map<string, string[]>();
    for (const username of workload.usernames) {
      for (const message of chat.history(username, undefined, Number.MAX_SAFE_INTEGER, 1_000_000)) {
        if (message.sender !== username) continue;
        const ids = idsByBody.get(message.body) ?? [];
        ids.push(message.id);
        idsByBody.set(message.body, ids);
      }
    }
    for (const [body, ids] of idsByBody) {
      if (ids.length > 1) this.cluster.violation(`"${body}" was applied ${ids.length} times: messages ${ids.join(', ')}`);
    }
    for (const write of workload.acknowledged.values()) {
      const record = checkerRead(() => chat.request(write.requestId));
      if (record === undefined) {
        this.cluster.violation(
          `acknowledged ${write.requestId} (replica ${write.ordinal}, epoch ${write.epoch}, ${write.ackedAtMs.toFixed(1)} ms) is not in the converged state`,
        );
        continue;
      }
      if (write.kind !== 'sendMessage') continue;
      const ids = idsByBody.get(write.body!) ?? [];
      if (ids.length !== 1 || ids[0] !== write.messageId) {
        this.cluster.violation(`acknowledged ${write.requestId} was given message ${write.messageId}, the converged state holds [${ids.join(', ')}]`);
      }
    }
    for (const shown of workload.shown) {
      const ids = idsByBody.get(shown.body) ?? [];
      if (!ids.includes(shown.messageId)) {
        this.cluster.violation(
          `a client was shown "${shown.body}" (message ${shown.messageId}, by ${shown.how} on replica ${shown.ordinal} at ${shown.shownAtMs.toFixed(1)} ms), which the converged state does not hold`,
        );
      }
    }
  }
}
