/**
 * A client of the ChatService for the CLI and for tests: one promise-returning method per RPC, plus a
 * subscription that survives failovers. It hides the cluster: it asks the server that answered last, follows
 * a follower's hint to the leader, and retries a call that met a failed or refusing server on the next one.
 * Every write carries a request id chosen once per call and kept across its retries, so that a write the
 * first server applied before failing is answered, not applied, by the next.
 *
 * This module touches neither process.argv nor the terminal, so that tests can import it.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { v7 as uuidVersion7 } from 'uuid';
import { chatServiceClientConstructor } from '../api/proto.js';
import { ChatClientError } from './chat-client-error.js';
import {
  type AccountPage,
  type BackupHeader,
  type ChatMessage,
  countField,
  flagField,
  type HistoryPage,
  type LoginResult,
  type ReadResult,
  type ReplicaStatus,
  textField,
  toAccountPage,
  toBackupHeader,
  toChatMessage,
  toHistoryPage,
  toLoginResult,
  toReadResult,
  toReplicaStatus,
} from './chat-types.js';
import {
  type ConnectionListener,
  type EndListener,
  type MessageListener,
  ResilientSubscription,
  type Subscription,
  type SubscriptionTransport,
} from './resilient-subscription.js';
import { isFailoverStatus, retryDelayMs, ServerRotation } from './server-rotation.js';

export { ChatClientError } from './chat-client-error.js';
export type { AccountPage, BackupHeader, ChatMessage, FollowerStatus, HistoryPage, LoginResult, ReadResult, ReplicaStatus } from './chat-types.js';
export type { ConnectionListener, EndListener, MessageListener, Subscription } from './resilient-subscription.js';

/** TLS with the CA in `caCertPath` (the system's roots when absent), or 'insecure' for plaintext. */
export type ChatClientTls = { readonly caCertPath?: string } | 'insecure';

export interface ChatClientOptions {
  /** host:port of every server to try, in order. */
  readonly servers: readonly string[];
  readonly tls: ChatClientTls;
  /** The bearer token of an existing session; login() sets it too. */
  readonly sessionToken?: string;
  /** Deadline of each attempt of a call. */
  readonly deadlineMs?: number;
  /** How long one call may spend on retries across servers before it fails. */
  readonly retryBudgetMs?: number;
  /** How many attempts one call makes at most, across all servers. */
  readonly maxAttempts?: number;
}

/**
 * Each attempt gets 4 s: a healthy write takes milliseconds and a failover about 1.5 s, so a call still
 * unanswered after 4 s is at a replica that cannot answer (a paused leader), and the next one is tried.
 */
export const DEFAULT_DEADLINE_MS = 4_000;
/**
 * Calls that carry a password make the server run scrypt (N=2^17, about 128 MiB and a few hundred
 * milliseconds on an idle core, seconds on a loaded one), so their attempts get longer: a retry after a
 * deadline would only start the same expensive work again.
 */
export const PASSWORD_DEADLINE_MS = 12_000;
/** The retry budget, not the attempt count, bounds a call: 15 s rides out several failovers. */
export const DEFAULT_RETRY_BUDGET_MS = 15_000;
export const DEFAULT_MAX_ATTEMPTS = 100;

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Pings find a server that vanished without closing the connection, which a subscription would
  // otherwise wait on forever; the server permits them (see src/node/server.ts).
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // A server that comes back after a failover must be reachable again within seconds, not after grpc-js's
  // default backoff of up to two minutes.
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 2000,
  // A server whose pod or container was replaced answers at a new address under the same name. grpc-js
  // looks a name up again after a failed connection, but by default at most every 30 s, so a long-lived
  // client kept dialling the old address for that long after a rolling update (test/container.test.ts c).
  'grpc.dns_min_time_between_resolutions_ms': 1000,
  // Each ChatClient owns its channels: a channel replaced after a failed connection (see
  // replaceUnconnectedChannel) must not get the same stuck connection back from a pool shared by the process.
  'grpc.use_local_subchannel_pool': 1,
};

/**
 * A channel that could not connect is replaced by a fresh one (a new name lookup, a new connection), but
 * not before it is this old, so that a server that is merely starting is not dialled over and over.
 */
const CHANNEL_REPLACEMENT_MIN_AGE_MS = 3000;

/**
 * A call not answered within this time, or failed, starts connections to every listed server (see
 * dialAllServers). A leader answers a write in milliseconds, so a call this slow is usually waiting for a
 * server that is gone, or for a name lookup.
 */
const DIAL_ALL_SERVERS_AFTER_MS = 500;

