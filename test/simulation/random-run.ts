/**
 * One seeded random run: the harness's cluster and workload under a schedule of faults drawn from the
 * seed, then the end-of-run checks. The faults, each drawn at random times for a random while:
 * - crashes at event boundaries, right after a durable write (epoch, entries, snapshot) and on a failed
 *   write (the driver must end itself), with restarts after a while or only at the end;
 * - pauses of any replica, and pauses that strike the moment the replica's compare-and-swap takes effect,
 *   so that it learns the outcome only when it resumes;
 * - loss, duplication and delay (so reordering) of messages; partitions one way and both ways, around the
 *   leader and around one other replica;
 * - a slow store, lost store answers, a store outage (refusing or silent), a replica cut off from the store;
 * - clocks that restart near 0 with every run, at a rate within 1 ± CLOCK_DRIFT_BOUND, and wall clocks
 *   that step by up to an hour across a restart.
 */
import { Harness, type RunSummary } from './harness.js';
import type { Random } from './random.js';
import type { ScheduledEvent } from './scheduler.js';
import type { StorageFault } from './simulated-cluster.js';

export interface RandomRunOptions {
  readonly seed: number;
  /** How long faults are injected, in virtual ms. */
  readonly faultDurationMs?: number;
}

const STORAGE_KINDS = ['epoch', 'entries', 'snapshot', 'any'] as const;

export async function runRandomSimulation(options: RandomRunOptions): Promise<RunSummary> {
  // A short log retention makes followers that fall behind need a snapshot, and exercises truncation.
  const retention = [100_000, 100_000, 300, 80][options.seed % 4]!;
  const harness = new Harness({ seed: options.seed, name: `seed-${options.seed}`, logRetentionEntries: retention });
  try {
    await harness.bootstrap();
    harness.workload.start();
    const faults = new FaultInjector(harness, harness.random.fork());
    await faults.run(options.faultDurationMs ?? 8000);
    harness.assertNoViolations();
    harness.healFaults();
    await harness.checkWritesAgain();
    harness.assertNoViolations();
    await harness.checkReadmission();
    await harness.cluster.runFor(500);
    await harness.checkConverged();
    return harness.summary();
  } finally {
    await harness.dispose();
  }
}

class FaultInjector {
  /** Replicas crashed with "restart only at the end": they stay down for invariant 6. */
  private readonly leftDown = new Set<number>();
  private readonly pending: ScheduledEvent[] = [];

  constructor(
    private readonly harness: Harness,
    private readonly random: Random,
  ) {}

  private get cluster() {
    return this.harness.cluster;
  }

  async run(durationMs: number): Promise<void> {
    const endAtMs = this.cluster.nowMs + durationMs;
    this.drawNetworkQuality();
    while (this.cluster.nowMs < endAtMs) {
      await this.cluster.runFor(this.random.between(100, 600));
      if (this.cluster.violationList.length > 0) break;
      this.injectOne();
    }
    this.cancelPending();
  }

  /** Schedules `action` after `delayMs`, unless the fault phase is over by then (healing undoes it anyway). */
  private later(delayMs: number, label: string, action: () => void): void {
    this.pending.push(this.cluster.scheduler.schedule(delayMs, label, action));
  }

  /**
   * Cancels every undo and restart still pending: healing ends the faults at once, and the replicas that
   * are down at that moment stay down until invariant 6 has been checked.
   */
  private cancelPending(): void {
    for (const event of this.pending.splice(0)) event.cancelled = true;
    this.cluster.store.onSwapApplied = undefined;
    this.cluster.store.onSwapIssued = undefined;
  }

