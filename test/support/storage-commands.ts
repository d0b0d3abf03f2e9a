/**
 * What the storage tests build commands from: request envelopes with fresh ids and timestamps that never
 * go back, and message ids in the UUID shape the schema wants.
 */

/** One test file's sequence of envelopes. */
export class EnvelopeSequence {
  /** The timestamp of the newest envelope; a test may move it on (to let requests expire, say). */
  timestampMs = 1_700_000_000_000;
  /** How many envelopes were made. */
  count = 0;

  envelope(principal: string) {
    this.count += 1;
    this.timestampMs += 1;
    return { requestId: `request-${this.count}`, principal, fingerprint: `f${this.count}`, timestampMs: this.timestampMs };
  }
}

/** A message id in UUID form whose last digits are `n`. */
export function uuid(n: number): string {
  return `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
}
