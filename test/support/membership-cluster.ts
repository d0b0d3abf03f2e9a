/**
 * What the membership tests (test/membership-netns.test.ts) need beyond the cluster itself, which is
 * test/support/netns-cluster.ts like every other namespace suite's: building a replica's database offline
 * (seedDatabase), so that a test can start from a log of tens of thousands of entries without sending them;
 * a stream of sends that records when each one was acknowledged (SendStream); and the operator's
 * RemoveMember call made with plain grpc-js (callRemoveMember), so that the test sees the status and
 * metadata exactly as a server sent them.
 */
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import { hashPassword } from '../../src/api/password-hashing.js';
import { LEADER_METADATA_KEY } from '../../src/api/status-mapping.js';
import { ChatClient, type ChatClientOptions } from '../../src/cli/chat-client.js';
import type { Command } from '../../src/core/commands.js';
import type { ClusterRecord } from '../../src/core/replication/cluster-record.js';
import type { Member } from '../../src/core/replication/types.js';
import { ReplicaStore } from '../../src/storage/replica-store.js';
import { callUnary, chatServiceClient, pollUntil } from './netns-cluster.js';

/** A fingerprint as the peer port checks it: 64 hex digits (the API's is a SHA-256 of the arguments). */
function seedFingerprint(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export const PASSWORD = 'correct horse battery staple';

/** How a RemoveMember call ended: OK, or the status code, details and any `replichat-leader` metadata. */
export interface RemoveMemberOutcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly leaderAddress: string | undefined;
}

/** Calls RemoveMember({ordinal}) on the replica at `address` with `authorization: Bearer <token>`. */
export async function callRemoveMember(address: string, ordinal: number, token: string | undefined): Promise<RemoveMemberOutcome> {
  const client = chatServiceClient(address);
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  try {
    await callUnary(client, 'RemoveMember', { ordinal }, metadata, 5_000);
    return { code: grpc.status.OK, details: '', leaderAddress: undefined };
  } catch (error) {
    const serviceError = error as grpc.ServiceError;
    const leader = serviceError.metadata?.get(LEADER_METADATA_KEY)[0];
    return {
      code: serviceError.code,
      details: serviceError.details,
      leaderAddress: typeof leader === 'string' ? leader : undefined,
    };
  } finally {
    client.close();
  }
}

// -------------------------------------------------------------------------------------------------------
// Offline seeding.

export interface SeedOptions {
  /** The members of the configuration entry; replica 0 is its whole in-sync set. */
  readonly members: readonly Member[];
  readonly messageCount: number;
  /** Bytes of each message body (ASCII); bigger bodies make a bigger snapshot for the same seeding time. */
  readonly bodyBytes?: number;
}

