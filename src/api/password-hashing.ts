/**
 * Password hashing with salted scrypt. The hash is computed once, by the replica that accepts the write, and
 * travels in the command, so every replica stores the same string. Format:
 * `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`, so that parameters can be raised without invalidating
 * older hashes: a login that verifies against an older hash logs an upgradePasswordHash command with a new
 * one (chat-service.ts), so the next login uses the current parameters on every replica.
 *
 * Parameters follow OWASP's Password Storage Cheat Sheet: N = 2^17, r = 8, p = 1, which needs 128 MiB and
 * about half a second of one core here. Because of that memory, at most PASSWORD_HASHING_CONCURRENCY
 * computations run at once per replica (rate-limiter.ts), with a short queue beyond which callers are
 * refused with RESOURCE_EXHAUSTED.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { ConcurrencyLimit } from './rate-limiter.js';

/** OWASP's parameters, the default. */
export const DEFAULT_SCRYPT_COST_LOG2 = 17;
/** The lowest cost a server may be configured with (`--password-hash-cost-log2`, for test clusters). */
export const MIN_SCRYPT_COST_LOG2 = 14;

/**
 * The parameters new hashes get. Only the cost can be lowered, by the server's one config at start
 * (setPasswordHashCost): test clusters that create hundreds of accounts on a shared machine use 2^14,
 * production keeps OWASP's 2^17. A hash made with other parameters is upgraded at the next login.
 */
export let SCRYPT_PARAMETERS: Readonly<Parameters> = Object.freeze({ cost: 2 ** DEFAULT_SCRYPT_COST_LOG2, blockSize: 8, parallelism: 1 });

/** Sets the cost of new hashes; called once by the server at start, from its validated config. */
export function setPasswordHashCost(costLog2: number): void {
  if (!Number.isInteger(costLog2) || costLog2 < MIN_SCRYPT_COST_LOG2 || costLog2 > DEFAULT_SCRYPT_COST_LOG2) {
    throw new RangeError(`the scrypt cost must be 2^${MIN_SCRYPT_COST_LOG2} to 2^${DEFAULT_SCRYPT_COST_LOG2}`);
  }
  SCRYPT_PARAMETERS = Object.freeze({ ...SCRYPT_PARAMETERS, cost: 2 ** costLog2 });
  DECOY_PASSWORD_HASH = decoyHash();
}
const KEY_LENGTH_BYTES = 32;
const SALT_LENGTH_BYTES = 16;
/**
 * scrypt needs about 128 * N * r bytes (128 MiB here); maxmem allows that with a margin and refuses
 * anything larger, so that a stored hash with absurd parameters cannot make a login allocate gigabytes.
 */
const MAX_MEMORY_BYTES = 2 * 128 * 2 ** DEFAULT_SCRYPT_COST_LOG2 * 8;
/** Largest parameters a stored hash may name; anything else is refused as unreadable. */
const MAX_STORED_COST = 2 ** DEFAULT_SCRYPT_COST_LOG2;
const MAX_STORED_BLOCK_SIZE = 16;
const MAX_STORED_PARALLELISM = 16;

/** scrypt computations at once per replica (each holds 128 MiB), and how many more may wait. */
export const PASSWORD_HASHING_CONCURRENCY = 2;
export const PASSWORD_HASHING_QUEUE = 16;
const hashingSlots = new ConcurrencyLimit(PASSWORD_HASHING_CONCURRENCY, PASSWORD_HASHING_QUEUE, 'password checks in progress');

interface Parameters {
  readonly cost: number;
  readonly blockSize: number;
  readonly parallelism: number;
}

function derive(password: string, salt: Buffer, parameters: Parameters): Promise<Buffer> {
  return hashingSlots.run(
    () =>
      new Promise<Buffer>((resolve, reject) => {
        scrypt(
          password.normalize('NFC'),
          salt,
          KEY_LENGTH_BYTES,
          { N: parameters.cost, r: parameters.blockSize, p: parameters.parallelism, maxmem: MAX_MEMORY_BYTES },
          (error, key) => (error ? reject(error) : resolve(key)),
        );
      }),
  );
}

/** Hashes a password with a fresh random salt and the current parameters. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_LENGTH_BYTES);
  const key = await derive(password, salt, SCRYPT_PARAMETERS);
  const { cost, blockSize, parallelism } = SCRYPT_PARAMETERS;
  return ['scrypt', cost, blockSize, parallelism, salt.toString('base64'), key.toString('base64')].join('$');
}

function parse(encodedHash: string): (Parameters & { salt: Buffer; expected: Buffer }) | undefined {
  const parts = encodedHash.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [cost, blockSize, parallelism] = parts.slice(1, 4).map(Number) as [number, number, number];
  const powerOfTwo = Number.isSafeInteger(cost) && cost > 1 && (cost & (cost - 1)) === 0;
  if (!powerOfTwo || cost > MAX_STORED_COST) return undefined;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > MAX_STORED_BLOCK_SIZE) return undefined;
  if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > MAX_STORED_PARALLELISM) return undefined;
  return { cost, blockSize, parallelism, salt: Buffer.from(parts[4]!, 'base64'), expected: Buffer.from(parts[5]!, 'base64') };
}

/** True when `password` matches `encodedHash`; false for a wrong password or an unreadable hash. */
export async function verifyPassword(password: string, encodedHash: string): Promise<boolean> {
  const parsed = parse(encodedHash);
  if (parsed === undefined) return false;
  const key = await derive(password, parsed.salt, parsed);
  return key.length === parsed.expected.length && timingSafeEqual(key, parsed.expected);
}

/** True when a (verified) hash was made with parameters other than the current ones. */
export function needsRehash(encodedHash: string): boolean {
  const parsed = parse(encodedHash);
  if (parsed === undefined) return false;
  return (
    parsed.cost !== SCRYPT_PARAMETERS.cost ||
    parsed.blockSize !== SCRYPT_PARAMETERS.blockSize ||
    parsed.parallelism !== SCRYPT_PARAMETERS.parallelism
  );
}

/**
 * A hash of a password nobody knows, with the current parameters, verified when the username does not
 * exist, so that an unknown user takes as long to refuse as a wrong password.
 */
function decoyHash(): string {
  const { cost, blockSize, parallelism } = SCRYPT_PARAMETERS;
  return `scrypt$${cost}$${blockSize}$${parallelism}$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=`;
}
export let DECOY_PASSWORD_HASH = decoyHash();