  private injectOne(): void {
    const cluster = this.cluster;
    const ordinals = cluster.replicas.map((slot) => slot.ordinal);
    const leader = cluster.recordedLeader() ?? 0;
    const choice = this.random.next();
    if (choice < 0.14) {
      // A crash; most come back after a while, some only at the end (left down for invariant 6).
      const target = this.random.chance(0.5) ? leader : this.random.pick(ordinals);
      if (!cluster.replica(target).up) return;
      cluster.crash(target, 'crash (SIGKILL)');
      if (this.random.chance(0.25)) {
        this.leftDown.add(target);
        return;
      }
      const stepMs = this.random.chance(0.2) ? this.random.pick([-3_600_000, -60_000, 60_000]) : 0;
      this.later(this.random.between(20, 2500), `restart ${target}`, () => {
        if (this.leftDown.has(target)) return;
        cluster.replica(target).wallClockStepMs += stepMs;
        cluster.start(target);
      });
    } else if (choice < 0.28) {
      const target = this.random.chance(0.5) ? leader : this.random.pick(ordinals);
      cluster.pause(target);
      this.later(this.random.between(20, 2500), `resume ${target}`, () => cluster.resume(target));
    } else if (choice < 0.42) {
      const around = this.random.chance(0.6) ? leader : this.random.pick(ordinals);
      const rest = ordinals.filter((ordinal) => ordinal !== around);
      const direction = this.random.pick(['both', 'both', 'a-to-b', 'b-to-a'] as const);
      cluster.network.partition([around], rest, direction);
      this.later(this.random.between(50, 3000), 'heal partition', () => cluster.network.heal());
    } else if (choice < 0.52) {
      const store = cluster.store;
      if (this.random.chance(0.5)) {
        store.faults.outage = this.random.chance(0.5) ? 'refuse' : 'silent';
        cluster.trace(`store outage (${store.faults.outage})`);
      } else {
        const cut = this.random.pick(ordinals);
        store.faults.unreachableFrom.add(cut);
        cluster.trace(`replica ${cut} cut off from the store`);
      }
      this.later(this.random.between(100, 3000), 'store back', () => {
        store.faults.outage = 'none';
        store.faults.unreachableFrom.clear();
        cluster.trace('store reachable again');
      });
    } else if (choice < 0.6) {
      const store = cluster.store;
      store.faults.maximumDelayMs = this.random.between(20, 700);
      store.faults.minimumDelayMs = store.faults.maximumDelayMs / 4;
      store.faults.answerLossProbability = this.random.chance(0.5) ? this.random.between(0.05, 0.4) : 0;
      cluster.trace(`store slow (up to ${store.faults.maximumDelayMs.toFixed(0)} ms, ${(store.faults.answerLossProbability * 100).toFixed(0)} % answers lost)`);
      this.later(this.random.between(200, 3000), 'store fast again', () => {
        store.faults.minimumDelayMs = 0.5;
        store.faults.maximumDelayMs = 3;
        store.faults.answerLossProbability = 0;
      });
    } else if (choice < 0.72) {
      const target = this.random.pick(ordinals);
      const fault: StorageFault = {
        effect: this.random.chance(0.5) ? 'fail' : 'crash-after',
        kind: this.random.pick(STORAGE_KINDS),
        skip: this.random.integer(0, 15),
      };
      cluster.replica(target).storageFault = fault;
      cluster.trace(`replica ${target}: armed ${fault.effect} on a ${fault.kind} write after ${fault.skip} more`);
      // A failed write ends the replica; bring it back a while later, with the disk working again.
      this.restartWhenDead(target);
    } else if (choice < 0.82) {
      // The next swap of some replica is decided and the replica is paused: either the swap takes effect
      // and the replica hears the answer only when it resumes, or the request itself leaves only then.
      const target = this.random.pick(ordinals);
      const pauseMs = this.random.between(50, 2500);
      const store = cluster.store;
      if (this.random.chance(0.5)) {
        cluster.trace(`replica ${target}: will pause once its next compare-and-swap takes effect, for ${pauseMs.toFixed(0)} ms`);
        store.onSwapApplied = (byOrdinal) => {
          if (byOrdinal !== target) return;
          store.onSwapApplied = undefined;
          cluster.pause(target);
          this.later(pauseMs, `resume ${target} after its swap`, () => cluster.resume(target));
        };
      } else {
        cluster.trace(`replica ${target}: will pause before its next compare-and-swap leaves, for ${pauseMs.toFixed(0)} ms`);
        store.onSwapIssued = (byOrdinal) => {
          if (byOrdinal !== target) return;
          store.onSwapIssued = undefined;
          cluster.pause(target);
          this.later(pauseMs, `resume ${target} before its swap leaves`, () => cluster.resume(target));
          return 'hold';
        };
      }
    } else {
      this.drawNetworkQuality();
    }
  }

  private restartWhenDead(ordinal: number): void {
    const check = (): void => {
      const slot = this.cluster.replica(ordinal);
      if (slot.up) {
        this.later(100, `watch ${ordinal}`, check);
        return;
      }
      if (this.leftDown.has(ordinal)) return;
      this.later(this.random.between(50, 1500), `restart ${ordinal} after its disk fault`, () => this.cluster.start(ordinal));
    };
    this.later(100, `watch ${ordinal}`, check);
  }

  private drawNetworkQuality(): void {
    const faults = this.cluster.network.faults;
    faults.lossProbability = this.random.chance(0.3) ? 0 : this.random.between(0, 0.12);
    faults.duplicateProbability = this.random.between(0, 0.05);
    faults.minimumDelayMs = this.random.between(0.2, 2);
    faults.maximumDelayMs = faults.minimumDelayMs + this.random.between(0, 40);
    this.cluster.trace(
      `network: ${(faults.lossProbability * 100).toFixed(1)} % loss, ${(faults.duplicateProbability * 100).toFixed(1)} % duplicates, ${faults.minimumDelayMs.toFixed(1)}-${faults.maximumDelayMs.toFixed(1)} ms`,
    );
  }
}
