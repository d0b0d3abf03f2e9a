/**
 * Scripted schedules over the real driver, one per failure of issue 7's list (A-E, re-admission
 * starvation, hiccup-then-crash, clock step). Each drives the harness's cluster through the faults that
 * broke the old protocol, lets the checker watch every event, and ends with the same end-of-run checks as a
 * random run (invariant 6 with the crashed replicas left down, bounded re-admission, the converged state).
 * Each also returns what it observed, so that its test can show the schedule really reached the situation
 * it is about (a scenario whose fault never struck proves nothing).
 */
import { SIMULATION_TIMINGS } from './driver-adapter.js';
import { Harness, READMISSION_BOUND_MS } from './harness.js';
import { STORE_CALL_TIMEOUT_MS } from './simulated-configuration-store.js';
import type { ClusterRecord } from '../../src/core/replication/cluster-record.js';
import type { StorageFault } from './simulated-cluster.js';

/** Every scenario runs with clocks at their exact rate unless it is about clocks. */
const exactClocks = (): number => 1;

export interface ScenarioReport {
  readonly harness: Harness;
  /** Scenario-specific observations, asserted by the test. */
  readonly observed: Record<string, number | boolean | string | undefined>;
}

function othersThan(harness: Harness, ordinal: number): number[] {
  return harness.cluster.replicas.map((slot) => slot.ordinal).filter((other) => other !== ordinal);
}

function isTakeover(record: ClusterRecord, byOrdinal: number, current: ClusterRecord | undefined): boolean {
  return record.leader === byOrdinal && (current === undefined || record.epoch > current.epoch);
}

/** Crashes a follower and waits until the leader has dropped it from the in-sync set; false if it did not. */
async function crashUntilDropped(harness: Harness, ordinal: number, reason: string): Promise<boolean> {
  harness.cluster.crash(ordinal, reason);
  return harness.cluster.runUntil(() => !harness.cluster.recordedInSync().includes(ordinal), 5000);
}

async function finish(harness: Harness, options: { leftDown?: readonly number[] } = {}): Promise<void> {
  harness.healFaults();
  if ((options.leftDown ?? []).length > 0) await harness.checkWritesAgain();
  harness.assertNoViolations();
  await harness.checkReadmission();
  await harness.cluster.runFor(300);
  await harness.checkConverged();
}

/** Runs `scenario` on a fresh harness and disposes of it; the report is returned for the test's assertions. */
export async function runScenario(
  name: string,
  scenario: (harness: Harness) => Promise<Record<string, number | boolean | string | undefined>>,
  options: {
    seed?: number;
    thinkTimeMs?: number;
    reads?: boolean;
    clockRate?: (ordinal: number, run: number) => number;
    logRetentionEntries?: number;
  } = {},
): Promise<ScenarioReport> {
  const harness = new Harness({
    seed: options.seed ?? 7,
    name,
    clockRate: options.clockRate ?? exactClocks,
    ...(options.logRetentionEntries === undefined ? {} : { logRetentionEntries: options.logRetentionEntries }),
    workload: { thinkTimeMs: options.thinkTimeMs ?? 60, reads: options.reads ?? true },
  });
  try {
    await harness.bootstrap();
    const observed = await scenario(harness);
    harness.assertNoViolations();
    if (process.env.SIMULATION_REPORT !== undefined) {
      process.stdout.write(`${name}: ${JSON.stringify(observed)} ${JSON.stringify(harness.summary())}\n`);
    }
    return { harness, observed };
  } finally {
    await harness.dispose();
  }
}

/**
 * A. Two pauses. The leader stops for a second; a follower wins the takeover swap and is paused before it
 * hears the answer (`afterSwap`), or is paused between deciding and sending the swap, so that the swap
 * arrives seconds later (`beforeSwap`). The old leader resumes and goes on with the third replica. Under
 * the old protocol the follower had elected itself on its lease, the old leader removed it after 1.1 s of
 * silence and acknowledged writes with the third, and the follower's late epoch then wiped them out.
 */