/** The RPCs, by their names in the proto. */
type ChatMethod =
  | 'CreateAccount'
  | 'AccountExists'
  | 'Login'
  | 'Logout'
  | 'ListAccounts'
  | 'SendMessage'
  | 'AcknowledgeMessages'
  | 'ReadMessages'
  | 'ListHistory'
  | 'DeleteMessages'
  | 'DeleteAccount'
  | 'GetReplicaStatus'
  | 'RemoveMember'
  | 'ForceLeadership'
  | 'Backup';

type UnaryMethod = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: unknown) => void,
) => grpc.ClientUnaryCall;

type StreamMethod = (
  request: object,
  metadata: grpc.Metadata,
  options?: grpc.CallOptions,
) => grpc.ClientReadableStream<unknown>;

/** Loading the proto takes tens of milliseconds, so it is done once per process, on first use. */
let clientConstructor: grpc.ServiceClientConstructor | undefined;

function chatClientConstructor(): grpc.ServiceClientConstructor {
  clientConstructor ??= chatServiceClientConstructor();
  return clientConstructor;
}

function credentialsFor(tls: ChatClientTls): grpc.ChannelCredentials {
  if (tls === 'insecure') return grpc.credentials.createInsecure();
  // Read once, here, so that a missing CA file fails when the client is made rather than on every call.
  return grpc.credentials.createSsl(tls.caCertPath === undefined ? null : readFileSync(tls.caCertPath));
}

export class ChatClient {
  private readonly rotation: ServerRotation;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly deadlineMs: number;
  private readonly retryBudgetMs: number;
  private readonly maxAttempts: number;
  private readonly grpcClients = new Map<string, { readonly client: grpc.Client; readonly createdAtMs: number }>();
  private readonly subscriptions = new Set<ResilientSubscription>();
  /** Wakes the retry delays that are running, so that close() does not wait for them. */
  private readonly retryDelayWakers = new Set<() => void>();
  private token: string | undefined;
  private closed = false;

  constructor(options: ChatClientOptions) {
    // With a CA of the user's own choosing, a server the hint names must still prove with a certificate from
    // that CA that it is the host it claims; with the system's roots or plaintext anyone could, so hints are
    // followed only within the list (see server-rotation.ts).
    const privateCa = options.tls !== 'insecure' && options.tls.caCertPath !== undefined;
    this.rotation = new ServerRotation(options.servers, { followUnlistedHints: privateCa });
    this.credentials = credentialsFor(options.tls);
    this.token = options.sessionToken;
    this.deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.retryBudgetMs = options.retryBudgetMs ?? DEFAULT_RETRY_BUDGET_MS;
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  }

  /** The session token sent with authenticated calls, if any. */
  get sessionToken(): string | undefined {
    return this.token;
  }

  set sessionToken(token: string | undefined) {
    this.token = token;
  }

  /** The configured servers, starting with the one that answered last: the best order for the next process. */
  preferredServers(): string[] {
    return this.rotation.preferredOrder();
  }

  // ---------------------------------------------------------------------------------------------------
  // Accounts and sessions.

  /** Creates an account; resolves with its username. */
  async createAccount(username: string, password: string): Promise<string> {
    const response = await this.write('CreateAccount', { username, password }, false, PASSWORD_DEADLINE_MS);
    return textField(response, 'username');
  }

  async accountExists(username: string): Promise<boolean> {
    return flagField(await this.read('AccountExists', { username }, false), 'exists');
  }

  /** Opens a session, and uses its token for this client's later calls. */
  async login(username: string, password: string): Promise<LoginResult> {
    const result = toLoginResult(await this.write('Login', { username, password }, false, PASSWORD_DEADLINE_MS));
    this.token = result.sessionToken;
    return result;
  }

  /** Ends the current session, and forgets its token. */
  async logout(): Promise<void> {
    await this.write('Logout', {}, true);
    this.token = undefined;
  }

  async listAccounts(options: { pattern?: string; pageSize?: number; pageToken?: string } = {}): Promise<AccountPage> {
    const request = { pattern: options.pattern ?? '', pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? '' };
    return toAccountPage(await this.read('ListAccounts', request, true));
  }

  /** Deletes the account of the current session, with every message it sent or received. */
  async deleteAccount(password: string): Promise<void> {
    await this.write('DeleteAccount', { password }, true, PASSWORD_DEADLINE_MS);
    this.token = undefined;
  }

  // ---------------------------------------------------------------------------------------------------
  // Messages.