/** A message's id, shaped like the UUIDs the server makes: the seed's n-th message. */
export function seededMessageId(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

/** The cluster id of a seeded database; the store's record must carry the same (seededRecord). */
export const SEEDED_CLUSTER_ID = 'seeded';
const SEEDED_EPOCH = 1;

/**
 * The configuration store's record that goes with a seeded database: epoch 1 led by replica 0, the given
 * members, and replica 0 alone in sync (the others start empty). Write it with
 * NetnsCluster.createStoreRecord before the replicas start.
 */
export function seededRecord(members: readonly Member[]): ClusterRecord {
  return {
    epoch: SEEDED_EPOCH,
    leader: 0,
    members: [...members].sort((a, b) => a.ordinal - b.ordinal),
    inSync: [0],
    removed: [],
    clusterId: SEEDED_CLUSTER_ID,
  };
}

/**
 * Builds replica 0's database directly, as the protocol would have left it: `initializeCluster`, a
 * configuration entry (the given members, in-sync set {0}), accounts alice and bob (password PASSWORD), then
 * `messageCount` messages from alice to bob, all in epoch 1 and in one transaction, which is what makes it
 * fast: one fsync instead of one per entry. With seededRecord in the store, replica 0 starts as the leader of
 * epoch 1 (it is the whole in-sync set) and the other members, started empty, catch up from a snapshot.
 */
export async function seedDatabase(path: string, options: SeedOptions): Promise<{ lastIndex: number; seconds: number }> {
  const startedAtMs = performance.now();
  const epoch = SEEDED_EPOCH;
  const passwordHashes = { alice: await hashPassword(PASSWORD), bob: await hashPassword(PASSWORD) };
  const body = 'x'.repeat(options.bodyBytes ?? 64);
  const store = ReplicaStore.open(path);
  try {
    // Timestamps never run backwards and end about now, so that the cluster's next ones follow on.
    let timestampMs = Date.now() - options.messageCount - 10;
    const next = (): number => (timestampMs += 1);
    store.database.transaction(() => {
      const append = (command: Command): void => {
        store.appendAndApply(epoch, command);
      };
      append({ kind: 'initializeCluster', clusterId: SEEDED_CLUSTER_ID, sessionSecretHex: 'ab'.repeat(32), timestampMs: next() });
      append({
        kind: 'configuration',
        configuration: { members: [...options.members].sort((a, b) => a.ordinal - b.ordinal), inSync: [0] },
        timestampMs: next(),
      });
      for (const username of ['alice', 'bob'] as const) {
        append({
          kind: 'createAccount',
          requestId: `seed-account-${username}`,
          principal: `user:${username}`,
          fingerprint: seedFingerprint(`seed-account-${username}`),
          timestampMs: next(),
          username,
          passwordHash: passwordHashes[username],
        });
      }
      for (let n = 0; n < options.messageCount; n += 1) {
        append({
          kind: 'sendMessage',
          requestId: `seed-message-${n}`,
          principal: `session:${'0'.repeat(32)}`,
          fingerprint: seedFingerprint(`seed-message-${n}`),
          timestampMs: next(),
          messageId: seededMessageId(n),
          sender: 'alice',
          recipient: 'bob',
          body: `${n} ${body}`,
          instant: false,
        });
      }
    })();
    return { lastIndex: store.lastIndex, seconds: (performance.now() - startedAtMs) / 1000 };
  } finally {
    store.close();
  }
}

// -------------------------------------------------------------------------------------------------------
// A stream of sends.

export interface Acknowledged {
  readonly id: string;
  readonly body: string;
  /** performance.now() when the call (with all its retries) began, and when it resolved. */
  readonly startedAtMs: number;
  readonly ackedAtMs: number;
}

/**
 * Clients that send messages from alice to bob, each one call at a time, until stopped: the "steady stream"
 * of the membership tests. ChatClient follows the leader and retries a failed call with the same request
 * id, so a failure here means a send failed for good (after about 15 s of retries).
 */
export class SendStream {
  readonly acknowledged: Acknowledged[] = [];
  readonly failures: string[] = [];
  private running = true;
  private readonly clients: ChatClient[];
  private readonly loops: Promise<void>[];

  constructor(
    servers: readonly string[],
    sessionToken: string,
    label: string,
    concurrency: number,
    /** Deadline, retry budget and attempts of every client (ChatClient's defaults otherwise). */
    clientOptions: Pick<ChatClientOptions, 'deadlineMs' | 'retryBudgetMs' | 'maxAttempts'> = {},
  ) {
    this.clients = Array.from({ length: concurrency }, () => new ChatClient({ ...clientOptions, servers, tls: 'insecure', sessionToken }));
    this.loops = this.clients.map((client, number) => this.loop(client, `${label}-${number}`));
  }

  private async loop(client: ChatClient, label: string): Promise<void> {
    for (let sequence = 0; this.running; sequence += 1) {
      const body = `${label}.${sequence}`;
      const startedAtMs = performance.now();
      try {
        const message = await client.sendMessage('bob', body);
        this.acknowledged.push({ id: message.id, body, startedAtMs, ackedAtMs: performance.now() });
      } catch (error) {
        if (this.running) this.failures.push(`${body}: ${(error as Error).message}`);
      }
    }
  }

  /** Waits until `count` more sends are acknowledged than now. */
  async awaitMore(count: number, timeoutMs = 15_000): Promise<void> {
    const target = this.acknowledged.length + count;
    await pollUntil(
      () => `${target} sends are acknowledged (have ${this.acknowledged.length}; failures: ${JSON.stringify(this.failures.slice(-3))})`,
      () => this.acknowledged.length >= target,
      timeoutMs,
    );
  }

  /**
   * The longest time without an acknowledgement between `fromMs` and `toMs` (performance.now()), counting
   * from `fromMs` to the first acknowledgement and from the last one to `toMs`: how long the stream stalled.
   */
  longestGapMs(fromMs: number, toMs: number): number {
    const times = this.acknowledged.map((ack) => ack.ackedAtMs).filter((at) => at > fromMs && at < toMs).sort((a, b) => a - b);
    let longest = 0;
    let previous = fromMs;
    for (const at of [...times, toMs]) {
      longest = Math.max(longest, at - previous);
      previous = at;
    }
    return longest;
  }

  /** The longest single call (first attempt to acknowledgement) among sends begun after `fromMs`. */
  longestCallMs(fromMs: number): number {
    return Math.max(0, ...this.acknowledged.filter((ack) => ack.startedAtMs > fromMs).map((ack) => ack.ackedAtMs - ack.startedAtMs));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    for (const client of this.clients) client.close();
  }
}

/**
 * Account creation and login hash the password with scrypt at OWASP's cost (src/api/password-hashing.ts),
 * which takes seconds of CPU on a loaded two-core machine: those calls get a deadline far beyond the
 * client's default 4 s per attempt, so that a slow hash is waited for rather than retried.
 */
export const PASSWORD_CALL_DEADLINE_MS = 30_000;

/** Creates alice and bob through the cluster (unless they exist) and logs both in; resolves with alice's token. */
export async function logInAlice(servers: readonly string[], createAccounts: boolean): Promise<string> {
  const client = new ChatClient({ servers, tls: 'insecure', deadlineMs: PASSWORD_CALL_DEADLINE_MS, retryBudgetMs: 2 * PASSWORD_CALL_DEADLINE_MS });
  try {
    if (createAccounts) {
      await client.createAccount('alice', PASSWORD);
      await client.createAccount('bob', PASSWORD);
    }
    return (await client.login('alice', PASSWORD)).sessionToken;
  } finally {
    client.close();
  }
}

/** The ids and bodies of every message alice sent, read through the cluster (her history, paged). */
export async function readSentMessages(servers: readonly string[], aliceToken: string): Promise<Map<string, string>> {
  const client = new ChatClient({ servers, tls: 'insecure', sessionToken: aliceToken });
  const bodies = new Map<string, string>();
  try {
    let pageToken = '';
    do {
      const page = await client.listHistory({ pageSize: 500, pageToken });
      for (const message of page.messages) bodies.set(message.id, message.body);
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
  } finally {
    client.close();
  }
  return bodies;
}
