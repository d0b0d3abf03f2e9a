/**
 * Simulated clients of the real ChatService. Each client has its own session of one of a few users and
 * loops: send a message, read its history (a read behind the read barrier), read its unread messages (a
 * write that shows messages), or keep a subscription open. Requests travel to a replica as events of that
 * replica's process, through the service's real handlers, with a fake gRPC call; a client whose request
 * gets no answer in time, or UNAVAILABLE, retries the same request id at the leader it was told of or at
 * the next replica, which is what exercises de-duplication across failovers. Accounts and sessions are
 * made by submitting the real createAccount and login commands to the leader's write path (the service
 * would hash a password on a thread pool, whose timing the simulation cannot control).
 *
 * Everything a client was told is recorded for the checker: acknowledged writes (at the instant the
 * server answered), what every read showed, and every pushed message.
 */
import * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ClientCommand, CommandResult } from '../../src/core/commands.js';
import { deriveSessionToken } from '../../src/api/session-token.js';
import { LEADER_METADATA_KEY } from '../../src/api/status-mapping.js';
import type { Random } from './random.js';
import type { ReplicaSlot, SimulatedCluster } from './simulated-cluster.js';

/** A write the service acknowledged to a client. */
export interface AcknowledgedWrite {
  readonly requestId: string;
  readonly kind: ClientCommand['kind'];
  readonly ackedAtMs: number;
  /** The replica that answered, and the epoch it led. */
  readonly ordinal: number;
  readonly epoch: number;
  /** For a sent message: its body (unique per request) and the id the client was given. */
  readonly body?: string;
  readonly messageId?: string;
  readonly sender?: string;
}

/** A message a client was shown: by a history read, by ReadMessages, or pushed to a subscription. */
export interface ShownMessage {
  readonly how: 'history' | 'read-messages' | 'push' | 'replay';
  readonly messageId: string;
  readonly body: string;
  readonly shownAtMs: number;
  readonly ordinal: number;
}

export interface WorkloadHooks {
  /** Called at the instant a replica acknowledges a write, before the answer travels. */
  onAcknowledged(write: AcknowledgedWrite, slot: ReplicaSlot): void;
  /** Called when a history read completes, with what it was invoked after and what it showed. */
  onHistoryRead(read: HistoryRead): void;
  /** Called at the instant a replica shows messages to a client (newest first for history). */
  onShown(messages: readonly { id: string; body: string }[], how: ShownMessage['how'], slot: ReplicaSlot): void;
}

export interface HistoryRead {
  readonly username: string;
  readonly invokedAtMs: number;
  readonly ordinal: number;
  readonly bodies: ReadonlyMap<string, string>;
  readonly complete: boolean;
}

export type Answer =
  | { readonly ok: true; readonly response: Record<string, unknown>; readonly ordinal: number }
  | { readonly ok: false; readonly code: grpc.status | 'timeout'; readonly details: string; readonly leader?: number };

const CLIENT_DEADLINE_MS = 1500;
const HISTORY_PAGE_SIZE = 500;
const PASSWORD_HASH =
  // A syntactically valid scrypt hash; nobody logs in with a password in the simulation.
  'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

interface ClientState {
  readonly name: string;
  readonly username: string;
  readonly sessionId: string;
  readonly random: Random;
  token: string | undefined;
  preferred: number;
  sent: number;
  subscription: { close: () => void } | undefined;
}

export interface WorkloadOptions {
  readonly users: number;
  readonly clientsPerUser: number;
  /** Mean pause between a client's operations, in virtual ms. */
  thinkTimeMs: number;
  /** Whether clients read and subscribe, not only write. */
  readonly reads: boolean;
}

export class Workload {
  readonly acknowledged = new Map<string, AcknowledgedWrite>();
  /** Every message-sending request ever made, acknowledged or not: body by request id. */
  readonly attemptedSends = new Map<string, { body: string; sender: string }>();
  readonly shown: ShownMessage[] = [];
  readonly usernames: string[];
  private readonly clients: ClientState[] = [];
  private running = false;
  private readonly handlersByService = new WeakMap<object, grpc.UntypedServiceImplementation>();
  counters = { requests: 0, retries: 0, timeouts: 0, unavailable: 0, reads: 0, uncheckedReads: 0, subscriptions: 0, pushes: 0 };
  private requestCounter = 0;

