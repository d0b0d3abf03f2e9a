/**
 * The client-facing ChatService. Each handler validates its input, resolves everything non-deterministic
 * (ids, timestamps, password hashes) into a command, hands the command to the write path, and answers.
 * Handlers never build statuses themselves: every error goes through status-mapping.ts, and every handler
 * returns right after answering.
 */
import * as grpc from '@grpc/grpc-js';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Logger } from 'pino';
import { v7 as uuidVersion7 } from 'uuid';
import { AssertionFailure } from '../core/assert.js';
import type { ClientCommand, CommandResult, CommandResults, StoredMessage } from '../core/commands.js';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
} from '../core/errors.js';
import type { ChatLimits } from '../core/limits.js';
import { deriveSessionToken, type SessionKey, verifySessionToken } from './session-token.js';
import {
  decodePageToken,
  encodePageToken,
  validateAccountPattern,
  validateMessageBody,
  validateMessageIds,
  validatePageSize,
  validatePassword,
  validatePasswordToCheck,
  validateRequestId,
  validateUsername,
} from '../core/validation.js';
import type { ChatState } from '../storage/chat-state.js';
import type { SnapshotFile } from '../storage/snapshot.js';
import { DECOY_PASSWORD_HASH, hashPassword, needsRehash, verifyPassword } from './password-hashing.js';
import { clientAddressOf, LoginRateLimits } from './rate-limiter.js';
import { MALFORMED_REQUEST } from './proto.js';
import { toServiceError } from './status-mapping.js';
import { type Subscriber, SubscriptionRegistry } from './subscriptions.js';

/** What the service needs from the replica it runs on. The driver in src/node implements it. */
export interface WritePath {
  /** Read access to the replica's current state. */
  readonly chat: ChatState;
  /** The time to stamp on a new command: the local clock, but never before the last logged command. */
  nextTimestampMs(): number;
  /**
   * Logs and applies `command`; resolves with its result once it is durable on every in-sync replica.
   * Rejects with a ChatError when the command does not apply (nothing is logged then).
   */
  submit(command: ClientCommand): Promise<CommandResult>;
  /** Throws UnavailableError (naming the leader when known) unless this replica serves clients now. */
  checkServing(): void;
  /** Resolves once the entry at `index` is durable on every in-sync replica. */
  awaitCommitted(index: number): Promise<void>;
  /** Resolves once everything this replica has applied is committed, so that a read sees only acknowledged state. */
  readBarrier(): Promise<void>;
  /**
   * The highest log index known to be committed. Entries above it are applied to the tables but not
   * acknowledged: anything a client is shown outside a read barrier is filtered to `sequence <= committedIndex()`.
   */
  committedIndex(): number;
  /** The replica's replication state, in the shape of the proto's ReplicaStatus. */
  replicaStatus(): Record<string, unknown>;
  /**
   * The operator's last resort: names this replica leader alone in the in-sync set, whatever the store
   * says; returns its last index and the record it replaces. Throws FailedPreconditionError when it cannot.
   */
  forceLeadership(): { lastIndex: number; record: { epoch: number; inSync: readonly number[] } | null };
  /** Asks the protocol to remove a member; throws FailedPreconditionError when it refuses. */
  removeMember(ordinal: number): void;
  /** Registers a callback for when this replica stops leading. */
  onLeadershipLost(listener: () => void): void;
  /**
   * A consistent copy of this replica's whole database in a temporary file, taken while writes go on, with
   * `local_metadata` cleared; the caller removes it. Used by Backup.
   */
  createSnapshot(): Promise<SnapshotFile>;
}

/** Receives one observation per finished RPC, for metrics. */
export interface RpcObserver {
  /** `redirected`: the call was answered UNAVAILABLE with the leader's address (a redirect, not an error). */
  observe(method: string, code: grpc.status, durationSeconds: number, redirected?: boolean): void;
}

interface Caller {
  readonly sessionId: string;
  readonly username: string;
}

type Request = Record<string | symbol, unknown>;
type UnaryHandler = (call: grpc.ServerUnaryCall<Request, unknown>) => Promise<unknown>;