export function scenarioTwoPauses(variant: 'afterSwap' | 'beforeSwap') {
  return async (harness: Harness) => {
    const { cluster, workload } = harness;
    workload.start();
    await cluster.runFor(1000);
    const leader = cluster.recordedLeader()!;
    let pausedCandidate: number | undefined;
    const candidatePauseMs = 2500;
    if (variant === 'afterSwap') {
      cluster.store.onSwapApplied = (byOrdinal, outcome) => {
        if (pausedCandidate !== undefined || byOrdinal === leader || !outcome.swapped) return;
        if (outcome.current.record.leader !== byOrdinal) return;
        pausedCandidate = byOrdinal;
        cluster.pause(byOrdinal);
        cluster.scheduler.schedule(candidatePauseMs, 'resume the candidate', () => cluster.resume(byOrdinal));
      };
    } else {
      cluster.store.onSwapIssued = (byOrdinal, record) => {
        if (pausedCandidate !== undefined || byOrdinal === leader) return;
        if (!isTakeover(record, byOrdinal, cluster.store.peek()?.record)) return;
        pausedCandidate = byOrdinal;
        cluster.pause(byOrdinal);
        cluster.scheduler.schedule(candidatePauseMs, 'resume the candidate', () => cluster.resume(byOrdinal));
        return 'hold';
      };
    }
    const acknowledgedBefore = harness.checker.counters.acknowledgements;
    cluster.pause(leader);
    await cluster.runUntil(() => pausedCandidate !== undefined, 5000);
    await cluster.runFor(200);
    cluster.resume(leader);
    await cluster.runFor(candidatePauseMs + 1500);
    const acknowledgedDuring = harness.checker.counters.acknowledgements - acknowledgedBefore;
    await finish(harness);
    return { leader, pausedCandidate, acknowledgedDuring };
  };
}

/**
 * B. A restarted follower must not inherit anything from its previous run. A follower crashes and stays
 * down long enough to be dropped from the in-sync set, while writes go on; it restarts (its clock starts
 * again near 0) at the moment the leader is paused, and the third replica then crashes. Under the old
 * protocol the restarted follower accepted the leader's echo of its previous run's larger clock reading as
 * a lease, and led without the writes acknowledged while it was down.
 */
export async function scenarioRestartedFollower(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(1000);
  const leader = cluster.recordedLeader()!;
  const [follower, third] = othersThan(harness, leader) as [number, number];
  cluster.crash(follower, 'crash the follower');
  const acknowledgedBefore = harness.checker.counters.acknowledgements;
  const dropped = await cluster.runUntil(() => !cluster.recordedInSync().includes(follower), 5000);
  await cluster.runFor(1500);
  const acknowledgedWithoutFollower = harness.checker.counters.acknowledgements - acknowledgedBefore;
  cluster.start(follower);
  cluster.pause(leader);
  await cluster.runFor(100);
  cluster.crash(third, 'crash the third replica');
  await cluster.runFor(3000);
  cluster.resume(leader);
  await cluster.runFor(500);
  await finish(harness, { leftDown: [third] });
  return { leader, follower, dropped, acknowledgedWithoutFollower };
}

/**
 * C. A follower's disk fills up: from some write on, every write of entries fails. The driver must end
 * that replica (fail-stop) rather than answer as if the entries were stored; the others go on, and nothing
 * acknowledged may rely on the failed replica. Under the old driver grpc-js swallowed the error and the
 * leader counted the follower, acknowledging 40 of 40 writes the follower's disk never held. The leader's
 * disk then fails the same way.
 */
