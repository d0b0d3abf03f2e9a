/**
 * Checks of client input against the limits in limits.ts. Every function either returns the clean value or
 * throws InvalidArgumentError with a message that names the field, so a client can see what to change.
 */
import { InvalidArgumentError } from './errors.js';
import {
  ACCOUNT_PATTERN_MAX_LENGTH,
  type ChatLimits,
  MESSAGE_ID_PATTERN,
  MESSAGE_IDS_PER_REQUEST_MAX,
  PAGE_TOKEN_MAX_LENGTH,
  PASSWORD_MAX_LENGTH,
  PASSWORD_MIN_LENGTH,
  REQUEST_ID_PATTERN,
  USERNAME_MAX_LENGTH,
  USERNAME_PATTERN,
} from './limits.js';

function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new InvalidArgumentError(`${field} must be a string`);
  return value;
}

export function validateUsername(value: unknown, field = 'username'): string {
  const username = requireString(value, field);
  if (username.length === 0) throw new InvalidArgumentError(`${field} is required`);
  if (username.length > USERNAME_MAX_LENGTH) {
    throw new InvalidArgumentError(`${field} is longer than ${USERNAME_MAX_LENGTH} characters`);
  }
  if (!USERNAME_PATTERN.test(username)) {
    throw new InvalidArgumentError(
      `${field} may hold only letters, digits, '_', '.' and '-', and must start with a letter or digit`,
    );
  }
  return username;
}

/**
 * The form of a username that decides uniqueness: NFC, then lower case. Two names with the same key are the
 * same account ("Dave" and "dave"); the name is still stored and shown as it was typed. Names are ASCII
 * today (USERNAME_PATTERN), where this is exactly Unicode case folding; if the pattern ever admits other
 * letters, full case folding (CaseFolding.txt: 'ß' to 'ss', final sigma) and NFKC would have to replace it.
 */
export function usernameKey(username: string): string {
  return username.normalize('NFC').toLowerCase();
}

export function validatePassword(value: unknown): string {
  const password = requireString(value, 'password');
  if (password.length < PASSWORD_MIN_LENGTH) {
    throw new InvalidArgumentError(`password must be at least ${PASSWORD_MIN_LENGTH} characters`);
  }
  if (password.length > PASSWORD_MAX_LENGTH) {
    throw new InvalidArgumentError(`password is longer than ${PASSWORD_MAX_LENGTH} characters`);
  }
  return password;
}

/** A password given to log in or confirm: only its length is bounded, so that scrypt's input stays small. */
export function validatePasswordToCheck(value: unknown): string {
  const password = requireString(value, 'password');
  if (password.length === 0) throw new InvalidArgumentError('password is required');
  if (password.length > PASSWORD_MAX_LENGTH) {
    throw new InvalidArgumentError(`password is longer than ${PASSWORD_MAX_LENGTH} characters`);
  }
  return password;
}

export function validateRequestId(value: unknown): string {
  const requestId = requireString(value, 'request_id');
  if (!REQUEST_ID_PATTERN.test(requestId)) {
    throw new InvalidArgumentError('request_id must be 1 to 64 characters of letters, digits, _ and - (a UUID)');
  }
  return requestId;
}

export function validateMessageBody(value: unknown, limits: ChatLimits): string {
  const body = requireString(value, 'body');
  if (body.length === 0) throw new InvalidArgumentError('body is empty');
  const sizeBytes = Buffer.byteLength(body, 'utf8');
  if (sizeBytes > limits.messageMaxBytes) {
    throw new InvalidArgumentError(`body is ${sizeBytes} bytes, more than the limit of ${limits.messageMaxBytes}`);
  }
  return body;
}

/** A wildcard pattern: username characters plus `*` (any run) and `?` (one character); empty means `*`. */
export function validateAccountPattern(value: unknown): string {
  const pattern = requireString(value ?? '', 'pattern');
  if (pattern.length === 0) return '*';
  if (pattern.length > ACCOUNT_PATTERN_MAX_LENGTH) {
    throw new InvalidArgumentError(`pattern is longer than ${ACCOUNT_PATTERN_MAX_LENGTH} characters`);
  }
  if (!/^[A-Za-z0-9_.*?-]+$/.test(pattern)) {
    throw new InvalidArgumentError("pattern may hold only username characters, '*' and '?'");
  }
  return pattern;
}

/** 0 (or absent) means the default; above the maximum is an error rather than a silent cap. */
export function validatePageSize(value: unknown, limits: ChatLimits, field = 'page_size'): number {
  const size = value ?? 0;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 0) {
    throw new InvalidArgumentError(`${field} must be a non-negative integer`);
  }
  if (size === 0) return limits.pageSizeDefault;
  if (size > limits.pageSizeMax) {
    throw new InvalidArgumentError(`${field} ${size} is more than the maximum of ${limits.pageSizeMax}`);
  }
  return size;
}

export function validateMessageIds(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) throw new InvalidArgumentError('message_ids is empty');
  if (value.length > MESSAGE_IDS_PER_REQUEST_MAX) {
    throw new InvalidArgumentError(`message_ids holds more than ${MESSAGE_IDS_PER_REQUEST_MAX} ids`);
  }
  const unique = new Set<string>();
  for (const id of value) {
    if (typeof id !== 'string' || !MESSAGE_ID_PATTERN.test(id)) {
      throw new InvalidArgumentError(`message id ${JSON.stringify(String(id)).slice(0, 80)} is not a UUID`);
    }
    unique.add(id);
  }
  return [...unique];
}

/**
 * Page tokens are opaque to clients: base64url of a JSON cursor. A token that does not decode is an
 * INVALID_ARGUMENT, not a crash.
 */
export function encodePageToken(cursor: string | number): string {
  return Buffer.from(JSON.stringify({ after: cursor }), 'utf8').toString('base64url');
}

export function decodePageToken<T extends string | number>(
  value: unknown,
  expected: 'string' | 'number',
): T | undefined {
  const token = requireString(value ?? '', 'page_token');
  if (token.length === 0) return undefined;
  if (token.length > PAGE_TOKEN_MAX_LENGTH) throw new InvalidArgumentError('page_token is too long');
  try {
    const decoded: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (typeof decoded === 'object' && decoded !== null && 'after' in decoded) {
      const after = (decoded as { after: unknown }).after;
      if (typeof after === expected) return after as T;
    }
  } catch {
    // Fall through to the error below: a token that is not our JSON is malformed.
  }
  throw new InvalidArgumentError('page_token is malformed; pass the next_page_token of the previous response');
}
