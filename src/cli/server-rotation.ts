/**
 * Which server a client asks next. The client starts from the server that answered last, because in a
 * primary-backup cluster that is most likely still the leader; a follower's UNAVAILABLE answer that names
 * the leader moves it straight there, and any other failure moves it to the next address in the list.
 *
 * A hint is only a hint: a follower can be wrong or lying, and following it sends the password along. So a
 * hint is followed only to an address in the configured list, or, when `followUnlistedHints` is set, to
 * any address: the client sets that only when it verifies servers against a private CA given by the user,
 * so that an unlisted server must still present a certificate that the cluster's CA issued for its name.
 * Addresses learned from hints are never part of `preferredOrder()`, which the session file stores.
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
  // Anything but a short host:port is not an address, whatever a server says.
  if (address === undefined || address.length > 255 || !/^[^\s,]+:\d{1,5}$/.test(address)) return undefined;
  return address;
}

const RETRY_DELAY_FIRST_MS = 50;
const RETRY_DELAY_MAX_MS = 1000;

/**
 * How long to wait before retry number `retryNumber` (0 for the first retry): doubling from 50 ms up to
 * `maxMs` (1 s unless told), with half of it random so that many clients that lost the same leader do not
 * retry in lockstep.
 */
export function retryDelayMs(retryNumber: number, maxMs = RETRY_DELAY_MAX_MS): number {
  const ceiling = Math.min(maxMs, RETRY_DELAY_FIRST_MS * 2 ** Math.min(retryNumber, 16));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

export interface ServerRotationOptions {
  /** Follow a hint to an address outside the list; see the module comment for when that is safe. */
  readonly followUnlistedHints?: boolean;
}

export class ServerRotation {
  private readonly addresses: string[];
  private readonly followUnlistedHints: boolean;
  private currentIndex = 0;
  /** A hinted leader outside the list that the next attempt goes to; cleared when it fails. */
  private unlistedLeader: string | undefined;

  constructor(addresses: readonly string[], options: ServerRotationOptions = {}) {
    if (addresses.length === 0) throw new Error('at least one server address is needed');
    this.addresses = [...new Set(addresses)];
    this.followUnlistedHints = options.followUnlistedHints === true;
  }

  /** The address to ask now. */
  get current(): string {
    return this.unlistedLeader ?? this.addresses[this.currentIndex]!;
  }

  /**
   * The configured addresses, starting with the one that answered last, for example to remember in a
   * session file. Never an address that only a hint named.
   */
  preferredOrder(): string[] {
    return [...this.addresses.slice(this.currentIndex), ...this.addresses.slice(0, this.currentIndex)];
  }

  /** The configured addresses, in their configured order. */
  get servers(): readonly string[] {
    return this.addresses;
  }

  /** True when `address` is one of the configured addresses. */
  isListed(address: string): boolean {
    return this.addresses.includes(address);
  }

  /**
   * Moves on after `failedAddress` failed with `metadata`. Returns true when the server named a leader
   * other than itself, in which case the next attempt can go there at once, without a retry delay.
   * A failure of an address that is no longer current (a slower call that raced a failover) changes
   * nothing, so that concurrent calls do not skip servers.
   */
  failedOver(failedAddress: string, metadata: grpc.Metadata | undefined): boolean {
    if (failedAddress === this.unlistedLeader) {
      // The unlisted leader failed: back to the configured list, where the rotation stood.
      this.unlistedLeader = undefined;
      return false;
    }
    const leader = leaderAddressFrom(metadata);
    if (leader !== undefined && leader !== failedAddress) {
      const leaderIndex = this.addresses.indexOf(leader);
      if (leaderIndex !== -1) {
        this.currentIndex = leaderIndex;
        return true;
      }
      if (this.followUnlistedHints) {
        this.unlistedLeader = leader;
        return true;
      }
      // An unlisted address is ignored: the rotation goes on through the list as for any failure.
    }
    if (failedAddress === this.current) this.currentIndex = (this.currentIndex + 1) % this.addresses.length;
    return false;
  }
}
