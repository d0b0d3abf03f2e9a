/**
 * Session tokens are `<sessionId>.<HMAC-SHA256(clusterSessionSecret, sessionId)>`. Any replica can derive
 * and check them from the replicated secret, so the token itself is never stored (the database holds only
 * session ids) and a Login retried with the same request id returns the same token.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

const SESSION_ID_PATTERN = /^[0-9a-f]{32}$/;

/** Derives the token a client presents for a session. */
export function deriveSessionToken(sessionSecretHex: string, sessionId: string): string {
  return `${sessionId}.${sign(sessionSecretHex, sessionId)}`;
}

/** Returns the session id of a well-formed, correctly signed token, or undefined. */
export function verifySessionToken(sessionSecretHex: string, token: string): string | undefined {
  if (token.length > 128) return undefined;
  const separator = token.indexOf('.');
  if (separator < 0) return undefined;
  const sessionId = token.slice(0, separator);
  if (!SESSION_ID_PATTERN.test(sessionId)) return undefined;
  const presented = Buffer.from(token.slice(separator + 1), 'utf8');
  const expected = Buffer.from(sign(sessionSecretHex, sessionId), 'utf8');
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return undefined;
  return sessionId;
}

function sign(sessionSecretHex: string, sessionId: string): string {
  return createHmac('sha256', Buffer.from(sessionSecretHex, 'hex')).update(sessionId).digest('base64url');
}
