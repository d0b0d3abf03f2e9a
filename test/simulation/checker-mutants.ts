/**
 * Deliberately broken code under test, for checking the checker (SIMULATION_MUTANT=…, never in CI): a
 * check that cannot fail proves nothing, so each mutant breaks one promise and a run must report it.
 */
/**
 * Applies one mutant: `early-ack` acknowledges writes before they are committed, `no-read-barrier` serves
 * reads at once, `no-dedup` makes the driver and the service forget every request id.
 */
export async function applyMutant(name: string): Promise<void> {
  const { ReplicaNode } = await import('../../src/node/replica-node.js');
  const { ChatState } = await import('../../src/storage/chat-state.js');
  const node = ReplicaNode.prototype as unknown as Record<string, unknown>;
  if (name === 'early-ack') node.awaitCommitted = () => Promise.resolve();
  else if (name === 'no-read-barrier') node.readBarrier = () => Promise.resolve();
  else if (name === 'no-dedup') {
    const chat = ChatState.prototype as unknown as Record<string, (this: unknown, ...args: unknown[]) => unknown>;
    const request = chat.request!;
    // The driver and the service forget request ids; the checker (reading through checkerRead) does not.
    chat.request = function forgetfulRequest(this: unknown, ...args: unknown[]) {
      return checkerReading ? request.apply(this, args) : undefined;
    };
  } else throw new Error(`unknown mutant ${name}`);
}

let checkerReading = false;

/** Runs one of the checker's reads of a replica's tables (so that the no-dedup mutant does not blind it). */
export function checkerRead<T>(read: () => T): T {
  checkerReading = true;
  try {
    return read();
  } finally {
    checkerReading = false;
  }
}
