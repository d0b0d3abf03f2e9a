/**
 * Session tokens carry the id of the key that signed them:
 *
 *   key 0 (the cluster's first secret):  <sessionId>.<HMAC-SHA256(secret0, sessionId)>
 *   key k >= 1:                          <sessionId>.<k>.<HMAC-SHA256(secretK, "<k>.<sessionId>")>
 *
 * Keys are replicated state (cluster_state in src/storage/chat-state.ts): key 0 is made by the
 * initializeCluster command, and each rotateSessionKey command (the RotateSessionKey admin RPC) adds the
 * next and gives every older key a retirement time: the expiry of the longest session it can have signed,
 * or now when the operator revokes them. A token is accepted while its key has not retired, and its
 * session still exists and has not expired. Any replica can derive and check tokens, so the token itself is
 * never stored (the database holds only session ids) and a Login retried with the same request id returns
 * the same token.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SessionKey } from '../core/session-key.js';

export type { SessionKey };

const SESSION_ID_PATTERN = /^[0-9a-f]{32}$/;
const KEY_ID_PATTERN = /^[1-9][0-9]{0,15}$/;
const TOKEN_MAX_LENGTH = 160;



/** Derives the token a client presents for a session signed with `key` (a bare secret is key 0). */
export function deriveSessionToken(key: Pick<SessionKey, 'id' | 'secretHex'> | string, sessionId: string): string {
  if (typeof key === 'string') key = { id: 0, secretHex: key };
  if (key.id === 0) return `${sessionId}.${sign(key.secretHex, sessionId)}`;
  return `${sessionId}.${key.id}.${sign(key.secretHex, `${key.id}.${sessionId}`)}`;
}

/**
 * Returns the session id of a well-formed token signed by a key that has not retired at `nowMs`, or
 * undefined. `keyById` looks keys up in the replicated state.
 */
export function verifySessionToken(
  keyById: (id: number) => SessionKey | undefined,
  token: string,
  nowMs: number,
): string | undefined {
  if (token.length > TOKEN_MAX_LENGTH) return undefined;
  const parts = token.split('.');
  let keyId: number;
  let signed: string;
  if (parts.length === 2) {
    keyId = 0;
    signed = parts[0]!;
  } else if (parts.length === 3 && KEY_ID_PATTERN.test(parts[1]!)) {
    keyId = Number(parts[1]);
    signed = `${keyId}.${parts[0]!}`;
  } else {
    return undefined;
  }
  const sessionId = parts[0]!;
  if (!SESSION_ID_PATTERN.test(sessionId)) return undefined;
  const key = keyById(keyId);
  if (key === undefined) return undefined;
  if (key.retiresAtMs !== null && key.retiresAtMs <= nowMs) return undefined;
  const presented = Buffer.from(parts[parts.length - 1]!, 'utf8');
  const expected = Buffer.from(sign(key.secretHex, signed), 'utf8');
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return undefined;
  return sessionId;
}

function sign(secretHex: string, text: string): string {
  return createHmac('sha256', Buffer.from(secretHex, 'hex')).update(text).digest('base64url');
}
