/**
 * Limits on everything a client can make the server hold or compute. Fixed rules of the data model are
 * constants here; limits an operator may tune live in the config (src/node/config.ts) with these defaults.
 */

/** Usernames: 1 to 32 characters, letters, digits, `_`, `.` and `-`, starting with a letter or digit. */
export const USERNAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
export const USERNAME_MAX_LENGTH = 32;
export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 256;
/** Request ids: 1 to 64 characters of [A-Za-z0-9_-], which a UUID satisfies. */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const ACCOUNT_PATTERN_MAX_LENGTH = 64;
/** Message ids are UUIDs chosen by the accepting replica. */
export const MESSAGE_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const MESSAGE_IDS_PER_REQUEST_MAX = 500;
export const PAGE_TOKEN_MAX_LENGTH = 128;

/**
 * How long a request id is remembered for idempotent retries, and how many are kept at most. Both are part
 * of the replicated state machine, so they are constants shared by every replica, not per-replica config.
 */
export const REQUEST_RETENTION_MS = 24 * 60 * 60 * 1000;
export const REQUEST_RETENTION_MAX_COUNT = 1_000_000;
/** Expired sessions and old request ids are pruned when the log index is a multiple of this. */
export const PRUNE_EVERY_ENTRIES = 1024;

/** The limits an operator may tune. */
export interface ChatLimits {
  readonly messageMaxBytes: number;
  readonly pageSizeDefault: number;
  readonly pageSizeMax: number;
  readonly subscriptionsPerUserMax: number;
  readonly sessionTtlMs: number;
}

export const DEFAULT_CHAT_LIMITS: ChatLimits = Object.freeze({
  messageMaxBytes: 4096,
  pageSizeDefault: 50,
  pageSizeMax: 500,
  subscriptionsPerUserMax: 4,
  sessionTtlMs: 7 * 24 * 60 * 60 * 1000,
});
