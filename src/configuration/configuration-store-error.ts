/**
 * The ways a configuration store call can fail. Callers treat every one the same way (the swap may or may
 * not have happened; read again later), but the code tells an operator reading the logs what went wrong.
 */

/** The stable codes of configuration store failures. */
export type ConfigurationStoreErrorCode =
  /** The call did not finish within the store's timeout. */
  | 'TIMEOUT'
  /** The store answered with an error, or could not be reached at all. */
  | 'UNAVAILABLE'
  /** The store holds something that is not a valid cluster record, or a caller tried to write one. */
  | 'INVALID_RECORD'
  /** The store was closed. */
  | 'CLOSED';

/** A failed read or compare-and-swap; `description` names the store (never its credentials). */
export class ConfigurationStoreError extends Error {
  constructor(
    readonly code: ConfigurationStoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Settles like `promise`, or rejects with a TIMEOUT error after `timeoutMs`, whichever comes first. The
 * backends also hand the deadline to their client library, so that the request itself is cancelled; this
 * outer timer is what guarantees the caller an answer in time even when a library waits somewhere else
 * (a connection being dialled, a token being read).
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new ConfigurationStoreError('TIMEOUT', `${what} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