export async function scenarioFailedDiskWrite(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(500);
  const leader = cluster.recordedLeader()!;
  const [follower] = othersThan(harness, leader) as [number, number];
  const followerFault: StorageFault = { effect: 'fail', kind: 'entries', skip: 3, sticky: true };
  cluster.replica(follower).storageFault = followerFault;
  await cluster.runFor(2000);
  const followerDown = !cluster.replica(follower).up;
  const acknowledgedAfterFollowerFault = harness.checker.counters.acknowledgements;
  cluster.replica(follower).storageFault = undefined;
  cluster.start(follower);
  await cluster.runUntil(() => cluster.recordedInSync().length === cluster.replicas.length, 5000);
  const secondLeader = cluster.recordedLeader()!;
  const leaderFault: StorageFault = { effect: 'fail', kind: 'entries', skip: 2, sticky: true };
  cluster.replica(secondLeader).storageFault = leaderFault;
  await cluster.runFor(2000);
  const leaderDown = !cluster.replica(secondLeader).up;
  cluster.replica(secondLeader).storageFault = undefined;
  await finish(harness, { leftDown: [secondLeader] });
  return {
    follower,
    followerFaultStruck: followerFault.struck ?? 0,
    followerDown,
    leaderFaultStruck: leaderFault.struck ?? 0,
    leaderDown,
    acknowledgedAfterFollowerFault,
    fatalCrashes: cluster.counters.fatalCrashes,
  };
}

/**
 * D. The read barrier must judge authority at the time of the read. The leader is stopped for 3 s while
 * the others cannot reach it; another replica takes over and acknowledges writes. The leader resumes, still
 * hearing nothing from the others, and is asked for a read at once. The read must show every write
 * acknowledged before it was asked, or be refused. The old barrier looked at the lease as of the last
 * input, from before the stop, and served a read that missed the new leader's writes.
 */
export async function scenarioStaleRead(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(1000);
  const leader = cluster.recordedLeader()!;
  const others = othersThan(harness, leader);
  cluster.network.partition(others, [leader], 'a-to-b');
  cluster.pause(leader);
  const acknowledgedBefore = workload.acknowledged.size;
  await cluster.runFor(3000);
  const acknowledgedByOthers = [...workload.acknowledged.values()].filter((write) => write.ordinal !== leader).length;
  cluster.resume(leader);
  let settled = 0;
  let answered = 0;
  for (const name of workload.clientNames().slice(0, 2)) {
    void workload.readHistoryAs(name, leader).then((ok) => {
      settled += 1;
      if (ok) answered += 1;
    });
  }
  await cluster.runUntil(() => settled === 2, 3000);
  await cluster.runFor(500);
  await finish(harness);
  return {
    leader,
    acknowledgedDuringPause: workload.acknowledged.size - acknowledgedBefore,
    acknowledgedByOthers,
    readsSettled: settled,
    readsAnswered: answered,
  };
}

/**
 * E. A subscription's replay must show committed messages only. The leader's messages to the followers are
 * cut, so a message it accepts is applied but never committed; the recipient subscribes there with
 * include_queued; then the leader crashes, and the sender's retry lands on the new leader. Under the old
 * code the replay showed the uncommitted message, which vanished in the failover, and the retry then
 * created a second message id: the checker sees a shown message the converged state does not hold.
 */
export async function scenarioUncommittedReplay(harness: Harness) {
  const { cluster, workload } = harness;
  await cluster.runFor(300);
  const leader = cluster.recordedLeader()!;
  const others = othersThan(harness, leader);
  const [sender, , recipient] = workload.clientNames() as [string, string, string];
  const recipientUser = recipient.split('/')[0]!;
  cluster.network.partition([leader], others, 'a-to-b');
  const commitBefore = cluster.replica(leader).status()!.commitIndex;
  let senderAcknowledged: boolean | undefined;
  void workload.sendAs(sender, leader, recipientUser).then((answer) => {
    senderAcknowledged = answer.ok;
  });
  await cluster.runFor(50);
  const leaderStatus = cluster.replica(leader).status()!;
  const appliedUncommitted = leaderStatus.lastIndex > Math.max(commitBefore, leaderStatus.commitIndex);
  workload.subscribeAs(recipient, leader, true);
  await cluster.runFor(50);
  const replayed = workload.shown.filter((shown) => shown.how === 'replay').length;
  cluster.crash(leader, 'crash the leader holding an uncommitted message');
  cluster.network.heal();
  await cluster.runUntil(() => senderAcknowledged !== undefined, 20_000);
  await finish(harness, { leftDown: [leader] });
  return { leader, appliedUncommitted, replayed, senderAcknowledged };
}

