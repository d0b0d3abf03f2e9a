/**
 * Assertions that stay on in production. A broken invariant means this replica's state can no longer be
 * trusted, so it crashes; on restart it recovers from its durable log.
 */
export class AssertionFailure extends Error {
  override name = 'AssertionFailure';
}

/** Throws AssertionFailure when `condition` is false. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailure(message);
}
