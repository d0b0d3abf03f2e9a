/**
 * EXPLORATION ONLY (SIMULATION_EXPLORE_PATCHES=1, never in CI): stand-in fixes of two core bugs the
 * simulation found, so that runs get past them and can find further bugs. They are not the fixes the
 * core should take (see NOTEBOOK §18); they only make the stuck states go away.
 * - seed 25: a takeover campaign whose swap failed without taking effect is never retried or dropped.
 * - seed 6: a follower that lost its leader ignores that leader's installSnapshot forever.
 */
import { ReplicaCore } from '../../src/core/replication/replica-core.js';

type Core = Record<string, unknown> & {
  campaign: { epoch: number; expectedVersion: string | null } | null;
  stored: { version: string } | null;
  storeKnown: boolean;
  storeRequestOutstanding: unknown;
  output: Record<string, unknown>;
  currentEpoch: number;
  leaderOrdinal: number | null;
  role: string;
};

export function applyExplorationPatches(): void {
  const prototype = ReplicaCore.prototype as unknown as Record<string, (this: Core, ...args: unknown[]) => unknown>;
  const resolveCampaign = prototype.resolveCampaign!;
  prototype.resolveCampaign = function patchedResolveCampaign(this: Core) {
    resolveCampaign.call(this);
    const campaign = this.campaign;
    if (campaign === null || !this.storeKnown || this.storeRequestOutstanding !== null) return;
    const version = this.stored?.version ?? null;
    // The store still holds the version the campaign named: its swap never took effect. Drop it, so that
    // the replica may propose again.
    if (version === campaign.expectedVersion) {
      this.campaign = null;
      this.output.persistCampaign = null;
    }
  };
  const onInstallSnapshot = prototype.onInstallSnapshot!;
  prototype.onInstallSnapshot = function patchedOnInstallSnapshot(this: Core, message: unknown) {
    const { epoch, from } = message as { epoch: number; from: number };
    // Epochs have one leader each (the store names it), so a message of the current epoch names its leader.
    if (epoch === this.currentEpoch && this.leaderOrdinal === null && this.role !== 'leader') this.leaderOrdinal = from;
    return onInstallSnapshot.call(this, message);
  };
}

/**
 * Deliberately broken drivers (SIMULATION_MUTANT=…), to show that the checks catch what they claim to:
 * `early-ack` acknowledges writes before they are committed, `no-read-barrier` serves reads at once, and
 * `no-dedup` forgets every request id.
 */
export async function applyMutant(name: string): Promise<void> {
  const { ReplicaNode } = await import('../../src/node/replica-node.js');
  const { ChatState } = await import('../../src/storage/chat-state.js');
  const node = ReplicaNode.prototype as unknown as Record<string, unknown>;
  if (name === 'early-ack') node.awaitCommitted = () => Promise.resolve();
  else if (name === 'no-read-barrier') node.readBarrier = () => Promise.resolve();
  else if (name === 'no-dedup') {
    const chat = ChatState.prototype as unknown as Record<string, (this: unknown, ...args: unknown[]) => unknown>;
    const request = chat.request!;
    // The driver and the service forget request ids; the checker (reading through checkerRead) does not.
    chat.request = function forgetfulRequest(this: unknown, ...args: unknown[]) {
      return checkerReading ? request.apply(this, args) : undefined;
    };
  }
  else throw new Error(`unknown mutant ${name}`);
}

let checkerReading = false;

/** Runs one of the checker's reads of a replica's tables (so that the no-dedup mutant does not blind it). */
export function checkerRead<T>(read: () => T): T {
  checkerReading = true;
  try {
    return read();
  } finally {
    checkerReading = false;
  }
}
