/**
 * What every simulated run shares, random or scripted: a cluster of real replicas, the workload of real
 * service calls, the checker wired to both, and the phases that end a run: heal the faults, check
 * invariant 6 with the crashed replicas left down, bring them back and check that re-admission completes
 * in bounded time, then let the cluster converge and check the converged state.
 */
import { Checker } from './checker.js';
import { filterSimulatedCrashRejections } from './crash-rejections.js';
import { Random } from './random.js';
import { type ClusterOptions, describeError, type ReplicaSlot, SimulatedCluster } from './simulated-cluster.js';
import { QUIET_NETWORK } from './simulated-network.js';
import { Workload, type WorkloadOptions } from './workload.js';

/**
 * Invariant 6, as bounded here: once faults stop, with one replica of the recorded in-sync set alive and
 * the store reachable, a write is acknowledged again within this long (virtual ms). It covers detecting the
 * silent leader, one store swap, and a client's retry.
 */
export const WRITES_AGAIN_BOUND_MS = 5000;
/** Once every replica is back and faults have stopped, all are in the recorded in-sync set within this long. */
export const READMISSION_BOUND_MS = 5000;
/** How long the replicas get to apply the last writes and agree once clients stop. */
const CONVERGENCE_BOUND_MS = 5000;

export class SimulationFailure extends Error {
  override name = 'SimulationFailure';
}

export interface HarnessOptions extends Partial<Omit<ClusterOptions, 'random' | 'name'>> {
  readonly seed: number;
  readonly name: string;
  readonly workload?: Partial<WorkloadOptions>;
}

export interface RunSummary {
  readonly acknowledgedWrites: number;
  readonly reads: number;
  readonly pushes: number;
  readonly elections: number;
  readonly crashes: number;
  readonly fatalCrashes: number;
  readonly snapshots: number;
  readonly storeSwaps: number;
  readonly writesAgainAfterMs: number | undefined;
  readonly downDuringWritesAgain: number | undefined;
  /**
   * Swaps that landed after the faults' end, sent by replicas that crashed before they landed, when they
   * left no live replica in sync (invariant 6 then does not apply); 0 otherwise.
   */
  readonly lateSwapsOfDownReplicas: number;
  readonly readmittedAfterMs: number | undefined;
  readonly events: number;
}

export class Harness {
  readonly cluster: SimulatedCluster;
  readonly workload: Workload;
  readonly checker: Checker;
  readonly random: Random;
  writesAgainAfterMs: number | undefined;
  readmittedAfterMs: number | undefined;
  /** How many replicas were down while invariant 6 was checked (undefined: it did not apply). */
  downDuringWritesAgain: number | undefined;
  /** See RunSummary.lateSwapsOfDownReplicas. */
  lateSwapsOfDownReplicas = 0;
  private readonly removeRejectionFilter: () => void;

  constructor(readonly options: HarnessOptions) {
    this.random = new Random(options.seed);
    this.cluster = new SimulatedCluster({
      replicaCount: options.replicaCount ?? 3,
      random: this.random.fork(),
      name: options.name,
      ...(options.logRetentionEntries === undefined ? {} : { logRetentionEntries: options.logRetentionEntries }),
      ...(options.clockRate === undefined ? {} : { clockRate: options.clockRate }),
    });
    this.checker = new Checker(this.cluster);
    this.workload = new Workload(
      this.cluster,
      this.random.fork(),
      { users: 3, clientsPerUser: 2, thinkTimeMs: 120, reads: true, ...options.workload },
      this.checker,
    );
    this.checker.workload = this.workload;
    this.cluster.afterEvent = () => this.checker.afterEvent();
    this.removeRejectionFilter = filterSimulatedCrashRejections((reason) =>
      this.cluster.violation(`an unhandled rejection escaped the driver: ${describeError(reason)}`),
    );
  }