/**
 * Writes that arrive while a batch is being replicated wait until it commits, then go out together
 * (ReplicaNode.holdsWritesForReplication): on one disk shared by the replicas, batches of one or two each
 * cost an fsync per replica, and those queue behind each other. The leader's messages to its followers are
 * dropped for 100 ms, so the first write is applied but not committed; two more arrive meanwhile. They
 * must not be applied before the first commits, and all three are acknowledged once messages flow again.
 */
export async function scenarioWritesHeldDuringReplication(harness: Harness) {
  const { cluster, workload } = harness;
  await cluster.runFor(300);
  const leader = cluster.recordedLeader()!;
  const lastIndex = (): number => cluster.replica(leader).status()!.lastIndex;
  const [first, second, third] = workload.clientNames() as [string, string, string];
  const acknowledged: boolean[] = [];
  const note = (answer: { ok: boolean }): void => {
    acknowledged.push(answer.ok);
  };
  cluster.network.partition([leader], othersThan(harness, leader), 'a-to-b');
  const before = lastIndex();
  void workload.sendAs(first, leader).then(note);
  await cluster.runFor(20);
  const afterFirst = lastIndex();
  void workload.sendAs(second, leader).then(note);
  void workload.sendAs(third, leader).then(note);
  await cluster.runFor(80);
  const whileReplicating = lastIndex();
  cluster.network.heal();
  await cluster.runUntil(() => acknowledged.length === 3, 5000);
  const afterCommit = lastIndex();
  await finish(harness);
  return {
    leader,
    firstApplied: afterFirst - before,
    appliedWhileReplicating: whileReplicating - afterFirst,
    appliedAfterCommit: afterCommit - whileReplicating,
    acknowledged: acknowledged.filter((ok) => ok).length,
  };
}

/**
 * Writes that queued together go out in batches of at most MAX_WRITES_PER_BATCH, and the rest of them do not
 * wait for the first batch's replication (ReplicaNode.applySubmitted): the second batch is committed while
 * the first is replicated, and the first batch's writes are answered before the second's, which in a closed
 * loop of clients lets the clients' next requests overlap the leader's work. The leader's messages are
 * dropped for 100 ms, so one write is applied but not committed while 40 more arrive and are held; once
 * messages flow again they must be applied as 32 and then 8, the 8 before the 32 commit.
 */
export async function scenarioFullBatchSplit(harness: Harness) {
  const { cluster, workload } = harness;
  await cluster.runFor(300);
  const leader = cluster.recordedLeader()!;
  const status = () => cluster.replica(leader).status()!;
  const [sender] = workload.clientNames() as [string];
  let acknowledged = 0;
  const note = (answer: { ok: boolean }): void => {
    if (answer.ok) acknowledged += 1;
  };
  cluster.network.partition([leader], othersThan(harness, leader), 'a-to-b');
  void workload.sendAs(sender, leader).then(note);
  await cluster.runFor(20);
  const heldFrom = status().lastIndex;
  for (let write = 0; write < 40; write += 1) void workload.sendAs(sender, leader).then(note);
  await cluster.runFor(80);
  const appliedWhileHeld = status().lastIndex - heldFrom;
  cluster.network.heal();
  await cluster.runUntil(() => status().lastIndex > heldFrom, 5000);
  const firstBatch = status().lastIndex - heldFrom;
  await cluster.runUntil(() => status().lastIndex >= heldFrom + 40, 5000);
  const secondBatchBeforeFirstCommitted = status().lastIndex === heldFrom + 40 && status().commitIndex < heldFrom + firstBatch;
  await cluster.runUntil(() => acknowledged === 41, 5000);
  await finish(harness);
  return { leader, appliedWhileHeld, firstBatch, secondBatchBeforeFirstCommitted, acknowledged };
}

