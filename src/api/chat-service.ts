/**
 * The client-facing ChatService. Each handler validates its input, resolves everything non-deterministic
 * (ids, timestamps, password hashes) into a command, hands the command to the write path, and answers.
 * Handlers never build statuses themselves: every error goes through status-mapping.ts, and every handler
 * returns right after answering.
 */
import * as grpc from '@grpc/grpc-js';
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
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
import { deriveSessionToken, verifySessionToken } from '../core/session-token.js';
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
import { DECOY_PASSWORD_HASH, hashPassword, verifyPassword } from './password-hashing.js';
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
  /** The replica's replication state, in the shape of the proto's ReplicaStatus. */
  replicaStatus(): Record<string, unknown>;
  /** Asks the protocol to remove a member; throws FailedPreconditionError when it refuses. */
  removeMember(ordinal: number): void;
  /** Registers a callback for when this replica stops leading. */
  onLeadershipLost(listener: () => void): void;
}

/** Receives one observation per finished RPC, for metrics. */
export interface RpcObserver {
  observe(method: string, code: grpc.status, durationSeconds: number): void;
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
      CreateAccount: this.unary('CreateAccount', (call) => this.createAccount(call.request)),
      AccountExists: this.unary('AccountExists', (call) => this.accountExists(call.request)),
      Login: this.unary('Login', (call) => this.login(call.request)),
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
      const finish = (code: grpc.status): void => {
        this.observer.observe(method, code, Number(process.hrtime.bigint() - startedAt) / 1e9);
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
          finish(status.code);
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

  /** The cluster's token-signing secret; it never changes once the cluster exists, so it is read once. */
  private sessionSecret(): string {
    this.cachedSessionSecret ??= this.writePath.chat.clusterValue('session_secret');
    if (this.cachedSessionSecret === undefined) throw new UnavailableError('the cluster is not initialised yet');
    return this.cachedSessionSecret;
  }

  private cachedSessionSecret: string | undefined;

  /** The session id of a correctly signed bearer token, without looking the session up. */
  private sessionIdFromMetadata(metadata: grpc.Metadata): string {
    const header = metadata.get('authorization')[0];
    if (typeof header !== 'string' || !header.startsWith('Bearer ')) {
      throw new UnauthenticatedError('log in first: the authorization metadata holds no bearer token');
    }
    const sessionId = verifySessionToken(this.sessionSecret(), header.slice('Bearer '.length).trim());
    if (sessionId === undefined) throw new UnauthenticatedError('the session token is not valid; log in again');
    return sessionId;
  }

  private authenticate(metadata: grpc.Metadata): Caller {
    const sessionId = this.sessionIdFromMetadata(metadata);
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

  private async createAccount(request: Request): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const username = validateUsername(request.username);
    const password = validatePassword(request.password);
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

  /** Checks a password in constant work whether or not the user exists. */
  private async checkPassword(username: string, password: string): Promise<void> {
    const storedHash = this.writePath.chat.passwordHash(username);
    const matches = await verifyPassword(password, storedHash ?? DECOY_PASSWORD_HASH);
    if (storedHash === undefined || !matches) throw new UnauthenticatedError();
  }

  private async login(request: Request): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const username = validateUsername(request.username);
    const password = validatePasswordToCheck(request.password);
    await this.writePath.readBarrier();
    await this.checkPassword(username, password);
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
    return {
      sessionToken: deriveSessionToken(this.sessionSecret(), result.sessionId),
      unreadCount: this.writePath.chat.unreadCount(username),
      expiresAtMs: result.expiresAtMs,
    };
  }

  private async logout(request: Request, metadata: grpc.Metadata): Promise<unknown> {
    const requestId = validateRequestId(request.requestId);
    const sessionId = this.sessionIdFromMetadata(metadata);
    const principal = `session:${sessionId}`;
    const fingerprint = fingerprintOf('logout');
    if (await this.earlierResult(requestId, principal, 'logout', fingerprint) !== undefined) return {};
    const caller = this.authenticate(metadata);
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
    const caller = this.authenticate(metadata);
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
    if (earlier !== undefined) return { message: toWireMessage(earlier.message) };
    const caller = this.authenticate(metadata);
    const result = await this.submit({
      kind: 'sendMessage',
      ...this.envelope(requestId, principal, fingerprint),
      messageId: randomUUID(),
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
    const caller = this.authenticate(metadata);
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
      remainingUnreadCount: this.writePath.chat.unreadCount(caller.username),
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
    const caller = this.authenticate(metadata);
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
    const replay =
      call.request.includeQueued === true
        ? this.writePath.chat.oldestUndelivered(caller.username, SUBSCRIBE_REPLAY_MAX_MESSAGES)
        : this.writePath.chat.pushedUnacknowledged(caller.username, SUBSCRIBE_REPLAY_MAX_MESSAGES);
    for (const message of replay) subscriber.push(message);
  }
}
