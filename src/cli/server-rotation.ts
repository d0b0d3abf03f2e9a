/**
 * Which server a client asks next. The client starts from the server that answered last, because in a
 * primary-backup cluster that is most likely still the leader; a follower's UNAVAILABLE answer that names
 * the leader moves it straight there, and any other failure moves it to the next address in the list.
 */
import * as grpc from '@grpc/grpc-js';
import { LEADER_METADATA_KEY } from '../api/status-mapping.js';

/**
 * Statuses after which the same request may go to another server (with the same request id, so a write the
 * first server did apply is not applied twice). UNAVAILABLE covers both a follower's refusal and a failed
 * connection; DEADLINE_EXCEEDED a server that hung; CANCELLED a server that went away in the middle of the
 * call, since the client itself only cancels calls when it is closed, and then it does not retry.
 */
const FAILOVER_STATUS_CODES: ReadonlySet<number> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.CANCELLED,
]);

export function isFailoverStatus(code: number): boolean {
  return FAILOVER_STATUS_CODES.has(code);
}

/** The leader address a server named in its status metadata, if it named one. */
export function leaderAddressFrom(metadata: grpc.Metadata | undefined): string | undefined {
  const value = metadata?.get(LEADER_METADATA_KEY)[0];
  const address = typeof value === 'string' ? value.trim() : value?.toString('utf8').trim();
  return address === undefined || address === '' ? undefined : address;
}

const RETRY_DELAY_FIRST_MS = 50;
const RETRY_DELAY_MAX_MS = 1000;

/**
 * How long to wait before retry number `retryNumber` (0 for the first retry): doubling from 50 ms up to
 * 1 s, with half of it random so that many clients that lost the same leader do not retry in lockstep.
 */
export function retryDelayMs(retryNumber: number): number {
  const ceiling = Math.min(RETRY_DELAY_MAX_MS, RETRY_DELAY_FIRST_MS * 2 ** Math.min(retryNumber, 16));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

export class ServerRotation {
  private readonly addresses: string[];
  private currentIndex = 0;

  constructor(addresses: readonly string[]) {
    if (addresses.length === 0) throw new Error('at least one server address is needed');
    this.addresses = [...new Set(addresses)];
  }

  /** The address to ask now. */
  get current(): string {
    return this.addresses[this.currentIndex]!;
  }

  /** Every known address, starting with the current one, for example to remember in a session file. */
  preferredOrder(): string[] {
    return [...this.addresses.slice(this.currentIndex), ...this.addresses.slice(0, this.currentIndex)];
  }

  /**
   * Moves on after `failedAddress` failed with `metadata`. Returns true when the server named a leader
   * other than itself, in which case the next attempt can go there at once, without a retry delay.
   * A failure of an address that is no longer current (a slower call that raced a failover) changes
   * nothing, so that concurrent calls do not skip servers.
   */
  failedOver(failedAddress: string, metadata: grpc.Metadata | undefined): boolean {
    const leader = leaderAddressFrom(metadata);
    if (leader !== undefined && leader !== failedAddress) {
      let leaderIndex = this.addresses.indexOf(leader);
      if (leaderIndex === -1) {
        // A leader outside the configured list is still the one to ask; it is remembered like the others.
        this.addresses.push(leader);
        leaderIndex = this.addresses.length - 1;
      }
      this.currentIndex = leaderIndex;
      return true;
    }
    if (failedAddress === this.current) this.currentIndex = (this.currentIndex + 1) % this.addresses.length;
    return false;
  }
}
