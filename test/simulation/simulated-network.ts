/**
 * The PeerTransport seam over a simulated network. Every message is copied through JSON (as gRPC would
 * carry it, so replicas never share objects), then lost, delayed, duplicated or reordered as the current
 * fault settings say, and delivered as an event of the receiving process: held while it is paused, lost if
 * that process dies before it arrives. Links can be cut one way or both ways. Snapshots are real: the
 * source replica's own createSnapshot() writes a file, which is copied into the requester's data directory
 * under the temporary name the driver expects, after a delay that grows with its size.
 */
import { copyFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { PeerMessage } from '../../src/core/replication/messages.js';
import type { PeerTransport } from '../../src/node/seams.js';
import type { SnapshotFile } from '../../src/storage/snapshot.js';
import type { Random } from './random.js';
import type { Scheduler, SimulatedProcess } from './scheduler.js';

/** What the network needs of a replica slot: its current process and how to hand it things. */
export interface NetworkEndpoint {
  readonly ordinal: number;
  readonly peerAddress: string;
  readonly clientAddress: string;
  /** The running (or paused) process, or undefined while the replica is down. */
  currentProcess(): SimulatedProcess | undefined;
  deliver(message: PeerMessage, fromClientAddress: string): void;
  createSnapshot(): Promise<SnapshotFile>;
}

export interface NetworkFaults {
  lossProbability: number;
  duplicateProbability: number;
  minimumDelayMs: number;
  maximumDelayMs: number;
}

export const QUIET_NETWORK: NetworkFaults = Object.freeze({
  lossProbability: 0,
  duplicateProbability: 0,
  minimumDelayMs: 0.5,
  maximumDelayMs: 2,
});

/** How long a snapshot request waits for an answer before it fails, in virtual ms. */
const SNAPSHOT_TIMEOUT_MS = 3000;
/** Virtual transfer time of a snapshot: a fixed cost plus 10 µs per entry it covers (about 100 MB/s here). */
const SNAPSHOT_BASE_MS = 5;
const SNAPSHOT_MS_PER_ENTRY = 0.01;

/** SIMULATION_TRACE=messages adds every delivered message to the trace. */
const TRACE_MESSAGES = process.env.SIMULATION_TRACE === 'messages';

/** A message without its entries' commands, short enough for a trace line. */
function summarize(text: string): string {
  const message = JSON.parse(text) as Record<string, unknown>;
  const entries = message.entries as { index: number; epoch: number }[] | undefined;
  if (entries !== undefined) {
    message.entries = entries.length === 0 ? [] : `${entries.length} entries ${entries[0]!.index}-${entries[entries.length - 1]!.index}`;
  }
  return JSON.stringify(message);
}

export interface NetworkCounters {
  sent: number;
  lost: number;
  duplicated: number;
  snapshotsServed: number;
}

export class SimulatedNetwork {
  faults: NetworkFaults = { ...QUIET_NETWORK };
  readonly counters: NetworkCounters = { sent: 0, lost: 0, duplicated: 0, snapshotsServed: 0 };
  /** Sees every message a live process sends to a known replica, before any fault decides its fate. */
  onSend: ((fromOrdinal: number, toOrdinal: number, message: PeerMessage) => void) | undefined;
  /** Cut links, as `from>to`. */
  private readonly cut = new Set<string>();
  private readonly endpoints = new Map<number, NetworkEndpoint>();
  private readonly ordinalByPeerAddress = new Map<string, number>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly random: Random,
    private readonly trace: (text: string) => void,
  ) {}

  addEndpoint(endpoint: NetworkEndpoint): void {
    this.endpoints.set(endpoint.ordinal, endpoint);
    this.ordinalByPeerAddress.set(endpoint.peerAddress, endpoint.ordinal);
  }

  /** Cuts the link from `from` to `to` (one way). */
  cutLink(from: number, to: number): void {
    this.cut.add(`${from}>${to}`);
  }

  /** Cuts every link between the two groups, in the directions given. */
  partition(groupA: readonly number[], groupB: readonly number[], direction: 'both' | 'a-to-b' | 'b-to-a'): void {
    for (const a of groupA) {
      for (const b of groupB) {
        if (direction !== 'b-to-a') this.cutLink(a, b);
        if (direction !== 'a-to-b') this.cutLink(b, a);
      }
    }
    this.trace(`partition {${groupA.join(',')}} ${direction === 'both' ? '<-/->' : direction === 'a-to-b' ? '-/->' : '<-/-'} {${groupB.join(',')}}`);
  }

  heal(): void {
    if (this.cut.size > 0) this.trace('network healed');
    this.cut.clear();
  }

  linkUp(from: number, to: number): boolean {
    return !this.cut.has(`${from}>${to}`);
  }

  /** The transport one process of replica `fromOrdinal` uses; it goes silent when the process ends. */
  transportFor(fromOrdinal: number, process: SimulatedProcess): PeerTransport {
    return {
      send: (address, message) => this.send(fromOrdinal, process, address, message),
      fetchSnapshot: (address, request, directory, onProgress) =>
        this.fetchSnapshot(fromOrdinal, process, address, directory, onProgress),
    };
  }

  private send(fromOrdinal: number, process: SimulatedProcess, address: string, message: PeerMessage): void {
    // A dead process sends nothing: this is what makes the fatal handler fail-stop.
    if (process.state !== 'running') return;
    const to = this.ordinalByPeerAddress.get(address);
    if (to === undefined) return;
    this.onSend?.(fromOrdinal, to, message);
    const target = this.endpoints.get(to)!;
    const targetProcess = target.currentProcess();
    this.counters.sent += 1;
    if (targetProcess === undefined || !targetProcess.alive || !this.linkUp(fromOrdinal, to)) {
      this.counters.lost += 1;
      return;
    }
    if (this.random.chance(this.faults.lossProbability)) {
      this.counters.lost += 1;
      return;
    }
    const text = JSON.stringify(message);
    const fromClientAddress = this.endpoints.get(fromOrdinal)!.clientAddress;
    const copies = this.random.chance(this.faults.duplicateProbability) ? 2 : 1;
    if (copies === 2) this.counters.duplicated += 1;
    for (let copy = 0; copy < copies; copy += 1) {
      this.scheduler.schedule(
        this.random.between(this.faults.minimumDelayMs, this.faults.maximumDelayMs),
        `deliver ${message.type} ${fromOrdinal}->${to}`,
        () => {
          // A link cut while the message was in flight loses it too.
          if (!this.linkUp(fromOrdinal, to)) return;
          if (TRACE_MESSAGES) this.trace(`deliver ${fromOrdinal}->${to} ${summarize(text)}`);
          target.deliver(JSON.parse(text) as PeerMessage, fromClientAddress);
        },
        targetProcess,
      );
    }
  }

  private fetchSnapshot(
    fromOrdinal: number,
    process: SimulatedProcess,
    address: string,
    directory: string,
    onProgress: (bytesReceived: number, sizeBytes: number) => void,
  ): Promise<{ tempPath: string; lastIndex: number }> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        outcome();
      };
      // The requester gives up after a while, as a gRPC deadline would.
      this.scheduler.schedule(
        SNAPSHOT_TIMEOUT_MS,
        `snapshot timeout ${fromOrdinal}`,
        () => settle(() => reject(new Error(`snapshot fetch from ${address} timed out`))),
        process,
      );
      const sourceOrdinal = this.ordinalByPeerAddress.get(address);
      const source = sourceOrdinal === undefined ? undefined : this.endpoints.get(sourceOrdinal);
      const sourceProcess = source?.currentProcess();
      if (source === undefined || sourceProcess === undefined || !this.linkUp(fromOrdinal, source.ordinal)) return;
      this.scheduler.schedule(
        this.random.between(this.faults.minimumDelayMs, this.faults.maximumDelayMs),
        `snapshot request ${fromOrdinal}->${source.ordinal}`,
        () => {
          // A refusal thrown at once (the source is swapping in a snapshot itself) reaches the requester too.
          const made = Promise.resolve().then(() => source.createSnapshot());
          made.then(
            (snapshot) => {
              const tempPath = join(directory, `snapshot-incoming-${this.random.hex(32)}.sqlite`);
              let sizeBytes: number;
              try {
                copyFileSync(snapshot.path, tempPath);
                sizeBytes = statSync(tempPath).size;
              } finally {
                void snapshot.remove();
              }
              this.counters.snapshotsServed += 1;
              this.trace(`snapshot ${source.ordinal}->${fromOrdinal} (${sizeBytes} bytes, last index ${snapshot.lastIndex})`);
              this.scheduler.schedule(
                // The delay grows with the entries the snapshot covers, not its byte size: random ids make
                // the file's size vary by a page from run to run, and the schedule must not.
                SNAPSHOT_BASE_MS + snapshot.lastIndex * SNAPSHOT_MS_PER_ENTRY +
                  this.random.between(this.faults.minimumDelayMs, this.faults.maximumDelayMs),
                `snapshot arrives ${source.ordinal}->${fromOrdinal}`,
                () => {
                  if (!this.linkUp(source.ordinal, fromOrdinal) || sourceProcess.state === 'dead') {
                    settle(() => reject(new Error(`the snapshot stream from ${address} broke`)));
                    return;
                  }
                  onProgress(sizeBytes, sizeBytes);
                  settle(() => resolve({ tempPath, lastIndex: snapshot.lastIndex }));
                },
                process,
              );
            },
            (error: unknown) => {
              this.scheduler.schedule(
                1,
                `snapshot refused ${source.ordinal}->${fromOrdinal}`,
                () => settle(() => reject(error instanceof Error ? error : new Error(String(error)))),
                process,
              );
            },
          );
        },
        sourceProcess,
      );
    });
  }
}
