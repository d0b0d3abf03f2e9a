/**
 * The vocabulary of the replication protocol: epochs, members, configurations and log positions. Pure data,
 * shared by the protocol core, the driver and the simulation.
 */

/**
 * Epochs are unique to their leader: `counter * EPOCH_ORDINAL_SPACE + ordinal`. Ordering epochs as numbers
 * orders them by counter first, and two replicas can never start the same epoch.
 */
export const EPOCH_ORDINAL_SPACE = 1024;

export function epochFor(counter: number, ordinal: number): number {
  return counter * EPOCH_ORDINAL_SPACE + ordinal;
}

/** The smallest epoch owned by `ordinal` that is newer than `newerThan`. */
export function nextEpoch(newerThan: number, ordinal: number): number {
  return epochFor(Math.floor(newerThan / EPOCH_ORDINAL_SPACE) + 1, ordinal);
}

export function epochLeaderOrdinal(epoch: number): number {
  return epoch % EPOCH_ORDINAL_SPACE;
}

/** A replica of the cluster: its ordinal (0, 1, 2 … as in a StatefulSet) and its peer address. */
export interface Member {
  readonly ordinal: number;
  readonly address: string;
}

/**
 * The replicated configuration: who the members are, and which of them are in sync. The leader
 * acknowledges a write only once every in-sync member holds it durably.
 */
export interface Configuration {
  readonly members: readonly Member[];
  readonly inSync: readonly number[];
  /**
   * Ordinals an operator removed. A replica left out of the members and listed here knows it was removed
   * and waits to be wiped; one left out but not listed (its join entry was lost with a crashed leader's
   * uncommitted tail) asks to join again.
   */
  readonly removed?: readonly number[];
}

/** What the core knows about one log entry; the command itself is opaque to it. */
export interface EntryMeta {
  readonly index: number;
  readonly epoch: number;
  /** Set on configuration entries. */
  readonly configuration?: Configuration;
  /** Set on the first entry of a brand-new cluster. */
  readonly initialize?: true;
}

/** An entry as it travels between replicas: the core's view plus the opaque command. */
export interface WireEntry extends EntryMeta {
  readonly command?: unknown;
}

/** (epoch, index) of a log's last entry, compared epoch first. */
export function compareLogPositions(
  a: { readonly lastEpoch: number; readonly lastIndex: number },
  b: { readonly lastEpoch: number; readonly lastIndex: number },
): number {
  return a.lastEpoch !== b.lastEpoch ? a.lastEpoch - b.lastEpoch : a.lastIndex - b.lastIndex;
}

export function sameConfiguration(a: Configuration, b: Configuration): boolean {
  return JSON.stringify(normalizeConfiguration(a)) === JSON.stringify(normalizeConfiguration(b));
}

/** Sorted members and in-sync ordinals, so that equal configurations serialise equally. */
export function normalizeConfiguration(configuration: Configuration): Configuration {
  const removed = [...new Set(configuration.removed ?? [])].sort((a, b) => a - b);
  return {
    members: [...configuration.members].sort((a, b) => a.ordinal - b.ordinal),
    inSync: [...new Set(configuration.inSync)].sort((a, b) => a - b),
    ...(removed.length > 0 ? { removed } : {}),
  };
}
