/**
 * The vocabulary of the replication protocol: epochs, members, configurations and log positions. Pure data,
 * shared by the protocol core, the driver and the simulation.
 */

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
