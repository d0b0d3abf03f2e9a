/**
 * Limits on the two calls that make a replica compute scrypt for anyone who asks: Login and CreateAccount.
 * Each attempt takes a token from two buckets, one for the username and one for the client's address; an
 * empty bucket refuses with RESOURCE_EXHAUSTED and says when a token will be back. Password guessing
 * against one account is therefore slowed whatever the number of addresses, and one address cannot starve
 * everyone else. Separately, scrypt runs at most PASSWORD_HASHING_CONCURRENCY at a time, with a short
 * queue, so that a burst that passes the buckets still cannot take all the memory or all the cores.
 *
 * The buckets live in the memory of the replica that serves the call (the leader): a failover starts them
 * afresh, and a client behind a proxy is counted by the proxy's address.
 */
import { ResourceExhaustedError } from '../core/errors.js';

/** How many tokens a bucket holds and how fast it refills. */
export interface BucketRule {
  readonly capacity: number;
  readonly refillPerSecond: number;
}

/** The default rules, per replica. */
export const LOGIN_RATE_RULES = Object.freeze({
  /** Ten guesses at one account, then one every six seconds (600 an hour, not 600 a second). */
  loginPerUsername: { capacity: 10, refillPerSecond: 1 / 6 },
  /** A busy NAT may log many users in; a flood from one address is still cut to two a second. */
  loginPerAddress: { capacity: 30, refillPerSecond: 2 },
  createAccountPerUsername: { capacity: 5, refillPerSecond: 1 / 6 },
  createAccountPerAddress: { capacity: 10, refillPerSecond: 1 / 6 },
}) satisfies Record<string, BucketRule>;

/** Buckets remembered at most per limiter; a full bucket is the same as a forgotten one, so it goes first. */
const MAX_TRACKED_KEYS = 100_000;

/** Token buckets keyed by a string, refilled lazily from a monotonic clock. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; updatedAtMs: number }>();

  constructor(
    private readonly rule: BucketRule,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** Takes one token for `key`: 0 when it was there, else the milliseconds until one will be. */
  take(key: string): number {
    const now = this.nowMs();
    const bucket = this.buckets.get(key) ?? { tokens: this.rule.capacity, updatedAtMs: now };
    bucket.tokens = Math.min(this.rule.capacity, bucket.tokens + ((now - bucket.updatedAtMs) / 1000) * this.rule.refillPerSecond);
    bucket.updatedAtMs = now;
    // Re-inserting keeps the map in least-recently-used order, for the eviction below.
    this.buckets.delete(key);
    this.buckets.set(key, bucket);
    if (this.buckets.size > MAX_TRACKED_KEYS) this.evict();
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) / this.rule.refillPerSecond) * 1000);
  }

  /** Gives back a token taken by `take`, when a later check refused the attempt anyway. */
  giveBack(key: string): void {
    const bucket = this.buckets.get(key);
    if (bucket !== undefined) bucket.tokens = Math.min(this.rule.capacity, bucket.tokens + 1);
  }

  private evict(): void {
    // The least recently used tenth goes: an attacker who sprays keys evicts only their own fresh buckets
    // and old idle ones, which would have refilled anyway.
    let toRemove = Math.ceil(MAX_TRACKED_KEYS / 10);
    for (const key of this.buckets.keys()) {
      if (toRemove-- <= 0) break;
      this.buckets.delete(key);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}

function refusal(what: string, retryAfterMs: number): ResourceExhaustedError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ResourceExhaustedError(`too many ${what}; retry in ${seconds} s`, retryAfterMs);
}

/** The client's address from grpc-js's `call.getPeer()` (`host:port`, `[v6]:port` or `v6:port`), without the port. */
export function clientAddressOf(peer: string): string {
  let host = peer.replace(/^(ipv4|ipv6):/, '');
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
  if (bracketed !== null) host = bracketed[1]!;
  else if (/:\d+$/.test(host)) host = host.slice(0, host.lastIndexOf(':'));
  return host.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');
}

/** The login and sign-up buckets of one replica. */
export class LoginRateLimits {
  private readonly loginByUsername: TokenBuckets;
  private readonly loginByAddress: TokenBuckets;
  private readonly createByUsername: TokenBuckets;
  private readonly createByAddress: TokenBuckets;

  constructor(rules: typeof LOGIN_RATE_RULES = LOGIN_RATE_RULES, nowMs?: () => number) {
    this.loginByUsername = new TokenBuckets(rules.loginPerUsername, nowMs);
    this.loginByAddress = new TokenBuckets(rules.loginPerAddress, nowMs);
    this.createByUsername = new TokenBuckets(rules.createAccountPerUsername, nowMs);
    this.createByAddress = new TokenBuckets(rules.createAccountPerAddress, nowMs);
  }

  /** Throws RESOURCE_EXHAUSTED (with when to retry) unless `username` from `clientAddress` may try now. */
  checkLogin(usernameKey: string, clientAddress: string): void {
    this.check(this.loginByAddress, clientAddress, this.loginByUsername, usernameKey, 'login attempts');
  }

  checkCreateAccount(usernameKey: string, clientAddress: string): void {
    this.check(this.createByAddress, clientAddress, this.createByUsername, usernameKey, 'sign-up attempts');
  }

  private check(byAddress: TokenBuckets, address: string, byUsername: TokenBuckets, username: string, what: string): void {
    const addressWaitMs = byAddress.take(address);
    if (addressWaitMs > 0) throw refusal(`${what} from this address`, addressWaitMs);
    const usernameWaitMs = byUsername.take(username);
    if (usernameWaitMs > 0) {
      // Attempts refused for the username do not count against the address: a user who mistypes is not
      // charged for someone else's guessing at their account.
      byAddress.giveBack(address);
      throw refusal(`${what} for this username`, usernameWaitMs);
    }
  }
}

/**
 * Runs at most `maxRunning` tasks at once; up to `maxWaiting` more wait their turn, and any beyond that are
 * refused at once with RESOURCE_EXHAUSTED rather than queued without bound.
 */
export class ConcurrencyLimit {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly maxRunning: number,
    private readonly maxWaiting: number,
    private readonly what: string,
  ) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.maxRunning) {
      if (this.waiting.length >= this.maxWaiting) throw refusal(this.what, 1000);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running += 1;
    }
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter, so that `running` never drops while someone waits.
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.running -= 1;
    }
  }

  get runningCount(): number {
    return this.running;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }
}