  constructor(
    private readonly cluster: SimulatedCluster,
    private readonly random: Random,
    readonly options: WorkloadOptions,
    private readonly hooks: WorkloadHooks,
  ) {
    this.usernames = Array.from({ length: options.users }, (_, user) => `user${user}`);
    for (const username of this.usernames) {
      for (let session = 0; session < options.clientsPerUser; session += 1) {
        this.clients.push({
          name: `${username}/${session}`,
          username,
          sessionId: random.hex(32),
          random: random.fork(),
          token: undefined,
          preferred: 0,
          sent: 0,
          subscription: undefined,
        });
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Set-up: accounts and sessions, through the leader's write path.

  /** Creates every account and session; resolves once all are acknowledged (or false after `timeoutMs`). */
  async setUp(timeoutMs: number): Promise<boolean> {
    const pending = new Map<string, ClientCommand>();
    for (const username of this.usernames) {
      pending.set(`create-${username}`, {
        kind: 'createAccount',
        requestId: `create-${username}`,
        principal: `user:${username}`,
        fingerprint: fingerprintOf('createAccount', username),
        timestampMs: 0,
        username,
        passwordHash: PASSWORD_HASH,
      });
    }
    const logins = new Map<string, ClientCommand>();
    for (const client of this.clients) {
      logins.set(`login-${client.sessionId}`, {
        kind: 'login',
        requestId: `login-${client.sessionId}`,
        principal: `user:${client.username}`,
        fingerprint: fingerprintOf('login', client.username),
        timestampMs: 0,
        username: client.username,
        sessionId: client.sessionId,
        expiresAtMs: 4_000_000_000_000,
      });
    }
    const deadline = this.cluster.nowMs + timeoutMs;
    for (const batch of [pending, logins]) {
      while (batch.size > 0) {
        if (this.cluster.nowMs > deadline) return false;
        const leader = this.cluster.servingLeader();
        if (leader === undefined) {
          await this.cluster.runFor(20);
          continue;
        }
        let outstanding = 0;
        for (const command of batch.values()) {
          outstanding += 1;
          this.submitDirect(leader, command).then(
            () => batch.delete(command.requestId),
            () => undefined,
          ).finally(() => {
            outstanding -= 1;
          });
        }
        await this.cluster.runUntil(() => outstanding === 0, 1000);
      }
    }
    const secret = this.sessionSecret();
    if (secret === undefined) return false;
    for (const client of this.clients) client.token = deriveSessionToken(secret, client.sessionId);
    return true;
  }

  private sessionSecret(): string | undefined {
    for (const slot of this.cluster.replicas) {
      if (!slot.up || slot.node === undefined) continue;
      const secret = this.cluster.guard(slot, () => slot.node!.chat.clusterValue('session_secret'));
      if (secret !== undefined) return secret;
    }
    return undefined;
  }

  /** Submits a command to a replica's write path, as the service would, and records its acknowledgement. */
  private submitDirect(slot: ReplicaSlot, command: ClientCommand): Promise<CommandResult> {
    const node = slot.node!;
    const process = slot.process!;
    const stamped = { ...command, timestampMs: node.nextTimestampMs() } as ClientCommand;
    let submitted: Promise<CommandResult>;
    try {
      submitted = node.submit(stamped);
    } catch (error) {
      return Promise.reject(error);
    }
    return submitted.then((result) => {
      if (!process.alive) throw new Error('the replica died before it answered');
      this.acknowledge({ requestId: command.requestId, kind: command.kind, ackedAtMs: this.cluster.nowMs, ordinal: slot.ordinal, epoch: slot.status()?.epoch ?? -1 }, slot);
      return result;
    });
  }

  private acknowledge(write: AcknowledgedWrite, slot: ReplicaSlot): void {
    const earlier = this.acknowledged.get(write.requestId);
    if (earlier !== undefined && earlier.messageId !== write.messageId) {
      this.cluster.violation(
        `request ${write.requestId} was acknowledged twice with different results: message ${earlier.messageId} by replica ${earlier.ordinal}, then ${write.messageId} by replica ${write.ordinal}`,
      );
    }
    if (earlier === undefined) this.acknowledged.set(write.requestId, write);
    this.hooks.onAcknowledged(write, slot);
  }

  // ---------------------------------------------------------------------------------------------------
  // The client loops.

  start(): void {
    this.running = true;
    for (const client of this.clients) this.scheduleNext(client, client.random.between(0, this.options.thinkTimeMs));
  }

  stop(): void {
    this.running = false;
    for (const client of this.clients) {
      client.subscription?.close();
      client.subscription = undefined;
    }
  }

  private scheduleNext(client: ClientState, delayMs: number): void {
    this.cluster.scheduler.schedule(delayMs, `client ${client.name} next`, () => {
      if (!this.running) return;
      void this.operate(client).then(() => {
        if (this.running) this.scheduleNext(client, client.random.between(0.5, 1.5) * this.options.thinkTimeMs);
      });
    });
  }

  private async operate(client: ClientState): Promise<void> {
    const choice = client.random.next();
    if (!this.options.reads || choice < 0.6) await this.sendMessage(client);
    else if (choice < 0.8) await this.readHistory(client);
    else if (choice < 0.9) await this.readMessages(client);
    else await this.toggleSubscription(client);
  }

  private metadata(client: ClientState): grpc.Metadata {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${client.token}`);
    return metadata;
  }

  // ---------------------------------------------------------------------------------------------------
  // Scripted operations, for the regression scenarios.

  clientNames(): string[] {
    return this.clients.map((client) => client.name);
  }

  private clientNamed(name: string): ClientState {
    const client = this.clients.find((candidate) => candidate.name === name);
    if (client === undefined) throw new Error(`no client ${name}`);
    return client;
  }

  /** Sends one message from client `name`, first to replica `ordinal`; resolves with the final answer. */
  sendAs(name: string, ordinal: number, recipient?: string): Promise<Answer> {
    const client = this.clientNamed(name);
    client.preferred = ordinal;
    return this.sendMessage(client, recipient);
  }

  /** Opens a subscription of client `name` on replica `ordinal`. */
  subscribeAs(name: string, ordinal: number, includeQueued: boolean): void {
    const client = this.clientNamed(name);
    client.subscription?.close();
    client.subscription = undefined;
    client.preferred = ordinal;
    this.openSubscription(client, includeQueued);
  }

  /** One history read of client `name` at replica `ordinal`, checked like every other read. */
  async readHistoryAs(name: string, ordinal: number): Promise<boolean> {
    const client = this.clientNamed(name);
    client.preferred = ordinal;
    return this.readHistory(client);
  }

  /** Sends one message, retrying the same request id until acknowledged or out of attempts. */
  private async sendMessage(client: ClientState, chosenRecipient?: string): Promise<Answer> {
    const others = this.usernames.filter((username) => username !== client.username);
    const recipient = chosenRecipient ?? client.random.pick(others.length > 0 ? others : this.usernames);
    this.requestCounter += 1;
    const requestId = `send-${client.name.replace('/', '-')}-${client.sent}`;
    client.sent += 1;
    const body = `message ${requestId}`;
    this.attemptedSends.set(requestId, { body, sender: client.username });
    const answer = await this.withRetries(client, 'SendMessage', { requestId, recipient, body });
    if (!answer.ok) return answer;
    const message = answer.response.message as { id: string; body: string };
    if (message.body !== body) this.cluster.violation(`request ${requestId} was answered with the body of another message: ${message.body}`);
    return answer;
  }

  private async readMessages(client: ClientState): Promise<void> {
    this.requestCounter += 1;
    const requestId = `read-${client.name.replace('/', '-')}-${this.requestCounter}`;
    const answer = await this.withRetries(client, 'ReadMessages', { requestId, limit: 5 });
    if (!answer.ok) return;
    for (const message of answer.response.messages as { id: string; body: string }[]) {
      this.shown.push({ how: 'read-messages', messageId: message.id, body: message.body, shownAtMs: this.cluster.nowMs, ordinal: answer.ordinal });
    }
  }

  private async readHistory(client: ClientState): Promise<boolean> {
    const invokedAtMs = this.cluster.nowMs;
    const answer = await this.call(client, client.preferred, 'ListHistory', { pageSize: HISTORY_PAGE_SIZE });
    this.noteLeader(client, answer);
    if (!answer.ok) return false;
    this.counters.reads += 1;
    const messages = answer.response.messages as { id: string; body: string; sender: string }[];
    const bodies = new Map<string, string>();
    for (const message of messages) {
      bodies.set(message.body, message.id);
      this.shown.push({ how: 'history', messageId: message.id, body: message.body, shownAtMs: this.cluster.nowMs, ordinal: answer.ordinal });
    }
    const complete = messages.length < HISTORY_PAGE_SIZE;
    if (!complete) this.counters.uncheckedReads += 1;
    this.hooks.onHistoryRead({ username: client.username, invokedAtMs, ordinal: answer.ordinal, bodies, complete });
    return true;
  }

  /** Opens a subscription on the replica the client believes leads, or closes the open one. */
  private async toggleSubscription(client: ClientState): Promise<void> {
    if (client.subscription !== undefined) {
      client.subscription.close();
      client.subscription = undefined;
      return;
    }
    this.openSubscription(client, client.random.chance(0.5));
  }

  private openSubscription(client: ClientState, includeQueued: boolean): void {
    const slot = this.cluster.replicas[client.preferred];
    const process = slot?.currentProcess();
    if (slot === undefined || process === undefined) return;
    this.counters.subscriptions += 1;
    const stream = new EventEmitter() as EventEmitter & Record<string, unknown>;
    let open = true;
    const close = (): void => {
      if (!open) return;
      open = false;
      slot.deathListeners.delete(close);
      if (process.alive) stream.emit('cancelled');
    };
    // What the service writes while its handler runs is the replay; what comes later is a live push.
    let inHandler = false;
    stream.request = { includeQueued };
    stream.metadata = this.metadata(client);
    stream.cancelled = false;
    stream.writableLength = 0;
    stream.sendMetadata = () => undefined;
    stream.write = (message: { id: string; body: string }) => {
      if (!open || !process.alive) return true;
      this.counters.pushes += 1;
      this.hooks.onShown([message], inHandler ? 'replay' : 'push', slot);
      this.shown.push({ how: inHandler ? 'replay' : 'push', messageId: message.id, body: message.body, shownAtMs: this.cluster.nowMs, ordinal: slot.ordinal });
      return true;
    };
    stream.on('error', () => {
      open = false;
      slot.deathListeners.delete(close);
      if (client.subscription?.close === close) client.subscription = undefined;
    });
    client.subscription = { close };
    slot.deathListeners.add(close);
    this.cluster.scheduler.schedule(
      this.random.between(0.5, 2),
      `client ${client.name} Subscribe -> ${slot.ordinal}`,
      () => {
        const handler = this.handlersOf(slot)?.Subscribe as ((call: unknown) => void) | undefined;
        inHandler = true;
        try {
          handler?.(stream);
        } finally {
          inHandler = false;
        }
      },
      process,
    );
  }

  /** One request, retried with the same arguments (and so the same request id) until it is answered. */
  private async withRetries(client: ClientState, method: string, request: Record<string, unknown>): Promise<Answer> {
    let answer: Answer = { ok: false, code: 'timeout', details: 'not sent' };
    for (let attempt = 0; attempt < 10; attempt += 1) {
      if (attempt > 0) {
        this.counters.retries += 1;
        await this.sleep(client.random.between(20, 120));
      }
      answer = await this.call(client, client.preferred, method, request);
      this.noteLeader(client, answer);
      if (answer.ok) return answer;
      if (answer.code !== 'timeout' && answer.code !== grpc.status.UNAVAILABLE) {
        // NOT_FOUND: ReadMessages chose ids on a leader whose uncommitted messages were then lost; harmless.
        if (!(method === 'ReadMessages' && answer.code === grpc.status.NOT_FOUND)) {
          this.cluster.violation(`${method} ${String(request.requestId)} failed with code ${answer.code}: ${answer.details}`);
        }
        return answer;
      }
    }
    return answer;
  }

  private noteLeader(client: ClientState, answer: Answer): void {
    if (answer.ok) return;
    if (answer.leader !== undefined) client.preferred = answer.leader;
    else client.preferred = (client.preferred + 1) % this.cluster.replicas.length;
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.cluster.scheduler.schedule(delayMs, 'client sleep', resolve));
  }

  private handlersOf(slot: ReplicaSlot): grpc.UntypedServiceImplementation | undefined {
    const service = slot.service;
    if (service === undefined) return undefined;
    let handlers = this.handlersByService.get(service);
    if (handlers === undefined) {
      handlers = service.handlers();
      this.handlersByService.set(service, handlers);
    }
    return handlers;
  }

  /** One unary call to one replica, with the client's deadline. */
  private call(client: ClientState, ordinal: number, method: string, request: Record<string, unknown>): Promise<Answer> {
    this.counters.requests += 1;
    return new Promise<Answer>((resolve) => {
      let done = false;
      const finish = (answer: Answer): void => {
        if (done) return;
        done = true;
        if (!answer.ok && answer.code === 'timeout') this.counters.timeouts += 1;
        if (!answer.ok && answer.code === grpc.status.UNAVAILABLE) this.counters.unavailable += 1;
        resolve(answer);
      };
      const scheduler = this.cluster.scheduler;
      scheduler.schedule(CLIENT_DEADLINE_MS, `client ${client.name} deadline`, () =>
        finish({ ok: false, code: 'timeout', details: `no answer within ${CLIENT_DEADLINE_MS} ms` }),
      );
      const slot = this.cluster.replicas[ordinal]!;
      const process = slot.currentProcess();
      if (process === undefined) {
        scheduler.schedule(1, 'connection refused', () =>
          finish({ ok: false, code: grpc.status.UNAVAILABLE, details: `replica ${ordinal} is down` }),
        );
        return;
      }
      scheduler.schedule(
        this.random.between(0.5, 2),
        `client ${client.name} ${method} -> ${ordinal}`,
        () => {
          const handler = this.handlersOf(slot)?.[method] as grpc.handleUnaryCall<unknown, unknown> | undefined;
          if (handler === undefined) return;
          const call = { request, metadata: this.metadata(client), cancelled: false };
          handler(call as never, ((error: (Partial<grpc.StatusObject> & { code: grpc.status }) | null, response?: unknown) => {
            // An answer the process computed after it died never leaves the machine.
            if (!process.alive) return;
            let answer: Answer;
            if (error === null || error === undefined) {
              answer = { ok: true, response: response as Record<string, unknown>, ordinal };
              this.onServerAnswer(client, slot, method, request, answer.response);
            } else {
              const hint = error.metadata?.get(LEADER_METADATA_KEY)[0];
              const leader = typeof hint === 'string' ? this.cluster.replicas.find((other) => other.clientAddress === hint)?.ordinal : undefined;
              answer = { ok: false, code: error.code, details: error.details ?? '', ...(leader === undefined ? {} : { leader }) };
            }
            scheduler.schedule(this.random.between(0.5, 2), `answer ${method} ${ordinal} -> client ${client.name}`, () => finish(answer));
          }) as grpc.sendUnaryData<unknown>);
        },
        process,
      );
    });
  }

  /** Records an acknowledged write at the instant the server answers it. */
  private onServerAnswer(
    client: ClientState,
    slot: ReplicaSlot,
    method: string,
    request: Record<string, unknown>,
    response: Record<string, unknown>,
  ): void {
    const epoch = slot.status()?.epoch ?? -1;
    const base = { requestId: String(request.requestId), ackedAtMs: this.cluster.nowMs, ordinal: slot.ordinal, epoch };
    if (method === 'ListHistory' || method === 'ReadMessages') {
      this.hooks.onShown(response.messages as { id: string; body: string }[], method === 'ListHistory' ? 'history' : 'read-messages', slot);
    }
    if (method === 'SendMessage') {
      const message = response.message as { id: string; body: string };
      this.acknowledge({ ...base, kind: 'sendMessage', body: String(request.body), messageId: message.id, sender: client.username }, slot);
    } else if (method === 'ReadMessages') {
      this.acknowledge({ ...base, kind: 'markDelivered' }, slot);
    }
  }
}

function fingerprintOf(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}
