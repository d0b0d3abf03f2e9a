/**
 * The shapes ChatClient hands to its callers. The proto loader already turns fields into camelCase and
 * int64 into numbers; these functions copy only the known fields, with defaults, so that a caller never
 * sees a field that a newer server added or misses one that an older server left out.
 */

/** A chat message as the ChatService returns it. */
export interface ChatMessage {
  readonly id: string;
  readonly sender: string;
  readonly recipient: string;
  readonly body: string;
  /** Unix milliseconds, stamped by the replica that accepted the send. */
  readonly sentAtMs: number;
  readonly delivered: boolean;
  /** True when the recipient was online and the message was pushed to a subscription. */
  readonly instant: boolean;
}

export interface LoginResult {
  readonly sessionToken: string;
  readonly unreadCount: number;
  readonly expiresAtMs: number;
}

export interface AccountPage {
  readonly usernames: string[];
  /** Empty on the last page. */
  readonly nextPageToken: string;
}

export interface ReadResult {
  /** Oldest first. */
  readonly messages: ChatMessage[];
  readonly remainingUnreadCount: number;
}

export interface HistoryPage {
  /** Newest first, as the server pages through history. */
  readonly messages: ChatMessage[];
  /** Empty on the last page. */
  readonly nextPageToken: string;
}

type WireObject = Record<string, unknown>;

function asObject(value: unknown): WireObject {
  return typeof value === 'object' && value !== null ? (value as WireObject) : {};
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : Number(value ?? 0) || 0;
}

export function toChatMessage(value: unknown): ChatMessage {
  const wire = asObject(value);
  return {
    id: text(wire.id),
    sender: text(wire.sender),
    recipient: text(wire.recipient),
    body: text(wire.body),
    sentAtMs: count(wire.sentAtMs),
    delivered: wire.delivered === true,
    instant: wire.instant === true,
  };
}

export function toChatMessages(value: unknown): ChatMessage[] {
  return Array.isArray(value) ? value.map(toChatMessage) : [];
}

export function toLoginResult(value: unknown): LoginResult {
  const wire = asObject(value);
  return {
    sessionToken: text(wire.sessionToken),
    unreadCount: count(wire.unreadCount),
    expiresAtMs: count(wire.expiresAtMs),
  };
}

export function toAccountPage(value: unknown): AccountPage {
  const wire = asObject(value);
  const usernames = Array.isArray(wire.usernames) ? wire.usernames.filter((name) => typeof name === 'string') : [];
  return { usernames, nextPageToken: text(wire.nextPageToken) };
}

export function toReadResult(value: unknown): ReadResult {
  const wire = asObject(value);
  return { messages: toChatMessages(wire.messages), remainingUnreadCount: count(wire.remainingUnreadCount) };
}

export function toHistoryPage(value: unknown): HistoryPage {
  const wire = asObject(value);
  return { messages: toChatMessages(wire.messages), nextPageToken: text(wire.nextPageToken) };
}

/** Reads one numeric field of a response, such as `deletedCount`. */
export function countField(value: unknown, field: string): number {
  return count(asObject(value)[field]);
}

/** Reads one string field of a response, such as `username`. */
export function textField(value: unknown, field: string): string {
  return text(asObject(value)[field]);
}

/** Reads one boolean field of a response, such as `exists`. */
export function flagField(value: unknown, field: string): boolean {
  return asObject(value)[field] === true;
}