/**
 * A follower that stopped answering is probed with heartbeats, not sent entries (found by a profile of a
 * leader with one replica killed: every 200 ms it read up to 512 entries back from SQLite and encoded them
 * for the dead follower, about 6 % of its time). One follower is crashed under writes and left down until
 * the leader has dropped it from the in-sync set; then every append the leader sends it is counted while
 * writes go on. Once restarted, it must get entries again and be re-admitted.
 */
export async function scenarioSilentFollowerGetsHeartbeats(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(300);
  const leader = cluster.recordedLeader()!;
  const silent = othersThan(harness, leader)[0]!;
  const dropped = await crashUntilDropped(harness, silent, 'crash a follower, left down for a while');
  let entriesWhileSilent = 0;
  let heartbeatsWhileSilent = 0;
  let entriesAfterRestart = 0;
  let restarted = false;
  cluster.network.onSend = (fromOrdinal, toOrdinal, message) => {
    if (fromOrdinal !== leader || toOrdinal !== silent || message.type !== 'append') return;
    if (restarted) entriesAfterRestart += message.entries.length;
    else if (message.entries.length > 0) entriesWhileSilent += message.entries.length;
    else heartbeatsWhileSilent += 1;
  };
  // Two seconds: ten of the leader's resets of a silent follower's position (every four heartbeats).
  await cluster.runFor(2000);
  const leaderUnchanged = cluster.recordedLeader() === leader;
  restarted = true;
  cluster.start(silent);
  const readmitted = await cluster.runUntil(() => cluster.recordedInSync().includes(silent), 10_000);
  cluster.network.onSend = undefined;
  await finish(harness);
  return { leader, dropped, leaderUnchanged, entriesWhileSilent, heartbeatsWhileSilent, entriesAfterRestart, readmitted };
}

/**
 * A shrink swap that lands after its sender crashed (random seeds 5842 and 6798 on the driver before
 * holdsWritesForReplication). One follower is down and out of the in-sync set; the leader is cut off from
 * the other, which is cut off from the store as well, and the store is slow. The leader sends a swap that
 * leaves only itself in sync and is killed while the swap is on its way; the swap lands after the faults'
 * end. The live follower must not lead (it may lack acknowledged writes), so invariant 6 has nothing to
 * require. The harness used to read the in-sync set when the faults ended, and failed the run.
 */
export async function scenarioShrinkSwapLandsAfterSenderCrashed(harness: Harness) {
  const { cluster, workload } = harness;
  // Writes are what make a leader drop a silent follower from the in-sync set.
  workload.start();
  await cluster.runFor(300);
  const leader = cluster.recordedLeader()!;
  const [follower, downFollower] = othersThan(harness, leader) as [number, number];
  const dropped = await crashUntilDropped(harness, downFollower, 'crash a follower, left down');
  cluster.store.faults.minimumDelayMs = 300;
  cluster.store.faults.maximumDelayMs = 350;
  let shrinkIssued = false;
  cluster.store.onSwapIssued = (byOrdinal, record) => {
    if (byOrdinal === leader && record.inSync.length === 1 && record.inSync[0] === leader) shrinkIssued = true;
  };
  // The follower is cut off from the store too, so that its takeover cannot beat the leader's swap.
  cluster.store.faults.unreachableFrom.add(follower);
  cluster.network.partition([leader], [follower], 'both');
  await cluster.runUntil(() => shrinkIssued, 10_000);
  const swapsBefore = cluster.store.swaps.length;
  cluster.crash(leader, 'crash the leader while its shrink swap is on its way');
  await finish(harness, { leftDown: [leader, downFollower] });
  const landedLate = cluster.store.swaps.slice(swapsBefore).some((swap) => swap.byOrdinal === leader && swap.record.inSync.length === 1);
  return {
    leader,
    dropped,
    shrinkIssued,
    landedLate,
    lateSwapsOfDownReplicas: harness.lateSwapsOfDownReplicas,
    writesAgainAfterMs: harness.writesAgainAfterMs,
  };
}