  /** Throws with the violations found so far, the recent trace and the replay command. */
  assertNoViolations(): void {
    const violations = this.cluster.violationList;
    if (violations.length === 0) return;
    throw new SimulationFailure(
      `${this.options.name}: ${violations.length} violation(s):\n  ${violations.slice(0, 8).join('\n  ')}\n` +
        `replicas now:\n  ${this.cluster.describeReplicas()}\nstore holds: ${JSON.stringify(this.cluster.store.peek())}\n` +
        `recent events:\n${this.cluster.recentTrace()}\n`,
    );
  }

  fail(text: string): never {
    this.cluster.violation(text);
    this.assertNoViolations();
    throw new SimulationFailure(text);
  }

  /** Starts every replica and waits for the first leader and the accounts and sessions of the workload. */
  async bootstrap(): Promise<void> {
    for (const slot of this.cluster.replicas) this.cluster.start(slot.ordinal);
    const led = await this.cluster.runUntil(() => this.cluster.servingLeader() !== undefined, 10_000);
    if (!led) this.fail(`no leader within 10 s of the first start (store holds ${JSON.stringify(this.cluster.store.peek())})`);
    const setUp = await this.workload.setUp(10_000);
    if (!setUp) this.fail('the accounts and sessions of the workload were not acknowledged within 10 s');
    this.assertNoViolations();
  }

  /** Ends every fault: network, store, pauses and armed disk faults. Crashed replicas stay down. */
  healFaults(): void {
    const cluster = this.cluster;
    cluster.network.heal();
    cluster.network.faults = { ...QUIET_NETWORK };
    cluster.store.quiet();
    cluster.store.onSwapApplied = undefined;
    cluster.store.onSwapIssued = undefined;
    for (const slot of cluster.replicas) {
      slot.storageFault = undefined;
      cluster.resume(slot.ordinal);
    }
    cluster.trace('faults healed');
  }

  /**
   * Invariant 6 with the crashed replicas left down: if one replica of the recorded in-sync set is alive,
   * a write is acknowledged within WRITES_AGAIN_BOUND_MS. Returns false when the invariant does not apply.
   */
  async checkWritesAgain(): Promise<boolean> {
    const cluster = this.cluster;
    const inSync = cluster.recordedInSync();
    const aliveInSync = inSync.filter((ordinal) => cluster.replica(ordinal).up);
    if (aliveInSync.length === 0) {
      cluster.trace(`invariant 6 does not apply: every replica of the in-sync set {${inSync.join(',')}} is down`);
      return false;
    }
    const down = cluster.replicas.filter((slot) => !slot.up).map((slot) => slot.ordinal);
    const healedAtMs = cluster.nowMs;
    const acknowledgedBefore = this.checker.counters.acknowledgements;
    // A probe write of its own, so that the check does not depend on the workload being busy.
    void this.workload.sendAs(this.workload.clientNames()[0]!, aliveInSync[0]!);
    const again = await cluster.runUntil(() => this.checker.counters.acknowledgements > acknowledgedBefore, WRITES_AGAIN_BOUND_MS);
    if (!again) {
      // A swap sent before the faults' end can still be on its way to a slow store. When one sent by a
      // replica that crashed meanwhile shrank the in-sync set to down replicas only, the live ones must not
      // lead (they may lack acknowledged writes): the premise no longer holds. Crashed replicas stay down
      // and faults have stopped, so a swap from a replica that is down now was sent before the end.
      const lateSwaps = cluster.store.swaps.filter((swap) => swap.atMs > healedAtMs);
      const inSyncNow = cluster.recordedInSync();
      if (
        lateSwaps.length > 0 &&
        lateSwaps.every((swap) => !cluster.replica(swap.byOrdinal).up) &&
        inSyncNow.every((ordinal) => !cluster.replica(ordinal).up)
      ) {
        this.lateSwapsOfDownReplicas = lateSwaps.length;
        cluster.trace(
          `invariant 6 does not apply: swaps of down replicas {${[...new Set(lateSwaps.map((swap) => swap.byOrdinal))].join(',')}} landed after the faults' end and left only down replicas in sync {${inSyncNow.join(',')}}`,
        );
        return false;
      }
      this.fail(
        `invariant 6: no write acknowledged within ${WRITES_AGAIN_BOUND_MS} ms of the faults' end, with replicas {${aliveInSync.join(',')}} of the in-sync set {${inSync.join(',')}} alive and {${down.join(',')}} left down`,
      );
    }
    this.writesAgainAfterMs = cluster.nowMs - healedAtMs;
    this.downDuringWritesAgain = down.length;
    cluster.trace(`invariant 6: writes acknowledged again after ${this.writesAgainAfterMs.toFixed(1)} ms, {${down.join(',')}} down`);
    return true;
  }

