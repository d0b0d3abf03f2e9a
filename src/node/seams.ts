/**
 * The seams of the replica driver: everything it needs from the outside world, declared here by the
 * consumer (as rqlite's http/service.go declares its Store). Production implements them with
 * performance.now and Node's timers, gRPC and a real configuration store; the simulation
 * (test/simulation/) implements them with a simulated clock, network and store, and runs the real driver.
 */
import type { ConfigurationStore } from '../configuration/configuration-store.js';
import type { PeerMessage } from '../core/replication/messages.js';

export type TimerHandle = { readonly timerId: number } | NodeJS.Timeout;

/** Time as the driver sees it. */
export interface Clock {
  /** Monotonic milliseconds since an arbitrary origin; it restarts near 0 with the process. */
  nowMs(): number;
  /** Wall-clock milliseconds since the epoch, used only to stamp commands (never for protocol decisions). */
  wallClockMs(): number;
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Runs `callback` once the current turn's other work is done (setImmediate in production). */
  defer(callback: () => void): void;
}

/** What the driver needs to reach other replicas. The transport layer implements it. */
export interface PeerTransport {
  /** Sends one protocol message; delivery is one-way and may fail silently (the protocol retransmits). */
  send(address: string, message: PeerMessage): void;
  /** Fetches a verified snapshot from the replica at `address` into a temporary file in `directory`. */
  fetchSnapshot(
    address: string,
    request: { requesterOrdinal: number; epoch: number },
    directory: string,
    onProgress: (bytesReceived: number, sizeBytes: number) => void,
  ): Promise<{ tempPath: string; lastIndex: number }>;
}

/**
 * Ends the replica. Called with any error that is not a ChatError thrown while carrying out the core's
 * output, on any path: the process must stop before anything more is sent (fail-stop), then recover from
 * its log at the next start. Production exits the process; the simulation marks the replica crashed.
 */
export type FatalHandler = (error: unknown, context: string) => never;

export interface DriverSeams {
  readonly clock: Clock;
  readonly transport: PeerTransport;
  readonly configurationStore: ConfigurationStore;
  readonly fatal: FatalHandler;
}

/** The production clock: performance.now, Date.now and Node's timers. */
export const systemClock: Clock = Object.freeze({
  nowMs: () => performance.now(),
  wallClockMs: () => Date.now(),
  setTimeout: (callback: () => void, delayMs: number) => setTimeout(callback, delayMs),
  clearTimeout: (handle: TimerHandle) => clearTimeout(handle as NodeJS.Timeout),
  defer: (callback: () => void) => void setImmediate(callback),
});