/** A message as the proto's Message type expects it. */
function toWireMessage(message: StoredMessage): Record<string, unknown> {
  return {
    id: message.id,
    sender: message.sender,
    recipient: message.recipient,
    body: message.body,
    sentAtMs: message.sentAtMs,
    delivered: message.delivered,
    instant: message.instant,
  };
}

function fingerprintOf(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

const SUBSCRIBE_REPLAY_MAX_MESSAGES = 1000;
const SUBSCRIBER_BUFFER_MAX_BYTES = 1024 * 1024;

export class ChatService {
  readonly subscriptions: SubscriptionRegistry;

  constructor(
    private readonly writePath: WritePath,
    private readonly limits: ChatLimits,
    private readonly logger: Logger,
    private readonly observer: RpcObserver,
    /** The operator's token for RemoveMember; undefined disables it. */
    private readonly adminToken?: string,
  ) {
    this.subscriptions = new SubscriptionRegistry(limits.subscriptionsPerUserMax, SUBSCRIBER_BUFFER_MAX_BYTES);
    // Only the leader pushes messages: streams open on a replica that stops leading would go quiet, so they
    // end with UNAVAILABLE and their clients subscribe again on the new leader.
    writePath.onLeadershipLost(() =>
      this.subscriptions.closeEveryone(new UnavailableError('this replica stopped leading; subscribe again')),
    );
  }

  /** The handlers object for grpc.Server.addService. */
  handlers(): grpc.UntypedServiceImplementation {
    return {
      CreateAccount: this.unary('CreateAccount', (call) => this.createAccount(call.request, clientAddressOf(call.getPeer()))),
      AccountExists: this.unary('AccountExists', (call) => this.accountExists(call.request)),
      Login: this.unary('Login', (call) => this.login(call.request, clientAddressOf(call.getPeer()))),
      Logout: this.unary('Logout', (call) => this.logout(call.request, call.metadata)),
      ListAccounts: this.unary('ListAccounts', (call) => this.listAccounts(call.request, call.metadata)),
      SendMessage: this.unary('SendMessage', (call) => this.sendMessage(call.request, call.metadata)),
      Subscribe: (call: grpc.ServerWritableStream<Request, unknown>) => this.subscribe(call),
      AcknowledgeMessages: this.unary('AcknowledgeMessages', (call) =>
        this.markDelivered('acknowledge', call.request, call.metadata),
      ),
      ReadMessages: this.unary('ReadMessages', (call) => this.markDelivered('read', call.request, call.metadata)),
      ListHistory: this.unary('ListHistory', (call) => this.listHistory(call.request, call.metadata)),
      DeleteMessages: this.unary('DeleteMessages', (call) => this.deleteMessages(call.request, call.metadata)),
      DeleteAccount: this.unary('DeleteAccount', (call) => this.deleteAccount(call.request, call.metadata)),
      GetReplicaStatus: this.unary('GetReplicaStatus', async () => this.writePath.replicaStatus(), {
        followersServe: true,
      }),
      RemoveMember: this.unary('RemoveMember', async (call) => this.removeMember(call.request, call.metadata)),
      RotateSessionKey: this.unary('RotateSessionKey', (call) => this.rotateSessionKey(call.request, call.metadata)),
      Backup: (call: grpc.ServerWritableStream<Request, unknown>) => void this.backup(call),
      // Served by the replica asked, which is not leading: that is the point.
      ForceLeadership: this.unary('ForceLeadership', async (call) => this.forceLeadership(call.request, call.metadata), {
        followersServe: true,
      }),
    };
  }

  /** Wraps a handler: malformed-request check, error mapping, metrics, and a single answer. */
  private unary(
    method: string,
    handler: UnaryHandler,
    options: { followersServe?: boolean } = {},
  ): grpc.handleUnaryCall<Request, unknown> {
    return (call, callback) => {
      const startedAt = process.hrtime.bigint();
      const finish = (code: grpc.status, redirected = false): void => {
        this.observer.observe(method, code, Number(process.hrtime.bigint() - startedAt) / 1e9, redirected);
      };
      const run = async (): Promise<unknown> => {
        if (call.request[MALFORMED_REQUEST] === true) {
          throw new InvalidArgumentError('the request is not a valid protobuf message for this method');
        }
        if (options.followersServe !== true) this.writePath.checkServing();
        return handler(call);
      };
      run().then(
        (response) => {
          finish(grpc.status.OK);
          return callback(null, response);
        },
        (error: unknown) => {
          const status = toServiceError(error);
          if (status.code === grpc.status.INTERNAL) this.reportBug(method, error);
          finish(status.code, error instanceof UnavailableError && error.leaderAddress !== undefined);
          return callback(status);
        },
      );
    };
  }

  private reportBug(method: string, error: unknown): void {
    this.logger.error({ err: error, method }, 'request failed with an unexpected error');
    // A broken invariant means this replica's state cannot be trusted: crash and recover from the log.
    if (error instanceof AssertionFailure) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  // -----------------------------------------------------------------------------------------------------
  // Sessions and idempotency.

  /**
   * The cluster's token-signing keys by id. They change only by rotateSessionKey, which rewrites the
   * `session_keys` value, so one lookup of that value per call tells whether the cached map still holds.
   */
  private sessionKeys(): ReadonlyMap<number, SessionKey> {
    const stored = this.writePath.chat.clusterValue('session_keys');
    if (this.cachedSessionKeys === undefined || this.cachedSessionKeys.stored !== stored || this.cachedSessionKeys.keys.size === 0) {
      const keys = new Map(this.writePath.chat.sessionKeys().map((key) => [key.id, key] as const));
      this.cachedSessionKeys = { stored, keys };
    }
    if (this.cachedSessionKeys.keys.size === 0) throw new UnavailableError('the cluster is not initialised yet');
    return this.cachedSessionKeys.keys;
  }

  private cachedSessionKeys: { stored: string | undefined; keys: ReadonlyMap<number, SessionKey> } | undefined;

  /** The key a session's token is signed with (recorded in its login result). */
  private sessionKey(keyId: number): SessionKey {
    const key = this.sessionKeys().get(keyId);
    if (key === undefined) throw new UnauthenticatedError('the key of this session was retired; log in again');
    return key;
  }

  /** Limits on login and sign-up attempts, per username and per client address (rate-limiter.ts). */
  private readonly loginRateLimits = new LoginRateLimits();

  /** The session id of a correctly signed bearer token, without looking the session up. */
  private sessionIdFromMetadata(metadata: grpc.Metadata): string {
    const header = metadata.get('authorization')[0];
    if (typeof header !== 'string' || !header.startsWith('Bearer ')) {
      throw new UnauthenticatedError('log in first: the authorization metadata holds no bearer token');
    }
    const keys = this.sessionKeys();
    const sessionId = verifySessionToken((id) => keys.get(id), header.slice('Bearer '.length).trim(), Date.now());
    if (sessionId === undefined) throw new UnauthenticatedError('the session token is not valid; log in again');
    return sessionId;
  }

  private authenticate(metadata: grpc.Metadata): Caller {
    return this.callerOfSession(this.sessionIdFromMetadata(metadata));
  }

  /**
   * The caller of a session whose token sessionIdFromMetadata has just verified, once the session is found
   * and has not expired. A write handler verifies the token first, to name the principal its request id
   * belongs to, and looks the session up only when no earlier result answers it; verifying the token a
   * second time would cost a second HMAC and key lookup per call and could not decide differently. Nothing
   * is applied between the two: writes are applied in a later turn of the event loop (the node's deferred
   * flush), and the lookup of an earlier result that finds none settles within this one. And no session
   * outlives the key that signed it unless a revocation, itself a write, retires the key early, so the
   * session's expiry, checked here, covers the key's retirement.
   */
  private callerOfSession(sessionId: string): Caller {
    const session = this.writePath.chat.session(sessionId);
    if (session === undefined || session.expiresAtMs <= Date.now()) {
      throw new UnauthenticatedError('the session has ended or expired; log in again');
    }
    return { sessionId, username: session.username };
  }

  /**
   * Returns the recorded result of an earlier write with this request id, or undefined if there is none.
   * The same id with another principal or other arguments is refused rather than answered.
   */
  private async earlierResult<K extends ClientCommand['kind']>(
    requestId: string,
    principal: string,
    kind: K,
    fingerprint: string,
  ): Promise<CommandResults[K] | undefined> {
    const record = this.writePath.chat.request(requestId);
    if (record === undefined) return undefined;
    if (record.principal !== principal || record.kind !== kind || record.fingerprint !== fingerprint) {
      throw new FailedPreconditionError(`request_id ${requestId} was already used for a different request`);
    }
    // The first attempt may still be on its way to the followers: answer only once it is acknowledged.
    await this.writePath.awaitCommitted(record.logIndex);
    return record.result as CommandResults[K];
  }

  private async submit<K extends ClientCommand['kind']>(command: ClientCommand & { kind: K }): Promise<CommandResults[K]> {
    return (await this.writePath.submit(command)) as CommandResults[K];
  }

  private envelope(requestId: string, principal: string, fingerprint: string) {
    return { requestId, principal, fingerprint, timestampMs: this.writePath.nextTimestampMs() };
  }

  // -----------------------------------------------------------------------------------------------------
  // Accounts and sessions.

  private async createAccount(request: Request, clientAddress: string): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const username = validateUsername(request.username);
    const password = validatePassword(request.password);
    this.loginRateLimits.checkCreateAccount(username.toLowerCase(), clientAddress);
    const principal = `user:${username}`;
    const fingerprint = fingerprintOf('createAccount', username);
    const earlier = await this.earlierResult(requestId, principal, 'createAccount', fingerprint);
    if (earlier !== undefined) {
      // A retry must carry the same password, which the stored hash can check.
      const storedHash = this.writePath.chat.passwordHash(username);
      if (storedHash === undefined || !(await verifyPassword(password, storedHash))) {
        throw new FailedPreconditionError(`request_id ${requestId} was already used for a different request`);
      }
      return { username: earlier.username };
    }
    if (this.writePath.chat.userExists(username)) throw new AlreadyExistsError(`the username ${username} is taken`);
    const passwordHash = await hashPassword(password);
    const result = await this.submit({
      kind: 'createAccount',
      ...this.envelope(requestId, principal, fingerprint),
      username,
      passwordHash,
    });
    return { username: result.username };
  }

  private async accountExists(request: Request): Promise<unknown> {
    const username = validateUsername(request.username);
    await this.writePath.readBarrier();
    return { exists: this.writePath.chat.userExists(username) };
  }

  /** Checks a password in constant work whether or not the user exists; returns the verified hash. */
  private async checkPassword(username: string, password: string): Promise<string> {
    const storedHash = this.writePath.chat.passwordHash(username);
    const matches = await verifyPassword(password, storedHash ?? DECOY_PASSWORD_HASH);
    if (storedHash === undefined || !matches) throw new UnauthenticatedError();
    return storedHash;
  }

  /**
   * After a login verified `previousHash`, made with older scrypt parameters: logs the password hashed with
   * the current ones, so that every replica stores the same new hash. A failure only postpones it.
   */
  private async upgradePasswordHash(username: string, password: string, previousHash: string): Promise<void> {
    try {
      const passwordHash = await hashPassword(password);
      const principal = `user:${username}`;
      const result = await this.submit({
        kind: 'upgradePasswordHash',
        ...this.envelope(uuidVersion7(), principal, fingerprintOf('upgradePasswordHash', username)),
        username,
        previousHash,
        passwordHash,
      });
      if (result.upgraded) this.logger.info({ username }, 'upgraded a password hash to the current scrypt parameters');
    } catch (error) {
      this.logger.warn({ err: error, username }, 'could not upgrade a password hash; the next login tries again');
    }
  }

  private async login(request: Request, clientAddress: string): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const username = validateUsername(request.username);
    const password = validatePasswordToCheck(request.password);
    this.loginRateLimits.checkLogin(username.toLowerCase(), clientAddress);
    await this.writePath.readBarrier();
    const verifiedHash = await this.checkPassword(username, password);
    const principal = `user:${username}`;
    const fingerprint = fingerprintOf('login', username);
    const result =
      await this.earlierResult(requestId, principal, 'login', fingerprint) ??
      (await this.submit({
        kind: 'login',
        ...this.envelope(requestId, principal, fingerprint),
        username,
        sessionId: randomBytes(16).toString('hex'),
        expiresAtMs: Date.now() + this.limits.sessionTtlMs,
      }));
    if (needsRehash(verifiedHash)) await this.upgradePasswordHash(username, password, verifiedHash);
    return {
      sessionToken: deriveSessionToken(this.sessionKey(result.keyId ?? 0), result.sessionId),
      // Only committed messages count: later sends are applied but may still vanish in a failover.
      unreadCount: this.writePath.chat.unreadCount(username, this.writePath.committedIndex()),
      expiresAtMs: result.expiresAtMs,
      username: this.writePath.chat.canonicalUsername(username) ?? username,
    };
  }

  private async logout(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const sessionId = this.sessionIdFromMetadata(metadata);
    const principal = `session:${sessionId}`;
    const fingerprint = fingerprintOf('logout');
    if (await this.earlierResult(requestId, principal, 'logout', fingerprint) !== undefined) return {};
    const caller = this.callerOfSession(sessionId);
    await this.submit({
      kind: 'logout',
      ...this.envelope(requestId, principal, fingerprint),
      username: caller.username,
      sessionId,
    });
    this.subscriptions.closeSession(caller.username, sessionId, new UnauthenticatedError('the session was logged out'));
    return {};
  }

  private async deleteAccount(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const password = validatePasswordToCheck(request.password);
    const sessionId = this.sessionIdFromMetadata(metadata);
    const principal = `session:${sessionId}`;
    const fingerprint = fingerprintOf('deleteAccount');
    if (await this.earlierResult(requestId, principal, 'deleteAccount', fingerprint) !== undefined) return {};
    const caller = this.callerOfSession(sessionId);
    await this.checkPassword(caller.username, password);
    await this.submit({
      kind: 'deleteAccount',
      ...this.envelope(requestId, principal, fingerprint),
      username: caller.username,
    });
    this.subscriptions.closeAll(caller.username, new UnauthenticatedError('the account was deleted'));
    return {};
  }

  private async listAccounts(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    await this.writePath.readBarrier();
    this.authenticate(metadata);
    const pattern = validateAccountPattern(request.pattern);
    const pageSize = validatePageSize(request.pageSize, this.limits);
    const after = decodePageToken<string>(request.pageToken, 'string') ?? '';
    // One extra row tells whether another page exists without a second query.
    const rows = this.writePath.chat.listAccounts(pattern, after, pageSize + 1);
    const usernames = rows.slice(0, pageSize);
    const last = usernames[usernames.length - 1];
    return {
      usernames,
      nextPageToken: rows.length > pageSize && last !== undefined ? encodePageToken(last) : '',
    };
  }

  // -----------------------------------------------------------------------------------------------------
  // Messages.

  private async sendMessage(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const recipient = validateUsername(request.recipient, 'recipient');
    const body = validateMessageBody(request.body, this.limits);
    const sessionId = this.sessionIdFromMetadata(metadata);
    const principal = `session:${sessionId}`;
    const fingerprint = fingerprintOf('sendMessage', recipient, body);
    const earlier = await this.earlierResult(requestId, principal, 'sendMessage', fingerprint);
    if (earlier !== undefined) {
      // The record keeps no body (erasure): a replay shows the body only while the message exists.
      const body = this.writePath.chat.message(earlier.message.id)?.body ?? '';
      return { message: toWireMessage({ ...earlier.message, body }) };
    }
    const caller = this.callerOfSession(sessionId);
    const result = await this.submit({
      kind: 'sendMessage',
      ...this.envelope(requestId, principal, fingerprint),
      // Time-ordered (UUID version 7), so that each new id lands at the end of the messages' unique index:
      // a random id dirtied one index page per send, and each replica's commit wrote and fsynced them all.
      messageId: uuidVersion7(),
      sender: caller.username,
      recipient,
      body,
      instant: this.subscriptions.isOnline(recipient),
    });
    this.subscriptions.publish(result.message);
    return { message: toWireMessage(result.message) };
  }

  /** ReadMessages (`read`: the oldest undelivered) and AcknowledgeMessages (`acknowledge`: given ids). */
  private async markDelivered(
    reason: 'read' | 'acknowledge',
    request: Request,
    metadata: grpc.Metadata,
  ): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const limit = reason === 'read' ? validatePageSize(request.limit, this.limits, 'limit') : 0;
    const requestedIds = reason === 'acknowledge' ? validateMessageIds(request.messageIds) : [];
    const sessionId = this.sessionIdFromMetadata(metadata);
    const principal = `session:${sessionId}`;
    const fingerprint = fingerprintOf('markDelivered', reason, limit, requestedIds);
    const caller = this.callerOfSession(sessionId);
    const result =
      await this.earlierResult(requestId, principal, 'markDelivered', fingerprint) ??
      (await this.submit({
        kind: 'markDelivered',
        ...this.envelope(requestId, principal, fingerprint),
        reason,
        username: caller.username,
        messageIds:
          reason === 'read'
            ? this.writePath.chat.oldestUndelivered(caller.username, limit).map((message) => message.id)
            : requestedIds,
      }));
    if (reason === 'acknowledge') return { acknowledgedCount: result.changedCount };
    const messages = result.messageIds
      .map((id) => this.writePath.chat.message(id))
      .filter((message): message is StoredMessage => message !== undefined);
    return {
      messages: messages.map(toWireMessage),
      remainingUnreadCount: this.writePath.chat.unreadCount(caller.username, this.writePath.committedIndex()),
    };
  }

  private async listHistory(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    await this.writePath.readBarrier();
    const caller = this.authenticate(metadata);
    const withUsername =
      request.withUsername === '' || request.withUsername === undefined
        ? undefined
        : validateUsername(request.withUsername, 'with_username');
    const pageSize = validatePageSize(request.pageSize, this.limits);
    const before = decodePageToken<number>(request.pageToken, 'number') ?? Number.MAX_SAFE_INTEGER;
    const rows = this.writePath.chat.history(caller.username, withUsername, before, pageSize + 1);
    const messages = rows.slice(0, pageSize);
    const last = messages[messages.length - 1];
    return {
      messages: messages.map(toWireMessage),
      nextPageToken: rows.length > pageSize && last !== undefined ? encodePageToken(last.sequence) : '',
    };
  }

  private async deleteMessages(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const messageIds = validateMessageIds(request.messageIds);
    const sessionId = this.sessionIdFromMetadata(metadata);
    const principal = `session:${sessionId}`;
    const fingerprint = fingerprintOf('deleteMessages', messageIds);
    const earlier = await this.earlierResult(requestId, principal, 'deleteMessages', fingerprint);
    if (earlier !== undefined) return { deletedCount: earlier.deletedCount };
    const caller = this.callerOfSession(sessionId);
    const result = await this.submit({
      kind: 'deleteMessages',
      ...this.envelope(requestId, principal, fingerprint),
      username: caller.username,
      messageIds,
    });
    return { deletedCount: result.deletedCount };
  }

  // -----------------------------------------------------------------------------------------------------
  // Operations.

  private async removeMember(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    if (this.adminToken === undefined) {
      throw new PermissionDeniedError('member removal is disabled: start the servers with --admin-token to enable it');
    }
    const header = metadata.get('authorization')[0];
    const presented = Buffer.from(typeof header === 'string' ? header.replace(/^Bearer /, '') : '', 'utf8');
    const expected = Buffer.from(this.adminToken, 'utf8');
    if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
      throw new PermissionDeniedError('member removal needs the admin token as the bearer token');
    }
    const ordinal = request.ordinal;
    if (typeof ordinal !== 'number' || !Number.isInteger(ordinal) || ordinal < 0 || ordinal > 1000) {
      throw new InvalidArgumentError('ordinal must be an integer from 0 to 1000');
    }
    this.writePath.removeMember(ordinal);
    return {};
  }

  /** The operator's last resort; see ForceLeadership in chat.proto. */
  private async forceLeadership(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    this.requireAdminToken(metadata, 'forcing leadership');
    if (request.confirmDataLoss !== true) {
      throw new FailedPreconditionError(
        'forcing leadership may lose acknowledged writes that this replica does not hold: set confirm_data_loss',
      );
    }
    const outcome = this.writePath.forceLeadership();
    return {
      lastIndex: outcome.lastIndex,
      previousEpoch: outcome.record?.epoch ?? 0,
      previousInSync: outcome.record?.inSync ?? [],
    };
  }

  /** Throws PERMISSION_DENIED unless the bearer token is the admin token; `what` names the operation. */
  private requireAdminToken(metadata: grpc.Metadata, what: string): void {
    if (this.adminToken === undefined) {
      throw new PermissionDeniedError(`${what} is disabled: start the servers with an admin token to enable it`);
    }
    const header = metadata.get('authorization')[0];
    const presented = Buffer.from(typeof header === 'string' ? header.replace(/^Bearer /, '') : '', 'utf8');
    const expected = Buffer.from(this.adminToken, 'utf8');
    if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
      throw new PermissionDeniedError(`${what} needs the admin token as the bearer token`);
    }
  }

  /**
   * Streams a consistent copy of the database: header, then 1 MiB chunks with backpressure. The copy is
   * sent only once its last entry is committed, so that a backup never holds a write that a failover could
   * still take back.
   */
  private async backup(call: grpc.ServerWritableStream<Request, unknown>): Promise<void> {
    const startedAt = process.hrtime.bigint();
    const observe = (code: grpc.status): void =>
      this.observer.observe('Backup', code, Number(process.hrtime.bigint() - startedAt) / 1e9);
    let snapshot: SnapshotFile | undefined;
    try {
      if (call.request[MALFORMED_REQUEST] === true) {
        throw new InvalidArgumentError('the request is not a valid protobuf message for this method');
      }
      this.requireAdminToken(call.metadata, 'backup');
      this.writePath.checkServing();
      snapshot = await this.writePath.createSnapshot();
      await this.writePath.awaitCommitted(snapshot.lastIndex);
      const { lastIndex, lastEpoch, sizeBytes, sha256Hex } = snapshot;
      const clusterId = this.writePath.chat.clusterValue('cluster_id') ?? '';
      const writeChunk = async (chunk: unknown): Promise<boolean> => {
        if (call.cancelled || call.destroyed) return false;
        if (call.write(chunk)) return true;
        return new Promise((resolve) => {
          const onDrain = (): void => {
            call.off('close', onClose);
            resolve(true);
          };
          const onClose = (): void => {
            call.off('drain', onDrain);
            resolve(false);
          };
          call.once('drain', onDrain);
          call.once('close', onClose);
        });
      };
      if (!(await writeChunk({ header: { lastIndex, lastEpoch, sizeBytes, sha256Hex, clusterId } }))) return observe(grpc.status.CANCELLED);
      for await (const data of createReadStream(snapshot.path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        if (!(await writeChunk({ data }))) return observe(grpc.status.CANCELLED);
      }
      this.logger.info({ lastIndex, sizeBytes }, 'served a backup');
      call.end();
      return observe(grpc.status.OK);
    } catch (error) {
      const status = toServiceError(error);
      if (status.code === grpc.status.INTERNAL) this.reportBug('Backup', error);
      observe(status.code);
      if (!call.cancelled && !call.destroyed) call.emit('error', status);
      return;
    } finally {
      await snapshot?.remove().catch(() => undefined);
    }
  }

  /**
   * RotateSessionKey (admin): a new token-signing key signs every login from now on. Older keys keep
   * working until the longest session they can have signed expires (now + the session lifetime), or stop
   * at once with `revoke_previous`, which logs everyone out.
   */
  private async rotateSessionKey(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    this.requireAdminToken(metadata, 'session key rotation');
    const requestId = validateRequestId(request.requestId);
    const revokePrevious = request.revokePrevious === true;
    const principal = 'admin';
    const fingerprint = fingerprintOf('rotateSessionKey', revokePrevious);
    const earlier = await this.earlierResult(requestId, principal, 'rotateSessionKey', fingerprint);
    if (earlier !== undefined) return { keyId: earlier.keyId };
    const keys = this.writePath.chat.sessionKeys();
    if (keys.length === 0) throw new UnavailableError('the cluster is not initialised yet');
    const envelope = this.envelope(requestId, principal, fingerprint);
    const result = await this.submit({
      kind: 'rotateSessionKey',
      ...envelope,
      keyId: Math.max(...keys.map((key) => key.id)) + 1,
      secretHex: randomBytes(32).toString('hex'),
      previousKeysRetireAtMs: revokePrevious ? envelope.timestampMs : envelope.timestampMs + this.limits.sessionTtlMs,
    });
    this.logger.info({ keyId: result.keyId, revokePrevious }, 'rotated the session-signing key');
    if (revokePrevious) {
      this.subscriptions.closeEveryone(new UnauthenticatedError('the session keys were revoked; log in again'));
    }
    return { keyId: result.keyId };
  }

  // -----------------------------------------------------------------------------------------------------
  // Subscriptions.

  private subscribe(call: grpc.ServerWritableStream<Request, unknown>): void {
    const startedAt = process.hrtime.bigint();
    const fail = (error: unknown): void => {
      const status = toServiceError(error);
      if (status.code === grpc.status.INTERNAL) this.reportBug('Subscribe', error);
      this.observer.observe('Subscribe', status.code, Number(process.hrtime.bigint() - startedAt) / 1e9);
      call.emit('error', status);
    };
    let caller: Caller;
    try {
      if (call.request[MALFORMED_REQUEST] === true) {
        throw new InvalidArgumentError('the request is not a valid protobuf message for this method');
      }
      this.writePath.checkServing();
      caller = this.authenticate(call.metadata);
    } catch (error) {
      return fail(error);
    }
    const subscriber: Subscriber = {
      sessionId: caller.sessionId,
      push: (message) => {
        call.write(toWireMessage(message));
      },
      close: (error) => fail(error),
      bufferedBytes: () => call.writableLength,
    };
    try {
      this.subscriptions.add(caller.username, subscriber);
    } catch (error) {
      return fail(error);
    }
    // Response headers tell the client that the stream is registered: from now on, pushes reach it.
    call.sendMetadata(new grpc.Metadata());
    call.on('cancelled', () => {
      this.subscriptions.remove(caller.username, subscriber);
      this.observer.observe('Subscribe', grpc.status.CANCELLED, Number(process.hrtime.bigint() - startedAt) / 1e9);
    });
    // Registration and this replay run in the same turn of the event loop, and publish runs only after a
    // later commit, so no message falls between the replay and the live stream.
    // The replay is bounded by bytes as well as by count, like the live backlog, so that a client that never
    // reads pins about SUBSCRIBER_BUFFER_MAX_BYTES at most. What does not fit stays undelivered: it comes
    // with the next Subscribe once these are acknowledged, or with ReadMessages.
    const replay = this.writePath.chat.undeliveredWithinBytes(
      caller.username,
      call.request.includeQueued !== true,
      SUBSCRIBER_BUFFER_MAX_BYTES,
      SUBSCRIBE_REPLAY_MAX_MESSAGES,
    );
    // Only committed messages are replayed: a later one is applied but unacknowledged, may vanish in a
    // failover, and reaches this subscriber through publish once it is committed.
    const committedIndex = this.writePath.committedIndex();
    for (const message of replay) if (message.sequence <= committedIndex) subscriber.push(message);
  }
}
