/**
 * A Subscribe stream that survives failovers and outages of any length. When the stream is lost
 * (UNAVAILABLE, a dropped connection, or a server that ends it), it subscribes again on the leader or the
 * next server, this time with include_queued set so that messages queued while it was away reach it too,
 * and it keeps trying, with a backoff capped at a few seconds, until it is closed or refused for good
 * (UNAUTHENTICATED after a logout, for example). It tells its owner once when the stream is lost and once
 * when it is back, not at every attempt. The server replays every message the client has not
 * acknowledged, so the same message can arrive twice; the subscription drops repeats by message id and
 * hands each message to the caller once.
 */
import type * as grpc from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import { ChatClientError } from './chat-client-error.js';
import { type ChatMessage, toChatMessage } from './chat-types.js';
import { isFailoverStatus, retryDelayMs, type ServerRotation } from './server-rotation.js';

/** What a subscription needs from the client that created it. */
export interface SubscriptionTransport {
  readonly rotation: ServerRotation;
  /** Starts one Subscribe call on `address`, with the client's current session token. */
  openStream(address: string, includeQueued: boolean): grpc.ClientReadableStream<unknown>;
  /** A stream to `address` failed: the client may replace a channel that never connected. */
  streamFailed?(address: string): void;
}

/** What `ChatClient.subscribe` returns. */
export interface Subscription {
  /** Stops the subscription for good; `onEnd` is then called with no error. Safe to call twice. */
  close(): void;
}

export type MessageListener = (message: ChatMessage) => void;
/** Called exactly once: with no error after close(), or with the error that ended the subscription. */
export type EndListener = (error?: ChatClientError) => void;
/**
 * Called when the live stream is lost ('lost', with the error; it is being retried in the background) and
 * when a stream works again ('restored'). Each outage gives one of each, however many attempts it takes.
 */
export type ConnectionListener = (change: 'lost' | 'restored', error?: ChatClientError) => void;

/** Retries of a lost stream back off up to this: an outage ends unannounced, so keep asking often enough. */
export const SUBSCRIPTION_RETRY_DELAY_MAX_MS = 3000;

/** How many message ids are remembered to drop repeats; a replay is far shorter than this. */
export const SEEN_MESSAGE_IDS_MAX = 10_000;
/**
 * A stream still open after this long resets the backoff: a server that refuses a subscription does so at
 * once, so an open stream this old was most likely accepted.
 */
const STREAM_STABLE_AFTER_MS = 2000;

/** A set of ids that forgets the oldest once it holds `capacity`, so that a long session stays bounded. */
export class RecentIdSet {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** Adds `id`; returns false when it was already there. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      // A Set iterates in insertion order, so the first id is the oldest.
      const oldest = this.ids.values().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
    return true;
  }

  get size(): number {
    return this.ids.size;
  }
}

export class ResilientSubscription implements Subscription {
  private stream: grpc.ClientReadableStream<unknown> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private finished = false;
  /** When the current run of failed streams began; undefined while a stream works. */
  private failureCount = 0;
  /** True between a 'lost' report and the next 'restored' one. */
  private reportedLost = false;
  private readonly seenMessageIds = new RecentIdSet(SEEN_MESSAGE_IDS_MAX);

  constructor(
    private readonly transport: SubscriptionTransport,
    private readonly includeQueued: boolean,
    private readonly onMessage: MessageListener,
    private readonly onEnd: EndListener,
    /** Tells the client that created this subscription that it no longer needs closing. */
    private readonly onFinished: (subscription: ResilientSubscription) => void,
    private readonly onConnectionChange?: ConnectionListener,
    /** Gets each message the server sends again (a replay after a reconnect), which onMessage had already. */
    private readonly onRepeat?: MessageListener,
  ) {}

  start(): void {
    this.open(this.includeQueued);
  }

  close(): void {
    this.finish(undefined);
  }

  private open(includeQueued: boolean): void {
    const address = this.transport.rotation.current;
    let stream: grpc.ClientReadableStream<unknown>;
    try {
      stream = this.transport.openStream(address, includeQueued);
    } catch (error) {
      this.streamLost(address, ChatClientError.fromCallError(error));
      return;
    }
    this.stream = stream;
    let streamDone = false;
    const streamEnded = (error: ChatClientError): void => {
      if (streamDone) return;
      streamDone = true;
      clearTimeout(this.stableTimer);
      if (this.stream === stream) this.stream = undefined;
      this.streamLost(address, error);
    };
    stream.on('data', (wire: unknown) => {
      if (streamDone || this.finished) return;
      this.streamWorks();
      const message = toChatMessage(wire);
      if (this.seenMessageIds.add(message.id)) this.onMessage(message);
      else this.onRepeat?.(message);
    });
    // grpc-js emits 'error' for every status but OK; listening also keeps the error from being thrown.
    stream.on('error', (error: unknown) => streamEnded(ChatClientError.fromCallError(error)));
    stream.on('status', (status: grpc.StatusObject) => {
      if (status.code === grpcStatus.OK) {
        // A server never ends a subscription on purpose, so a clean end means it is going away.
        streamEnded(new ChatClientError(grpcStatus.UNAVAILABLE, 'the server ended the subscription', status.metadata));
      }
    });
    // The server sends headers once the subscription is registered: from then on, nothing is missed.
    stream.on('metadata', () => {
      if (!streamDone && !this.finished) this.streamWorks();
    });
    // An old stream counts for the backoff, but only the server's headers or a message say it is back: a
    // call may also sit this long waiting for a connection to a host that drops packets.
    this.stableTimer = setTimeout(() => {
      this.failureCount = 0;
    }, STREAM_STABLE_AFTER_MS);
    this.stableTimer.unref();
  }

  private streamWorks(): void {
    this.failureCount = 0;
    if (this.reportedLost) {
      this.reportedLost = false;
      this.onConnectionChange?.('restored');
    }
  }

  private streamLost(address: string, error: ChatClientError): void {
    if (this.finished) return;
    if (!isFailoverStatus(error.code)) {
      this.finish(error);
      return;
    }
    // The first loss is reported after one quick retry, so that an ordinary failover (a follower's
    // refusal that names the leader) passes without a word.
    if (!this.reportedLost && this.failureCount >= 1) {
      this.reportedLost = true;
      this.onConnectionChange?.('lost', error);
    }
    this.transport.streamFailed?.(address);
    const redirected = this.transport.rotation.failedOver(address, error.metadata);
    const delayMs = redirected && this.failureCount === 0 ? 0 : retryDelayMs(this.failureCount, SUBSCRIPTION_RETRY_DELAY_MAX_MS);
    this.failureCount += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      // Messages queued while no stream was open must reach the new stream, hence include_queued.
      if (!this.finished) this.open(true);
    }, delayMs);
  }

  private finish(error: ChatClientError | undefined): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    this.onFinished(this);
    this.onEnd(error);
  }
}