  async sendMessage(recipient: string, body: string): Promise<ChatMessage> {
    const response = await this.write('SendMessage', { recipient, body }, true);
    return toChatMessage((response as { message?: unknown } | undefined)?.message);
  }

  /** Marks pushed messages as shown to the user; resolves with how many were not acknowledged before. */
  async acknowledgeMessages(messageIds: readonly string[]): Promise<number> {
    return countField(await this.write('AcknowledgeMessages', { messageIds: [...messageIds] }, true), 'acknowledgedCount');
  }

  /** Takes the oldest `limit` undelivered messages (0: the server's default), which then count as delivered. */
  async readMessages(limit = 0): Promise<ReadResult> {
    return toReadResult(await this.write('ReadMessages', { limit }, true));
  }

  async listHistory(options: { withUsername?: string; pageSize?: number; pageToken?: string } = {}): Promise<HistoryPage> {
    const request = {
      withUsername: options.withUsername ?? '',
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? '',
    };
    return toHistoryPage(await this.read('ListHistory', request, true));
  }

  /** Deletes messages the caller sent or received; resolves with how many were deleted. */
  async deleteMessages(messageIds: readonly string[]): Promise<number> {
    return countField(await this.write('DeleteMessages', { messageIds: [...messageIds] }, true), 'deletedCount');
  }

  /**
   * Streams the caller's messages to `onMessage`, each once, until close() or a final error; see
   * resilient-subscription.ts for how it survives a failover. `onEnd` is called exactly once.
   */
  subscribe(
    options: {
      includeQueued: boolean;
      onConnectionChange?: ConnectionListener;
      /** A message the server sent again after a reconnect because it was never acknowledged. */
      onRepeat?: MessageListener;
    },
    onMessage: MessageListener,
    onEnd: EndListener,
  ): Subscription {
    const transport: SubscriptionTransport = {
      rotation: this.rotation,
      openStream: (address, includeQueued) => {
        const subscribe = this.method<StreamMethod>(address, 'Subscribe');
        // No deadline: a subscription lasts as long as the caller wants it.
        return subscribe({ includeQueued }, this.metadata(true));
      },
      streamFailed: (address) => this.replaceUnconnectedChannel(address),
    };
    const subscription = new ResilientSubscription(
      transport,
      options.includeQueued,
      onMessage,
      onEnd,
      (finished) => this.subscriptions.delete(finished),
      options.onConnectionChange,
      options.onRepeat,
    );
    if (this.closed) {
      onEnd(new ChatClientError(grpc.status.CANCELLED, 'the client is closed'));
      return subscription;
    }
    this.subscriptions.add(subscription);
    subscription.start();
    return subscription;
  }

  /** Ends every subscription and closes every connection; calls made afterwards fail with CANCELLED. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const subscription of [...this.subscriptions]) subscription.close();
    for (const wake of [...this.retryDelayWakers]) wake();
    for (const { client } of this.grpcClients.values()) client.close();
    this.grpcClients.clear();
  }

  // ---------------------------------------------------------------------------------------------------
  // Replicas.

  /**
   * Operator only: asks the leader to remove a member. The client's session token must be the servers'
   * admin token. Not a logged write (it carries no request id): removing a member twice is refused with
   * FAILED_PRECONDITION, which the caller can read as "already gone".
   */
  async removeMember(ordinal: number): Promise<void> {
    await this.callWithFailover('RemoveMember', { ordinal }, true);
  }

  /**
   * Operator only, the last resort: the replica at `address` (not the leader: the one to trust) names itself
   * leader alone in the in-sync set. Asked once, with no failover: another replica must never be forced instead.
   */
  async forceLeadership(address: string): Promise<{ lastIndex: number; previousEpoch: number; previousInSync: number[] }> {
    if (this.closed) throw new ChatClientError(grpc.status.CANCELLED, 'the client is closed');
    try {
      const answer = (await this.callOnce(address, 'ForceLeadership', { confirmDataLoss: true }, true, this.deadlineMs)) as {
        lastIndex?: unknown;
        previousEpoch?: unknown;
        previousInSync?: unknown;
      };
      return {
        lastIndex: Number(answer.lastIndex ?? 0),
        previousEpoch: Number(answer.previousEpoch ?? 0),
        previousInSync: Array.isArray(answer.previousInSync) ? answer.previousInSync.map(Number) : [],
      };
    } catch (error) {
      throw ChatClientError.fromCallError(error);
    }
  }

