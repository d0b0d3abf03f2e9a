/**
 * Commands: every change to the chat state, with all non-determinism already resolved (ids, timestamps,
 * salts and password hashes are decided once, by the replica that accepts the write). Applying the same
 * commands in the same order to the same state therefore gives the same state on every replica.
 * Commands are stored in the durable log as JSON, so every field is a plain JSON value.
 */
import type { Configuration } from './replication/types.js';

/** What every client write carries: who asked, under which idempotency key, and when it was accepted. */
export interface RequestEnvelope {
  /** The client's idempotency key. */
  readonly requestId: string;
  /** `user:<name>` for CreateAccount and Login, `session:<id>` for writes made inside a session. */
  readonly principal: string;
  /** A hash of the request's arguments, to refuse a request id reused for a different request. */
  readonly fingerprint: string;
  /** Unix milliseconds on the accepting replica's clock, never smaller than the previous command's. */
  readonly timestampMs: number;
}

/** The first command of every cluster's log: creates the secrets all replicas share. */
export interface InitializeClusterCommand {
  readonly kind: 'initializeCluster';
  readonly clusterId: string;
  /** Hex key for the HMAC that signs session tokens; replicated so that any replica can check a token. */
  readonly sessionSecretHex: string;
  readonly timestampMs: number;
}

/** A change of the replicated configuration (members and in-sync set), written by the leader. */
export interface ConfigurationCommand {
  readonly kind: 'configuration';
  readonly configuration: Configuration;
  readonly timestampMs: number;
}

export interface CreateAccountCommand extends RequestEnvelope {
  readonly kind: 'createAccount';
  readonly username: string;
  /** A salted scrypt hash in the format of src/api/password-hashing.ts; never the password. */
  readonly passwordHash: string;
}

export interface LoginCommand extends RequestEnvelope {
  readonly kind: 'login';
  readonly username: string;
  readonly sessionId: string;
  readonly expiresAtMs: number;
}

export interface LogoutCommand extends RequestEnvelope {
  readonly kind: 'logout';
  readonly username: string;
  readonly sessionId: string;
}

export interface SendMessageCommand extends RequestEnvelope {
  readonly kind: 'sendMessage';
  readonly messageId: string;
  readonly sender: string;
  readonly recipient: string;
  readonly body: string;
  /** True when the recipient had an open subscription on the accepting replica, so it was pushed. */
  readonly instant: boolean;
}

/** Marks messages delivered: after ReadMessages (`read`) or when a subscriber confirms a push (`acknowledge`). */
export interface MarkDeliveredCommand extends RequestEnvelope {
  readonly kind: 'markDelivered';
  readonly reason: 'read' | 'acknowledge';
  readonly username: string;
  readonly messageIds: readonly string[];
}

export interface DeleteMessagesCommand extends RequestEnvelope {
  readonly kind: 'deleteMessages';
  readonly username: string;
  readonly messageIds: readonly string[];
}

export interface DeleteAccountCommand extends RequestEnvelope {
  readonly kind: 'deleteAccount';
  readonly username: string;
}

/**
 * A login verified a password against a hash made with older scrypt parameters, and re-hashed it with the
 * current ones (src/api/password-hashing.ts). Applies only while the account still holds `previousHash`,
 * so that it never overwrites a newer hash.
 */
export interface UpgradePasswordHashCommand extends RequestEnvelope {
  readonly kind: 'upgradePasswordHash';
  readonly username: string;
  readonly previousHash: string;
  readonly passwordHash: string;
}

/**
 * The RotateSessionKey admin RPC: a new token-signing key, which signs every session from now on. Every older
 * key still live retires at `previousKeysRetireAtMs` (src/api/session-token.ts).
 */
export interface RotateSessionKeyCommand extends RequestEnvelope {
  readonly kind: 'rotateSessionKey';
  /** One more than the newest key's id. */
  readonly keyId: number;
  readonly secretHex: string;
  readonly previousKeysRetireAtMs: number;
}

export type ClientCommand =
  | UpgradePasswordHashCommand
  | RotateSessionKeyCommand
  | CreateAccountCommand
  | LoginCommand
  | LogoutCommand
  | SendMessageCommand
  | MarkDeliveredCommand
  | DeleteMessagesCommand
  | DeleteAccountCommand;

/** Every command the log can hold. */
export type Command = InitializeClusterCommand | ConfigurationCommand | ClientCommand;

/** A message as stored and as returned to clients. */
export interface StoredMessage {
  readonly id: string;
  readonly sequence: number;
  readonly sender: string;
  readonly recipient: string;
  readonly body: string;
  readonly sentAtMs: number;
  readonly delivered: boolean;
  readonly instant: boolean;
}

/** The result of applying each kind of command; it is recorded for idempotent retries. */
export interface CommandResults {
  initializeCluster: Record<string, never>;
  configuration: Record<string, never>;
  createAccount: { readonly username: string };
  /** `keyId`: the key that signs this session's token (absent in results recorded before keys rotated: 0). */
  login: { readonly sessionId: string; readonly expiresAtMs: number; readonly keyId?: number };
  logout: Record<string, never>;
  /**
   * The idempotency record keeps this without `body` (erasure: a deleted message's body must not survive in
   * it); a replay reads the body from the message itself, if it still exists.
   */
  sendMessage: { readonly message: StoredMessage };
  markDelivered: { readonly messageIds: readonly string[]; readonly changedCount: number };
  deleteMessages: { readonly deletedCount: number };
  deleteAccount: Record<string, never>;
  upgradePasswordHash: { readonly upgraded: boolean };
  rotateSessionKey: { readonly keyId: number };
}

export type CommandResult<K extends Command['kind'] = Command['kind']> = CommandResults[K];

/** True for commands that carry a client request envelope. */
export function isClientCommand(command: Command): command is ClientCommand {
  return command.kind !== 'initializeCluster' && command.kind !== 'configuration';
}
