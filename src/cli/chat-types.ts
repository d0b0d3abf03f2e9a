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
  /** The account's name as registered, which may differ in case from the name typed; '' from an old server. */
  readonly username: string;
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

/** How far one follower has got, as the leader sees it. */
export interface FollowerStatus {
  readonly ordinal: number;
  readonly matchIndex: number;
  readonly lagEntries: number;
  readonly inSync: boolean;
}

/** One replica's own view of its role and replication state, from GetReplicaStatus. */
export interface ReplicaStatus {
  readonly ordinal: number;
  /** 'leader' or 'follower'; kept as a string so that a role a newer server adds still shows. */
  readonly role: string;
  readonly epoch: number;
  /** The leader this replica knows of, or null when it knows of none. */
  readonly leaderOrdinal: number | null;
  /** The leader's client address, or '' when it is not known. */
  readonly leaderAddress: string;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly commitIndex: number;
  readonly members: number[];
  /** The in-sync set of this replica's latest configuration, sorted. */
  readonly inSync: number[];
  readonly leaseValid: boolean;
  readonly snapshotting: boolean;
  /** Why no leader is being elected, or '' while there is one. */
  readonly waitingReason: string;
  /** Filled on the leader only. */
  readonly followers: FollowerStatus[];
  readonly clientAddress: string;
  /** Time spent on the snapshot being installed; 0 when none is. */
  readonly snapshotSeconds: number;
  readonly snapshotBytesReceived: number;
  readonly snapshotBytesTotal: number;
  /** The configuration store the replica uses, or '' when it does not say. */
  readonly configurationStore: string;
  /** Whether it reaches that store; null when the replica does not say. */
  readonly configurationStoreReachable: boolean | null;
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
    username: text(wire.username),
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

function ordinals(value: unknown): number[] {
  return Array.isArray(value) ? value.map(count).sort((left, right) => left - right) : [];
}

function toFollowerStatus(value: unknown): FollowerStatus {
  const wire = asObject(value);
  return {
    ordinal: count(wire.ordinal),
    matchIndex: count(wire.matchIndex),
    lagEntries: count(wire.lagEntries),
    inSync: wire.inSync === true,
  };
}

export function toReplicaStatus(value: unknown): ReplicaStatus {
  const wire = asObject(value);
  // The proto has no null, so a replica that knows no leader sends -1.
  const leaderOrdinal = count(wire.leaderOrdinal);
  return {
    ordinal: count(wire.ordinal),
    role: text(wire.role),
    epoch: count(wire.epoch),
    leaderOrdinal: leaderOrdinal >= 0 ? leaderOrdinal : null,
    leaderAddress: text(wire.leaderAddress),
    lastIndex: count(wire.lastIndex),
    lastEpoch: count(wire.lastEpoch),
    commitIndex: count(wire.commitIndex),
    members: ordinals(wire.members),
    inSync: ordinals(wire.inSync),
    leaseValid: wire.leaseValid === true,
    snapshotting: wire.snapshotting === true,
    waitingReason: text(wire.waitingReason),
    followers: Array.isArray(wire.followers) ? wire.followers.map(toFollowerStatus) : [],
    clientAddress: text(wire.clientAddress),
    snapshotSeconds: count(wire.snapshotSeconds),
    snapshotBytesReceived: count(wire.snapshotBytesReceived),
    snapshotBytesTotal: count(wire.snapshotBytesTotal),
    configurationStore: text(wire.configurationStore),
    // proto3 sends false for a field a server never set, so the flag counts only beside a store's name.
    configurationStoreReachable: text(wire.configurationStore) === '' ? null : wire.configurationStoreReachable === true,
  };
}

/** The first chunk of a Backup stream. */
export interface BackupHeader {
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly sizeBytes: number;
  readonly sha256Hex: string;
  readonly clusterId: string;
}

export function toBackupHeader(value: unknown): BackupHeader {
  const header = asObject(asObject(value).header);
  return {
    lastIndex: count(header.lastIndex),
    lastEpoch: count(header.lastEpoch),
    sizeBytes: count(header.sizeBytes),
    sha256Hex: text(header.sha256Hex),
    clusterId: text(header.clusterId),
  };
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