  /**
   * Operator only: a consistent copy of the leader's database. Resolves with the header once a server
   * (the leader, found like for any call) started sending; `chunks` then yields the file's bytes in order
   * and throws if the stream breaks. The client's session token must be the servers' admin token.
   */
  async backup(): Promise<{ header: BackupHeader; chunks: AsyncIterable<Buffer> }> {
    const budgetEndsAtMs = Date.now() + this.retryBudgetMs;
    for (let attempt = 0; ; attempt += 1) {
      if (this.closed) throw new ChatClientError(grpc.status.CANCELLED, 'the client is closed');
      const address = this.rotation.current;
      const stream = this.method<StreamMethod>(address, 'Backup')({}, this.metadata(true));
      const iterator = (stream as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      let first: IteratorResult<unknown>;
      try {
        first = await iterator.next();
      } catch (error) {
        const failure = ChatClientError.fromCallError(error);
        if (!isFailoverStatus(failure.code) || failure.hopeless || Date.now() >= budgetEndsAtMs) throw failure;
        const redirected = this.rotation.failedOver(address, failure.metadata);
        await this.retryDelay(redirected && attempt === 0 ? 0 : retryDelayMs(attempt));
        continue;
      }
      const header = toBackupHeader(first.done === true ? undefined : first.value);
      async function* chunks(): AsyncIterable<Buffer> {
        try {
          for (;;) {
            const next = await iterator.next();
            if (next.done === true) return;
            const data = (next.value as { data?: unknown }).data;
            if (Buffer.isBuffer(data)) yield data;
          }
        } catch (error) {
          throw ChatClientError.fromCallError(error);
        }
      }
      return { header, chunks: chunks() };
    }
  }

  /**
   * The status of the replica at `address`, which need not be one of this client's servers. It is asked
   * once, without following a leader hint or trying another server: the point is to hear what this one
   * replica says about itself, and a replica that does not answer is itself the news.
   */
  async replicaStatus(address: string, options: { deadlineMs?: number } = {}): Promise<ReplicaStatus> {
    if (this.closed) throw new ChatClientError(grpc.status.CANCELLED, 'the client is closed');
    try {
      return toReplicaStatus(await this.callOnce(address, 'GetReplicaStatus', {}, false, options.deadlineMs ?? this.deadlineMs));
    } catch (error) {
      throw ChatClientError.fromCallError(error);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Calls, retries and connections.

  /**
   * A write: it gets a fresh request id, which every retry of this call repeats. The id is time-ordered
   * (UUID version 7), so that the servers add it at the end of their index of request ids instead of on a
   * random page of it.
   */
  private write(method: ChatMethod, request: object, authenticated: boolean, deadlineMs = this.deadlineMs): Promise<unknown> {
    return this.callWithFailover(method, { ...request, requestId: uuidVersion7() }, authenticated, deadlineMs);
  }

  /** A read changes nothing, so it is retried as it is. */
  private read(method: ChatMethod, request: object, authenticated: boolean): Promise<unknown> {
    return this.callWithFailover(method, request, authenticated);
  }

  private async callWithFailover(
    method: ChatMethod,
    request: object,
    authenticated: boolean,
    attemptDeadlineMs = this.deadlineMs,
  ): Promise<unknown> {
    // A budget shorter than two attempts would leave no room for the retry that a failover needs.
    const budgetMs = Math.max(this.retryBudgetMs, 2 * attemptDeadlineMs);
    const budgetEndsAtMs = Date.now() + budgetMs;
    const triedAddresses = new Set<string>();
    let lastError: ChatClientError | undefined;
    let attempts = 0;
    let redirectsFollowed = 0;
    while (attempts < this.maxAttempts) {
      if (this.closed) throw new ChatClientError(grpc.status.CANCELLED, 'the client is closed');
      const address = this.rotation.current;
      triedAddresses.add(address);
      attempts += 1;
      const remainingMs = budgetEndsAtMs - Date.now();
      // The first attempt always gets the full deadline; later ones only what the budget has left.
      const deadlineMs = attempts === 1 ? attemptDeadlineMs : Math.min(attemptDeadlineMs, remainingMs);
      const dialTimer = setTimeout(() => this.dialAllServers(), DIAL_ALL_SERVERS_AFTER_MS);
      let attemptError: ChatClientError;
      try {
        return await this.callOnce(address, method, request, authenticated, deadlineMs);
      } catch (error) {
        attemptError = ChatClientError.fromCallError(error);
        // A TLS mismatch fails the same on every server and at every retry: say so now, not after 15 s.
        if (this.closed || !isFailoverStatus(attemptError.code) || attemptError.hopeless) throw attemptError;
        this.replaceUnconnectedChannel(address, error);
        this.dialAllServers();
      } finally {
        clearTimeout(dialTimer);
      }
      // An attempt that the budget cut short and that ran out says nothing about its server: the caller
      // hears what an earlier attempt learned instead (a CI run reported "did not answer in time" where
      // both servers had answered that there was no leader).
      const cutShort = deadlineMs < attemptDeadlineMs && attemptError.code === grpc.status.DEADLINE_EXCEEDED;
      if (!cutShort || lastError === undefined) lastError = attemptError;
      const redirected = this.rotation.failedOver(address, attemptError.metadata);
      // Following the leader's address is the expected path after a failover, so the first hop is immediate.
      const delayMs = redirected && redirectsFollowed === 0 ? 0 : retryDelayMs(attempts - 1);
      if (redirected) redirectsFollowed += 1;
      if (Date.now() + delayMs >= budgetEndsAtMs) break;
      await this.retryDelay(delayMs);
    }
    const failure = lastError ?? new ChatClientError(grpc.status.UNAVAILABLE, 'no attempt was made');
    throw new ChatClientError(
      failure.code,
      `${failure.message} (tried ${[...triedAddresses].join(', ')} for ${Math.round(budgetMs / 1000)} s)`,
      failure.metadata,
    );
  }

  private callOnce(
    address: string,
    method: ChatMethod,
    request: object,
    authenticated: boolean,
    deadlineMs: number,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const call = this.method<UnaryMethod>(address, method);
      call(request, this.metadata(authenticated), { deadline: Date.now() + Math.max(deadlineMs, 1) }, (error, response) =>
        error === null ? resolve(response) : reject(error),
      );
    });
  }

  private retryDelay(delayMs: number): Promise<void> {
    if (delayMs <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.retryDelayWakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, delayMs);
      this.retryDelayWakers.add(wake);
    });
  }

  private metadata(authenticated: boolean): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (authenticated && this.token !== undefined) metadata.set('authorization', `Bearer ${this.token}`);
    return metadata;
  }

  /**
   * After a call to `address` failed: when its channel has no connection, the call never reached a server,
   * and the channel may be dialling an address the name no longer has (packets to a removed pod or container
   * vanish, so the attempt neither connects nor fails for up to 20 s). The next call there then gets a fresh
   * channel, which looks the name up again. A channel with a connection is kept: a server answered on it
   * (a follower's refusal, a slow leader), and a subscription may be using it. So is a channel still
   * waiting for its name lookup: a new one would only start the same slow lookup again.
   */
  private replaceUnconnectedChannel(address: string, error?: unknown): void {
    const entry = this.grpcClients.get(address);
    if (entry === undefined || Date.now() - entry.createdAtMs < CHANNEL_REPLACEMENT_MIN_AGE_MS) return;
    if (entry.client.getChannel().getConnectivityState(false) === grpc.connectivityState.READY) return;
    // grpc-js words a call that outlived a pending lookup `Deadline exceeded after 4.000s,waiting for name resolution`.
    if (error instanceof Error && /waiting for name resolution/.test(error.message)) return;
    this.grpcClients.delete(address);
    entry.client.close();
  }

  /**
   * Starts a connection to every listed server that has none, without waiting for it. Calls go to one server
   * at a time, so without this each server's name would be looked up and dialled only when its turn came:
   * where lookups are slow (a DNS server that stalls for seconds after a pod or container is removed, as
   * podman's aardvark-dns was seen to), every attempt could run out of time on its own lookup. Dialled at
   * once, the lookups overlap, and the next attempt finds its server connected.
   */
  private dialAllServers(): void {
    if (this.closed) return;
    for (const address of this.rotation.servers) this.clientFor(address).getChannel().getConnectivityState(true);
  }

  /** The cached client for `address`, made at its first use. */
  private clientFor(address: string): grpc.Client {
    let entry = this.grpcClients.get(address);
    if (entry === undefined) {
      const Constructor = chatClientConstructor();
      entry = { client: new Constructor(address, this.credentials, CHANNEL_OPTIONS), createdAtMs: Date.now() };
      this.grpcClients.set(address, entry);
    }
    return entry.client;
  }

  /** One method of the cached client for `address`, bound to it. */
  private method<Method>(address: string, name: ChatMethod | 'Subscribe'): Method {
    const client = this.clientFor(address);
    const method = (client as unknown as Record<string, unknown>)[name];
    if (typeof method !== 'function') throw new Error(`the ChatService client has no method ${name}`);
    return method.bind(client) as Method;
  }
}