/**
 * Re-admission under a continuous write stream. A follower restarts while clients write about 300 times a
 * second; it must be back in the recorded in-sync set within `boundMs` of its start. The old leader asked
 * for the digest only when nothing was in flight and the follower was exactly at its last index, which
 * never happens under load, and a follower stayed out for good.
 */
export function scenarioReadmissionUnderLoad(boundMs: number) {
  return async (harness: Harness) => {
    const { cluster, workload } = harness;
    workload.start();
    await cluster.runFor(1000);
    const leader = cluster.recordedLeader()!;
    const [follower] = othersThan(harness, leader) as [number];
    cluster.crash(follower, 'crash the follower');
    await cluster.runUntil(() => !cluster.recordedInSync().includes(follower), 5000);
    // Clients whose requests stalled while the leader waited for the dead follower time out and retry;
    // once they are back to full speed, the load is measured over the second before the restart (a quick
    // re-admission would leave too short a window to count in).
    await cluster.runFor(2000);
    const acknowledgedBefore = workload.acknowledged.size;
    await cluster.runFor(1000);
    const writesPerSecond = workload.acknowledged.size - acknowledgedBefore;
    if (writesPerSecond < 200) {
      harness.fail(
        `with replica ${follower} down and out of the in-sync set {${cluster.recordedInSync().join(',')}}, only ${writesPerSecond} writes were acknowledged in a second (the clients offer about 300)`,
      );
    }
    const restartedAtMs = cluster.nowMs;
    cluster.start(follower);
    const back = await cluster.runUntil(() => cluster.recordedInSync().includes(follower), 10_000);
    const readmittedAfterMs = back ? cluster.nowMs - restartedAtMs : undefined;
    if (readmittedAfterMs === undefined || readmittedAfterMs > boundMs) {
      harness.fail(`replica ${follower} was not back in the in-sync set within ${boundMs} ms of its restart under ${writesPerSecond.toFixed(0)} writes/s`);
    }
    await finish(harness);
    return { follower, readmittedAfterMs, writesPerSecond };
  };
}

/**
 * Hiccup, then crash. One follower goes silent (its replies are lost) and, well inside that silence, the
 * leader crashes and stays down. The healthy follower must take over and writes must be acknowledged again
 * (invariant 6 with the crashed leader left down). Under the old protocol no healthy follower had a lease
 * any more (the leader stopped renewing every lease while one follower was silent), so nobody could lead
 * until the crashed replica returned.
 */
export async function scenarioHiccupThenCrash(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(1000);
  const leader = cluster.recordedLeader()!;
  const [healthy, silent] = othersThan(harness, leader) as [number, number];
  cluster.network.partition([silent], [leader], 'a-to-b');
  // Inside the silence, before the leader gives up on the silent follower: both followers are still in the
  // recorded in-sync set when the leader dies.
  await cluster.runFor(SIMULATION_TIMINGS.inSyncTimeoutMs * 0.6);
  const inSyncAtCrash = [...cluster.recordedInSync()];
  cluster.crash(leader, 'crash the leader during the hiccup');
  const acknowledgedBefore = harness.checker.counters.acknowledgements;
  const crashedAtMs = cluster.nowMs;
  cluster.scheduler.schedule(SIMULATION_TIMINGS.inSyncTimeoutMs, 'the hiccup ends', () => cluster.network.heal());
  const again = await cluster.runUntil(() => harness.checker.counters.acknowledgements > acknowledgedBefore, 5000);
  const writesAgainAfterMs = again ? cluster.nowMs - crashedAtMs : undefined;
  await cluster.runFor(SIMULATION_TIMINGS.inSyncTimeoutMs);
  await finish(harness, { leftDown: [leader] });
  return { leader, healthy, silent, writesAgainAfterMs, silentInSyncAtCrash: inSyncAtCrash.includes(silent) };
}

