/**
 * The write path of a replica that is the whole cluster: a command is durable once it is appended and
 * applied in one fsynced SQLite transaction. Replication (issue 3) replaces this with a leader that also
 * waits for every in-sync follower; the ChatService does not change, because it sees only WritePath.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { WritePath } from '../api/chat-service.js';
import type { ClientCommand, CommandResult } from '../core/commands.js';
import type { ReplicaStore } from '../storage/replica-store.js';

/** The epoch of a single-replica cluster's only leader. */
const SINGLE_REPLICA_EPOCH = 1;

export class SingleReplicaWritePath implements WritePath {
  constructor(
    private readonly store: ReplicaStore,
    private readonly clockMs: () => number,
  ) {}

  get chat() {
    return this.store.chat;
  }

  nextTimestampMs(): number {
    return Math.max(this.clockMs(), this.store.lastTimestampMs);
  }

  submit(command: ClientCommand): Promise<CommandResult> {
    try {
      return Promise.resolve(this.store.appendAndApply(SINGLE_REPLICA_EPOCH, command).result);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  checkServing(): void {
    // A single replica always leads.
  }

  /** Writes the cluster's first entry if the log is empty; returns whether it did. */
  initializeIfNew(): boolean {
    if (this.store.lastIndex !== 0) return false;
    this.store.appendAndApply(SINGLE_REPLICA_EPOCH, {
      kind: 'initializeCluster',
      clusterId: randomUUID(),
      sessionSecretHex: randomBytes(32).toString('hex'),
      timestampMs: this.nextTimestampMs(),
    });
    return true;
  }
}