  /** Restarts every replica that is down and requires all to be back in the in-sync set in bounded time. */
  async checkReadmission(): Promise<void> {
    const cluster = this.cluster;
    for (const slot of cluster.replicas) if (!slot.up) cluster.start(slot.ordinal);
    const startedAtMs = cluster.nowMs;
    const everyone = cluster.replicas.map((slot) => slot.ordinal);
    const readmitted = await cluster.runUntil(
      () => cluster.servingLeader() !== undefined && everyone.every((ordinal) => cluster.recordedInSync().includes(ordinal)),
      READMISSION_BOUND_MS,
    );
    if (!readmitted) {
      this.fail(
        `re-admission: the recorded in-sync set is {${cluster.recordedInSync().join(',')}} ${READMISSION_BOUND_MS} ms after every replica was back and faults had stopped (leader: ${cluster.servingLeader()?.ordinal ?? 'none'})`,
      );
    }
    this.readmittedAfterMs = cluster.nowMs - startedAtMs;
    cluster.trace(`re-admission complete after ${this.readmittedAfterMs.toFixed(1)} ms`);
  }

  /** Stops the clients, waits for the replicas to agree, and checks the converged state. */
  async checkConverged(survivors?: readonly ReplicaSlot[]): Promise<void> {
    const cluster = this.cluster;
    this.workload.stop();
    const compared = survivors ?? cluster.replicas;
    await cluster.runFor(300);
    const converged = await this.pollUntil(() => {
      const leader = cluster.servingLeader();
      if (leader === undefined) return false;
      const leaderStatus = leader.status();
      if (leaderStatus === undefined) return false;
      return compared.every((slot) => {
        const status = slot.status();
        return status !== undefined && status.lastIndex === leaderStatus.lastIndex && status.commitIndex >= leaderStatus.lastIndex;
      });
    }, CONVERGENCE_BOUND_MS);
    if (!converged) {
      const positions = compared.map((slot) => `${slot.ordinal}: ${JSON.stringify(slot.status() ?? 'down')}`).join('; ');
      this.fail(`the replicas did not converge within ${CONVERGENCE_BOUND_MS} ms of the clients stopping: ${positions}`);
    }
    this.checker.checkConverged(compared);
    this.assertNoViolations();
  }

  /** Runs in slices of 50 ms until `condition` holds, for conditions too costly to test after every event. */
  private async pollUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = this.cluster.nowMs + timeoutMs;
    while (!condition()) {
      if (this.cluster.nowMs >= deadline) return false;
      await this.cluster.runFor(50);
    }
    return true;
  }

  summary(): RunSummary {
    const cluster = this.cluster;
    const swaps = cluster.store.swaps;
    return {
      acknowledgedWrites: this.workload.acknowledged.size,
      reads: this.workload.counters.reads,
      pushes: this.workload.counters.pushes,
      elections: new Set(swaps.map((swap) => swap.record.epoch)).size,
      crashes: cluster.counters.crashes,
      fatalCrashes: cluster.counters.fatalCrashes,
      snapshots: cluster.network.counters.snapshotsServed,
      storeSwaps: swaps.length,
      writesAgainAfterMs: this.writesAgainAfterMs,
      downDuringWritesAgain: this.downDuringWritesAgain,
      lateSwapsOfDownReplicas: this.lateSwapsOfDownReplicas,
      readmittedAfterMs: this.readmittedAfterMs,
      events: cluster.scheduler.eventsRun,
    };
  }

  async dispose(): Promise<void> {
    this.workload.stop();
    try {
      await this.cluster.dispose();
    } finally {
      this.removeRejectionFilter();
    }
  }
}