/**
 * A backward step of the wall clock across a restart. A follower restarts twice, each time with its
 * machine's wall clock an hour further back; it must be re-admitted each time. The old leader told runs
 * apart by the wall clock at start and ignored replies from a run that looked older than one it had seen.
 */
export async function scenarioClockStep(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(1000);
  const leader = cluster.recordedLeader()!;
  const [follower] = othersThan(harness, leader) as [number];
  const readmissionTimes: number[] = [];
  for (let restart = 0; restart < 2; restart += 1) {
    cluster.crash(follower, 'crash the follower');
    const dropped = await cluster.runUntil(() => !cluster.recordedInSync().includes(follower), 5000);
    if (!dropped) harness.fail(`replica ${follower} was never dropped from the in-sync set after its crash`);
    await cluster.runFor(200);
    cluster.replica(follower).wallClockStepMs -= 3_600_000;
    const restartedAtMs = cluster.nowMs;
    cluster.start(follower);
    await cluster.runFor(50);
    const back = await cluster.runUntil(() => cluster.recordedInSync().includes(follower) && cluster.replica(follower).status()?.lastIndex === cluster.servingLeader()?.status()?.lastIndex, 5000);
    if (!back) harness.fail(`replica ${follower} was not re-admitted within 5 s of restart ${restart + 1} with its wall clock stepped back`);
    readmissionTimes.push(cluster.nowMs - restartedAtMs);
    await cluster.runFor(500);
  }
  await finish(harness);
  return { follower, firstReadmissionMs: readmissionTimes[0], secondReadmissionMs: readmissionTimes[1] };
}

/**
 * Found by the simulation (seeds 25, 37, 95): a takeover whose swap the store refused, and which so never
 * took effect, must be tried again. One follower is down and out of the in-sync set, so that the other is
 * the only possible leader; the leader crashes and stays down; the store goes down the moment the first
 * takeover swap is sent, so that swap is refused, and is back 200 ms later. Writes must be acknowledged
 * again (invariant 6, with both crashed replicas left down).
 */
export async function scenarioRefusedTakeover(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(1000);
  const leader = cluster.recordedLeader()!;
  // With the third replica down and out of the in-sync set, one replica only may take over.
  const [, third] = othersThan(harness, leader) as [number, number];
  cluster.crash(third, 'crash the third replica');
  await cluster.runUntil(() => !cluster.recordedInSync().includes(third), 5000);
  let refusedTakeovers = 0;
  cluster.store.onSwapIssued = (byOrdinal, record) => {
    if (refusedTakeovers > 0 || byOrdinal === leader || record.leader !== byOrdinal) return;
    refusedTakeovers += 1;
    cluster.store.faults.outage = 'refuse';
    cluster.trace('store outage (refuse), as the first takeover swap is sent');
  };
  cluster.crash(leader, 'crash the leader');
  await cluster.runUntil(() => refusedTakeovers > 0, 3000);
  await cluster.runFor(200);
  cluster.store.faults.outage = 'none';
  cluster.store.onSwapIssued = undefined;
  const storeBackAtMs = cluster.nowMs;
  const acknowledgedBefore = harness.checker.counters.acknowledgements;
  const again = await cluster.runUntil(() => harness.checker.counters.acknowledgements > acknowledgedBefore, 5000);
  const writesAgainAfterMs = again ? cluster.nowMs - storeBackAtMs : undefined;
  await finish(harness, { leftDown: [leader, third] });
  return { leader, refusedTakeovers, writesAgainAfterMs };
}

/**
 * Found by the simulation (seeds 6, 11, 31, 33, 35): a follower whose missing entries the leader has
 * already deleted from its log (log retention) can only be repaired by a snapshot, and must get one. The
 * follower is down while the leader writes well past its retention, then restarts; it must be back in the
 * in-sync set in bounded time.
 */
