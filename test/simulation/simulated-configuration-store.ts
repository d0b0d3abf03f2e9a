/**
 * The configuration store as the replicas of a simulation see it: one real MemoryConfigurationStore (the
 * contract-tested backend) behind a simulated link per replica process. A request travels to the store
 * (delay), takes effect there when it arrives, and its answer travels back as an event of the calling
 * process: held while that process is paused, so a replica can win a swap and not learn it for seconds,
 * and lost if the process dies. The faults are the ones a real store shows: slow answers, lost answers
 * (the swap happened, the caller times out and must read to find out), and outages, either refusing at
 * once or silent until the caller's deadline. Every successful swap is recorded for the checker.
 */
import type { CompareAndSwapOutcome, ConfigurationStore, VersionedRecord } from '../../src/configuration/configuration-store.js';
import { ConfigurationStoreError } from '../../src/configuration/configuration-store-error.js';
import { MemoryConfigurationStore } from '../../src/configuration/memory-configuration-store.js';
import type { ClusterRecord } from '../../src/core/replication/cluster-record.js';
import type { Random } from './random.js';
import type { Scheduler, SimulatedProcess } from './scheduler.js';

export interface StoreFaults {
  minimumDelayMs: number;
  maximumDelayMs: number;
  /** The request takes effect but the answer never arrives. */
  answerLossProbability: number;
  /** While set, requests are refused (`refuse`) or vanish until the caller's deadline (`silent`). */
  outage: 'none' | 'refuse' | 'silent';
  /** Replicas cut off from the store (a partition between them and it). */
  readonly unreachableFrom: Set<number>;
}

/** A successful swap as the store saw it. */
export interface RecordedSwap {
  readonly atMs: number;
  readonly byOrdinal: number;
  readonly record: ClusterRecord;
  readonly version: string;
}

/** The deadline a replica's store client gives every call, as the real backends do (virtual ms). */
export const STORE_CALL_TIMEOUT_MS = 1000;

export class SimulatedConfigurationStore {
  readonly truth = new MemoryConfigurationStore({ description: 'simulated memory store' });
  readonly faults: StoreFaults = {
    minimumDelayMs: 0.5,
    maximumDelayMs: 3,
    answerLossProbability: 0,
    outage: 'none',
    unreachableFrom: new Set(),
  };
  readonly swaps: RecordedSwap[] = [];
  /** Called the moment a swap takes effect, before its answer travels back: scenarios pause the caller here. */
  onSwapApplied: ((byOrdinal: number, outcome: CompareAndSwapOutcome) => void) | undefined;
  /**
   * Called when a replica issues a swap, before the request leaves it. Answering `hold` makes the request
   * leave only while its process runs: a scenario pauses the replica here, between its decision and the
   * request, so the request reaches the store only after it resumes.
   */
  onSwapIssued: ((byOrdinal: number, record: ClusterRecord, expectedVersion: string | null) => 'hold' | void) | undefined;
  counters = { reads: 0, swapsTried: 0, swapsWon: 0, answersLost: 0, refused: 0 };

  constructor(
    private readonly scheduler: Scheduler,
    private readonly random: Random,
    private readonly trace: (text: string) => void,
  ) {}

  /** What the store holds now, for checks (not a replica's view). */
  peek(): VersionedRecord | null {
    return this.truth.peek();
  }

  quiet(): void {
    this.faults.minimumDelayMs = 0.5;
    this.faults.maximumDelayMs = 3;
    this.faults.answerLossProbability = 0;
    this.faults.outage = 'none';
    this.faults.unreachableFrom.clear();
    this.onSwapApplied = undefined;
    this.onSwapIssued = undefined;
  }

  private reachable(ordinal: number): boolean {
    return this.faults.outage === 'none' && !this.faults.unreachableFrom.has(ordinal);
  }

  /** The store client of one replica process. */
  clientFor(ordinal: number, process: SimulatedProcess): ConfigurationStore {
    return {
      description: 'simulated memory store',
      read: () => this.call(ordinal, process, 'read', false, () => this.truth.read()),
      compareAndSwap: (expectedVersion, record) =>
        this.call(ordinal, process, 'compareAndSwap', this.onSwapIssued?.(ordinal, record, expectedVersion) === 'hold', async () => {
          this.counters.swapsTried += 1;
          const outcome = await this.truth.compareAndSwap(expectedVersion, record);
          if (outcome.swapped) {
            this.counters.swapsWon += 1;
            this.swaps.push({ atMs: this.scheduler.nowMs, byOrdinal: ordinal, record: outcome.current.record, version: outcome.current.version });
            const swapped = outcome.current.record;
            this.trace(
              `store: replica ${ordinal} swapped to version ${outcome.current.version}: epoch ${swapped.epoch} leader ${swapped.leader} in-sync {${swapped.inSync.join(',')}}`,
            );
          }
          this.onSwapApplied?.(ordinal, outcome);
          return outcome;
        }),
      close: async () => undefined,
    };
  }

  private call<T>(
    ordinal: number,
    process: SimulatedProcess,
    what: string,
    holdWhilePaused: boolean,
    operation: () => Promise<T>,
  ): Promise<T> {
    if (what === 'read') this.counters.reads += 1;
    this.trace(`store: replica ${ordinal} asks ${what}`);
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        outcome();
      };
      this.scheduler.schedule(
        STORE_CALL_TIMEOUT_MS,
        `store ${what} deadline ${ordinal}`,
        () =>
          settle(() =>
            reject(new ConfigurationStoreError('TIMEOUT', `the simulated store did not answer ${what} within ${STORE_CALL_TIMEOUT_MS} ms`)),
          ),
        process,
      );
      const answer = (outcome: () => void): void => {
        this.scheduler.schedule(
          this.random.between(this.faults.minimumDelayMs, this.faults.maximumDelayMs),
          `store ${what} answer ${ordinal}`,
          () => settle(outcome),
          process,
        );
      };
      if (!this.reachable(ordinal)) {
        if (this.faults.outage === 'refuse') {
          this.counters.refused += 1;
          answer(() => reject(new ConfigurationStoreError('UNAVAILABLE', 'the simulated store refused the connection')));
        }
        return;
      }
      // The request is in flight: it takes effect when it arrives, whatever happens to the caller meanwhile.
      this.scheduler.schedule(
        this.random.between(this.faults.minimumDelayMs, this.faults.maximumDelayMs),
        `store ${what} arrives ${ordinal}`,
        () => {
          if (!this.reachable(ordinal)) return;
          operation().then(
            (value) => {
              if (this.random.chance(this.faults.answerLossProbability)) {
                this.counters.answersLost += 1;
                return;
              }
              answer(() => resolve(value));
            },
            (error: unknown) => answer(() => reject(error)),
          );
        },
        holdWhilePaused ? process : undefined,
      );
    });
  }
}
