/**
 * The shape of a session-signing key, shared by the state machine (which stores keys) and the service
 * (which signs and checks tokens with them). Pure data; the HMAC lives in src/api/session-token.ts.
 */
/** One signing key. `retiresAtMs` is null for the current key and for older keys not retired yet. */
export interface SessionKey {
  readonly id: number;
  readonly secretHex: string;
  readonly retiresAtMs: number | null;
}