export async function scenarioFollowerBehindTruncatedLog(harness: Harness) {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(500);
  const leader = cluster.recordedLeader()!;
  const [follower] = othersThan(harness, leader) as [number];
  cluster.crash(follower, 'crash the follower');
  const behindFrom = cluster.replica(leader).status()!.lastIndex;
  await cluster.runUntil(() => cluster.replica(leader).status()!.lastIndex > behindFrom + 3 * TRUNCATION_RETENTION_ENTRIES, 20_000);
  const snapshotsBefore = cluster.network.counters.snapshotsServed;
  const restartedAtMs = cluster.nowMs;
  cluster.start(follower);
  const back = await cluster.runUntil(() => cluster.recordedInSync().includes(follower), 5000);
  const readmittedAfterMs = back ? cluster.nowMs - restartedAtMs : undefined;
  await finish(harness);
  return { leader, follower, readmittedAfterMs, snapshots: cluster.network.counters.snapshotsServed - snapshotsBefore };
}

/** The log retention of scenarioFollowerBehindTruncatedLog: small, so that a short outage outruns it. */
export const TRUNCATION_RETENTION_ENTRIES = 40;

/**
 * The setup both silent re-admission scenarios share: a follower crashes, is dropped from the in-sync set
 * and restarts; the store goes silent the moment the leader sends the swap that lists it in sync again,
 * for longer than the call's deadline, and then answers again.
 */
async function silenceReadmissionSwap(harness: Harness): Promise<{ leader: number; follower: number; silencedSwaps: number }> {
  const { cluster, workload } = harness;
  workload.start();
  await cluster.runFor(1000);
  const leader = cluster.recordedLeader()!;
  const [follower] = othersThan(harness, leader) as [number];
  cluster.crash(follower, 'crash the follower');
  await cluster.runUntil(() => !cluster.recordedInSync().includes(follower), 5000);
  let silencedSwaps = 0;
  cluster.store.onSwapIssued = (byOrdinal, record) => {
    if (silencedSwaps > 0 || byOrdinal !== leader || !record.inSync.includes(follower)) return;
    silencedSwaps += 1;
    cluster.store.faults.outage = 'silent';
    cluster.trace('store outage (silent), as the re-admission swap is sent');
  };
  cluster.start(follower);
  await cluster.runUntil(() => silencedSwaps > 0, 5000);
  await cluster.runFor(STORE_CALL_TIMEOUT_MS + 200);
  cluster.store.faults.outage = 'none';
  cluster.store.onSwapIssued = undefined;
  return { leader, follower, silencedSwaps };
}

/**
 * Found by the simulation (seeds 119, 144, 146, 181, 258, 289): a re-admission swap that failed (refused,
 * or, as here, unanswered because the store went silent while it was in flight) must be asked again once
 * the store answers. A follower crashes, is dropped from the in-sync set and restarts; the store goes
 * silent the moment the leader sends the swap that lists it in sync again, for longer than the call's
 * deadline. Once the store is back, the follower must be re-admitted in bounded time.
 */
export async function scenarioSilentReadmissionSwap(harness: Harness) {
  const { cluster } = harness;
  const { leader, follower, silencedSwaps } = await silenceReadmissionSwap(harness);
  const storeBackAtMs = cluster.nowMs;
  const back = await cluster.runUntil(() => cluster.recordedInSync().includes(follower), READMISSION_BOUND_MS);
  const readmittedAfterMs = back ? cluster.nowMs - storeBackAtMs : undefined;
  await finish(harness);
  return { leader, follower, silencedSwaps, readmittedAfterMs };
}

/**
 * Found by the simulation (seed 444), the same bug seen from the write path: the follower whose
 * re-admission swap got no answer dies once the store is back. It must not hold commits back: writes are
 * acknowledged again (invariant 6, with it left down).
 */
export async function scenarioSilentReadmissionThenCrash(harness: Harness) {
  const { cluster } = harness;
  const { leader, follower, silencedSwaps } = await silenceReadmissionSwap(harness);
  await cluster.runFor(SIMULATION_TIMINGS.electionTimeoutMs);
  cluster.crash(follower, 'crash the follower again');
  await finish(harness, { leftDown: [follower] });
  return { leader, follower, silencedSwaps };
}
