/**
 * Who is online: the open Subscribe streams on this replica, per user. A user with at least one stream is
 * online, so a message sent to them is pushed at once and marked instant. Bounded per user, and a
 * subscriber that stops reading is cut off rather than buffered without limit; its pushed messages stay
 * undelivered until acknowledged, so it gets them again when it subscribes again.
 */
import type { StoredMessage } from '../core/commands.js';
import { type ChatError, ResourceExhaustedError, UnavailableError } from '../core/errors.js';

/** What the registry needs of a stream: write a message, and end it with an error. */
export interface Subscriber {
  /** The session the stream was opened in; logging out of it ends the stream. */
  readonly sessionId: string;
  push(message: StoredMessage): void;
  /** Ends the stream with an error status. */
  close(error: ChatError): void;
  /** Bytes written but not yet taken by the network. */
  bufferedBytes(): number;
}

export class SubscriptionRegistry {
  private readonly subscribersByUser = new Map<string, Set<Subscriber>>();

  constructor(
    private readonly subscriptionsPerUserMax: number,
    private readonly subscriberBufferMaxBytes: number,
  ) {}

  /** Registers a subscriber; throws ResourceExhaustedError past the per-user limit. */
  add(username: string, subscriber: Subscriber): void {
    let subscribers = this.subscribersByUser.get(username);
    if (subscribers === undefined) {
      subscribers = new Set();
      this.subscribersByUser.set(username, subscribers);
    }
    if (subscribers.size >= this.subscriptionsPerUserMax) {
      throw new ResourceExhaustedError(
        `${username} already has ${this.subscriptionsPerUserMax} open subscriptions, the most allowed`,
      );
    }
    subscribers.add(subscriber);
  }

  remove(username: string, subscriber: Subscriber): void {
    const subscribers = this.subscribersByUser.get(username);
    if (subscribers === undefined) return;
    subscribers.delete(subscriber);
    if (subscribers.size === 0) this.subscribersByUser.delete(username);
  }

  isOnline(username: string): boolean {
    return this.subscribersByUser.has(username);
  }

  /** Pushes a committed message to every stream of its recipient. */
  publish(message: StoredMessage): void {
    for (const subscriber of this.subscribersByUser.get(message.recipient) ?? []) {
      if (subscriber.bufferedBytes() > this.subscriberBufferMaxBytes) {
        this.remove(message.recipient, subscriber);
        subscriber.close(new UnavailableError('the subscriber fell too far behind; subscribe again'));
        continue;
      }
      subscriber.push(message);
    }
  }

  /** Ends every stream of a user, for example when the account is deleted. */
  closeAll(username: string, error: ChatError): void {
    const subscribers = this.subscribersByUser.get(username) ?? new Set<Subscriber>();
    this.subscribersByUser.delete(username);
    for (const subscriber of subscribers) subscriber.close(error);
  }

  /** Ends the streams opened in one session, when it logs out. */
  closeSession(username: string, sessionId: string, error: ChatError): void {
    for (const subscriber of [...(this.subscribersByUser.get(username) ?? [])]) {
      if (subscriber.sessionId !== sessionId) continue;
      this.remove(username, subscriber);
      subscriber.close(error);
    }
  }

  /** Ends every stream, for example at shutdown. */
  closeEveryone(error: ChatError): void {
    for (const username of [...this.subscribersByUser.keys()]) this.closeAll(username, error);
  }

  get subscriberCount(): number {
    let count = 0;
    for (const subscribers of this.subscribersByUser.values()) count += subscribers.size;
    return count;
  }
}
