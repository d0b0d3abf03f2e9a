/**
 * The one place where the simulation meets the real driver's API (src/node/replica-node.ts): how a
 * ReplicaNode is built over the simulated seams, and how its status is read. Everything else in
 * test/simulation/ talks to replicas through these functions, so a change of the driver's surface is
 * absorbed here.
 */
import type { Logger } from 'pino';
import { DEFAULT_REPLICATION_TIMINGS, type ReplicationTimings } from '../../src/core/replication/replica-core.js';
import type { Member } from '../../src/core/replication/types.js';
import type { DriverSeams } from '../../src/node/seams.js';
import { ReplicaNode } from '../../src/node/replica-node.js';
import { applyMutant } from './checker-mutants.js';

export type StorageWriteKind = 'epoch' | 'entries' | 'snapshot';

/** The storage fault hooks the driver calls around every durable write. */
export interface StorageFaultHooks {
  beforeWrite(kind: StorageWriteKind): void;
  afterWrite(kind: StorageWriteKind): void;
}

export interface SimulatedSeams extends DriverSeams {
  readonly storageFaults: StorageFaultHooks;
}

export interface NodeOptions {
  readonly ordinal: number;
  readonly members: readonly Member[];
  readonly dataDirectory: string;
  readonly clientAddress: string;
  readonly logRetentionEntries: number;
  readonly timings?: ReplicationTimings;
}

export const SIMULATION_TIMINGS: ReplicationTimings = DEFAULT_REPLICATION_TIMINGS;

if (process.env.SIMULATION_MUTANT !== undefined) await applyMutant(process.env.SIMULATION_MUTANT);

/** Metrics are not under test here: every observer callback is accepted and ignored. */
const ignoringObserver = new Proxy({}, { get: () => () => undefined });

export function createNode(options: NodeOptions, seams: SimulatedSeams, logger: Logger): ReplicaNode {
  return new ReplicaNode(
    {
      ordinal: options.ordinal,
      peers: options.members,
      timings: options.timings ?? SIMULATION_TIMINGS,
      logRetentionEntries: options.logRetentionEntries,
      dataDirectory: options.dataDirectory,
      clientAddress: options.clientAddress,
    },
    seams,
    logger,
    ignoringObserver as never,
  );
}

/** What the checker reads of a replica's status. */
export interface ObservedStatus {
  readonly leading: boolean;
  readonly epoch: number;
  readonly lastIndex: number;
  readonly commitIndex: number;
  readonly leaderOrdinal: number | null;
}

export function observeStatus(node: ReplicaNode): ObservedStatus {
  const status = node.status() as unknown as Record<string, unknown>;
  return {
    leading: status.role === 'leader',
    epoch: Number(status.epoch ?? 0),
    lastIndex: Number(status.lastIndex ?? 0),
    commitIndex: Number(status.commitIndex ?? 0),
    leaderOrdinal: typeof status.leaderOrdinal === 'number' ? status.leaderOrdinal : null,
  };
}

export type { ReplicaNode };
