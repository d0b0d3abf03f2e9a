/**
 * Membership with real processes on simulated machines: `replichat server` processes, each in its own
 * network namespace (test/support/netns-cluster.ts, with etcd as the configuration store), crashed with
 * SIGKILL, stopped with SIGTERM, and restarted on their data directories or on wiped ones. Each test proves
 * one thing the membership issue requires:
 *
 *   a. a fourth replica joins three that never heard of it, under a steady stream of sends: it bootstraps from
 *      a snapshot (the log is longer than one append), the stream never stalls for long and no send fails,
 *      it becomes in-sync, and all four state digests are equal; after a restart of all four, the three
 *      originals are SIGKILLed at once and the joiner alone acknowledges writes and holds every acknowledged
 *      message;
 *   b. a follower whose disk is wiped comes back empty, rejoins from a snapshot and is in sync again, with
 *      equal digests;
 *   c. an operator removes a follower (RemoveMember with the admin token, at the leader; a follower redirects
 *      with UNAVAILABLE and the leader's address): once it is out of the configuration, killing it does not
 *      stall writes, and restarted it says it was removed; removing the leader hands leadership over;
 *   d. the leader is SIGKILLed in the middle of a snapshot transfer to a joiner (a seeded database of tens of
 *      thousands of messages, so that the transfer takes a while): the joiner ends in sync with the new
 *      leader, with equal digests.
 *
 * "Acknowledged" means a send whose call resolved; acknowledged messages are read back by id through the
 * cluster. Digests are computed from each replica's SQLite file after a clean stop. Conditions are awaited
 * by polling GetReplicaStatus, logs and /readyz with deadlines, never by fixed sleeps. Measured figures are
 * printed on stderr with the prefix [membership-netns].
 */
import * as grpc from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import { ChatClient } from '../src/cli/chat-client.js';
import {
  type Acknowledged,
  callRemoveMember,
  logInAlice,
  readSentMessages,
  seedDatabase,
  seededRecord,
  SendStream,
} from './support/membership-cluster.js';
import { NetnsCluster, clusterUnavailableReason, pollUntil } from './support/netns-cluster.js';
import { describeOnNetns } from './support/netns.js';

const ORIGINAL = [0, 1, 2] as const;
const ALL_FOUR = [0, 1, 2, 3] as const;
/** The leader sends an empty replica a snapshot only when its log holds more than one append of entries. */
const ENTRIES_PER_APPEND = 512;
/**
 * The longest the stream of sends may go without an acknowledgement while a replica joins. Adding a member
 * and re-admitting it are configuration entries that never wait for the joiner before it is in sync, and the
 * snapshot is taken a few pages at a time between writes, so the stream should barely notice; an in-sync
 * member that stopped answering would stall it for the 1.1 s removal delay, which this bound excludes.
 */
const JOIN_GAP_LIMIT_MS = 1000;
/** After the three originals die, the joiner must acknowledge a new write within this time ("a few seconds"). */
const SOLE_SURVIVOR_LIMIT_MS = 5000;
/**
 * Once a removed member is out of the configuration, killing it must not delay any write: the 1.1 s removal
 * of a silent in-sync member (2 × lease × 1.05 + heartbeat) would show as a call of more than a second.
 */
const AFTER_REMOVAL_CALL_LIMIT_MS = 1000;
/** Enough messages, with large enough bodies, that a snapshot takes a noticeable time to transfer (test d). */
const SEEDED_MESSAGES = 40_000;
const SEEDED_BODY_BYTES = 100;
const ADMIN_TOKEN = 'membership-test-admin-token';
const REMOVED = /removed/;

let prefixCounter = 0;
/** Unique per test and per run (the pid), at most 10 characters as createHosts requires. */
function nextPrefix(): string {
  prefixCounter += 1;
  return `mb${process.pid.toString(36)}${prefixCounter.toString(36)}`;
}

/** What the tests print for the report: measured times and counts. */
function note(text: string): void {
  process.stderr.write(`[membership-netns] ${text}\n`);
}

function members(ordinals: readonly number[], cluster: NetnsCluster): { ordinal: number; address: string }[] {
  return ordinals.map((ordinal) => ({ ordinal, address: cluster.peerAddress(ordinal) }));
}

/** Every acknowledged message is readable by id with its body through `servers`. */
async function expectAllReadable(servers: readonly string[], aliceToken: string, acknowledged: readonly Acknowledged[]): Promise<void> {
  const stored = await readSentMessages(servers, aliceToken);
  expect(acknowledged.filter((ack) => stored.get(ack.id) !== ack.body).map((ack) => ack.body)).toEqual([]);
}

/** Once `indexes` have converged, halts every replica (haltConverged); their files hold equal state digests. */
async function stopAndCompareDigests(cluster: NetnsCluster, indexes: readonly number[]): Promise<void> {
  await cluster.haltConverged(indexes);
  const digests = indexes.map((index) => cluster.digest(index));
  expect(new Set(digests).size).toBe(1);
}

describeOnNetns('membership across simulated machines', () => {
  let cluster: NetnsCluster | undefined;
  let stream: SendStream | undefined;

  /** Runs a scenario; on failure, the replicas' last log lines are added to the error. */
  function scenario(
    name: string,
    timeoutMs: number,
    body: (cluster: NetnsCluster) => Promise<void>,
    hosts: number,
    environment: Readonly<Record<string, string>> = {},
  ): void {
    test(
      name,
      async () => {
        cluster = await NetnsCluster.create({ prefix: nextPrefix(), size: hosts, environment });
        try {
          await body(cluster);
          // No replica crashed or logged an error along the way.
          expect(cluster.problems()).toEqual([]);
        } catch (error) {
          if (error instanceof Error) error.message += `\n\nreplica logs (last lines):\n${cluster.describe(30)}`;
          throw error;
        }
      },
      timeoutMs,
    );
  }

  afterEach(async () => {
    await stream?.stop();
    stream = undefined;
    await cluster?.destroy();
    cluster = undefined;
  });

  scenario(
    'a. a fourth replica joins under a steady stream of sends, bootstraps from a snapshot, becomes in-sync, and alone holds every acknowledged write',
    90_000,
    async (cluster) => {
      await Promise.all(ORIGINAL.map((index) => cluster.start(index, ORIGINAL)));
      await cluster.waitUntilCaughtUp(ORIGINAL);
      const alice = await logInAlice(cluster.clientServers(ORIGINAL), true);
      stream = new SendStream(cluster.clientServers(ORIGINAL), alice, 'join', 4);
      // More than one append of entries, so that the joiner must bootstrap from a snapshot.
      await stream.awaitMore(ENTRIES_PER_APPEND + 100, 30_000);

      const joinStartedAtMs = performance.now();
      await cluster.start(3, ALL_FOUR);
      const leader = await cluster.waitForInSyncSet(ALL_FOUR, 30_000);
      const inSyncAtMs = performance.now();
      // The stream goes on after the re-admission too: the new in-sync member counts for every write now.
      await stream.awaitMore(50);
      const joinEndedAtMs = performance.now();
      const longestGapMs = stream.longestGapMs(joinStartedAtMs, joinEndedAtMs);
      const acknowledgedDuringJoin = stream.acknowledged.filter((ack) => ack.ackedAtMs > joinStartedAtMs && ack.ackedAtMs < inSyncAtMs).length;

      // It bootstrapped from a snapshot: its first run logged the install, and its metric counts one.
      const installed = cluster.logs(3).find((line) => line.incarnation === 1 && line.msg === 'installed a snapshot');
      expect(installed).toBeDefined();
      expect(await cluster.metric(3, 'replichat_snapshots_installed_total')).toBe(1);
      await stream.stop();
      expect(stream.failures).toEqual([]);
      expect(longestGapMs).toBeLessThan(JOIN_GAP_LIMIT_MS);
      const acknowledged = [...stream.acknowledged];
      stream = undefined;
      note(
        `a: replica 3 joined leader ${leader.ordinal} and was in sync ${(inSyncAtMs - joinStartedAtMs).toFixed(0)} ms after ` +
          `its start; snapshot at index ${String(installed!.lastIndex)} installed in ${Number(installed!.durationSeconds).toFixed(3)} s; ` +
          `${acknowledgedDuringJoin} sends acknowledged meanwhile; longest gap between acknowledgements ${longestGapMs.toFixed(0)} ms; ` +
          `${acknowledged.length} sends acknowledged in all`,
      );

      await cluster.waitUntilCaughtUp(ALL_FOUR);
      await stopAndCompareDigests(cluster, ALL_FOUR);

      // All four restarted on their disks (the originals still knowing only each other statically): the
      // store's record names the fourth, so they take it back in sync.
      await Promise.all(ALL_FOUR.map((index) => cluster.start(index)));
      await cluster.waitUntilCaughtUp(ALL_FOUR, 20_000);
      const killedAtMs = performance.now();
      await cluster.killTogether(ORIGINAL);
      // Replica 3 is in the recorded in-sync set, so once the others are gone it may take over alone.
      const survivor = new ChatClient({ servers: [cluster.clientAddress(3)], tls: 'insecure', sessionToken: alice });
      try {
        const message = await survivor.sendMessage('bob', 'after the originals died');
        const survivorAckMs = performance.now() - killedAtMs;
        note(`a: after SIGKILL of replicas 0, 1 and 2, replica 3 alone acknowledged a new write in ${survivorAckMs.toFixed(0)} ms`);
        expect(survivorAckMs).toBeLessThan(SOLE_SURVIVOR_LIMIT_MS);
        const alone = await cluster.status(3);
        expect({ role: alone?.role, inSync: alone?.inSync }).toEqual({ role: 'leader', inSync: [3] });
        await expectAllReadable(
          [cluster.clientAddress(3)],
          alice,
          [...acknowledged, { id: message.id, body: message.body, startedAtMs: killedAtMs, ackedAtMs: performance.now() }],
        );
      } finally {
        survivor.close();
      }
    },
    4,
  );

  scenario(
    'b. a follower whose data directory is wiped rejoins from a snapshot and is in sync again, with equal digests',
    120_000,
    async (cluster) => {
      // A seeded log longer than one append, so that an empty replica is sent a snapshot.
      await seedDatabase(cluster.databasePath(0), { members: members(ORIGINAL, cluster), messageCount: 2000 });
      await cluster.createStoreRecord(seededRecord(members(ORIGINAL, cluster)));
      await Promise.all(ORIGINAL.map((index) => cluster.start(index, ORIGINAL)));
      // Replica 0 leads at once (the seeded in-sync set is {0}); 1 and 2 catch up from its snapshot while
      // writes go on (writes also keep re-admission going; see test d).
      const alice = await logInAlice(cluster.clientServers(ORIGINAL), false);
      stream = new SendStream(cluster.clientServers(ORIGINAL), alice, 'wipe', 2);
      const leader = (await cluster.waitForInSyncSet(ORIGINAL, 30_000)).ordinal;
      await stream.awaitMore(20);

      const wiped = ORIGINAL.find((index) => index !== leader)!;
      await cluster.kill(wiped);
      cluster.wipe(wiped);
      const restartedAtMs = performance.now();
      await cluster.start(wiped);
      const installed = await cluster.waitForLog(
        wiped,
        (line) => line.incarnation === 2 && line.msg === 'installed a snapshot',
        { description: `the wiped replica ${wiped} installs a snapshot`, timeoutMs: 20_000 },
      );
      await cluster.waitForInSyncSet(ORIGINAL, 20_000);
      const inSyncAfterMs = performance.now() - restartedAtMs;
      await stream.awaitMore(20);
      await stream.stop();
      expect(stream.failures).toEqual([]);
      const acknowledged = [...stream.acknowledged];
      stream = undefined;
      note(
        `b: wiped follower ${wiped} (leader ${leader}) installed a snapshot at index ${String(installed.lastIndex)} and was in sync ` +
          `${inSyncAfterMs.toFixed(0)} ms after its restart; longest send ` +
          `${Math.max(...acknowledged.map((ack) => ack.ackedAtMs - ack.startedAtMs)).toFixed(0)} ms`,
      );
      await expectAllReadable(cluster.clientServers(ORIGINAL), alice, acknowledged);
      await cluster.waitUntilCaughtUp(ORIGINAL);
      await stopAndCompareDigests(cluster, ORIGINAL);
      for (const index of ORIGINAL) {
        const ids = cluster.messageIds(index);
        expect(acknowledged.filter((ack) => !ids.has(ack.id)).map((ack) => `replica ${index} lacks ${ack.body}`)).toEqual([]);
      }
    },
    3,
  );

  scenario(
    'c. an operator removes a follower: out of the configuration, its death stalls no write, and restarted it says it was removed',
    60_000,
    async (cluster) => {
      await Promise.all(ORIGINAL.map((index) => cluster.start(index, ORIGINAL)));
      const leader = (await cluster.waitUntilCaughtUp(ORIGINAL)).ordinal;
      const removed = leader === 2 ? 1 : 2;
      const remaining = ORIGINAL.filter((index) => index !== removed);
      const follower = ORIGINAL.find((index) => index !== leader)!;
      const alice = await logInAlice(cluster.clientServers(ORIGINAL), true);
      stream = new SendStream(cluster.clientServers(ORIGINAL), alice, 'remove', 2);
      await stream.awaitMore(20);

      // A follower sends the operator to the leader; the leader wants the admin token.
      const redirected = await callRemoveMember(cluster.clientAddress(follower), removed, ADMIN_TOKEN);
      expect(redirected).toEqual({ code: grpc.status.UNAVAILABLE, details: expect.any(String), leaderAddress: cluster.clientAddress(leader) });
      const refused = await callRemoveMember(cluster.clientAddress(leader), removed, 'not-the-admin-token-at-all');
      expect(refused.code).toBe(grpc.status.PERMISSION_DENIED);
      const requestedAtMs = performance.now();
      const accepted = await callRemoveMember(cluster.clientAddress(leader), removed, ADMIN_TOKEN);
      expect(accepted.code).toBe(grpc.status.OK);

      await cluster.waitForLeader(
        `the leader's configuration no longer includes replica ${removed}`,
        (status) => !status.members.includes(removed) && JSON.stringify(status.inSync) === JSON.stringify(remaining),
        { among: remaining },
      );
      const removedAfterMs = performance.now() - requestedAtMs;
      await stream.awaitMore(10);

      const killedAtMs = performance.now();
      await cluster.kill(removed);
      await stream.awaitMore(50);
      const longestCallMs = stream.longestCallMs(killedAtMs);
      const longestGapMs = stream.longestGapMs(killedAtMs, performance.now());
      note(
        `c: replica ${removed} left the configuration ${removedAfterMs.toFixed(0)} ms after RemoveMember; after its SIGKILL the ` +
          `longest send took ${longestCallMs.toFixed(0)} ms, longest gap between acknowledgements ${longestGapMs.toFixed(0)} ms`,
      );
      expect(longestCallMs).toBeLessThan(AFTER_REMOVAL_CALL_LIMIT_MS);
      expect(longestGapMs).toBeLessThan(AFTER_REMOVAL_CALL_LIMIT_MS);

      // Restarted on its disk, the removed replica sees a configuration without itself and says so.
      await cluster.start(removed);
      const readiness = await pollUntil(
        `the removed replica ${removed}'s /readyz says it was removed`,
        async () => {
          const answer = await cluster.readyz(removed).catch(() => undefined);
          return answer !== undefined && answer.status === 503 && REMOVED.test(answer.body) ? answer : undefined;
        },
        10_000,
      );
      expect(readiness.body).toMatch(/not a member/);
      const status = await pollUntil(
        `the removed replica ${removed}'s status says it was removed`,
        async () => {
          const answer = await cluster.status(removed);
          return answer !== undefined && REMOVED.test(answer.waitingReason ?? '') ? answer : undefined;
        },
        10_000,
      );
      expect(status.role).toBe('follower');
      // The cluster goes on without it.
      await stream.awaitMore(20);
      await stream.stop();
      expect(stream.failures).toEqual([]);
      const acknowledged = [...stream.acknowledged];
      stream = undefined;
      await expectAllReadable(cluster.clientServers(remaining), alice, acknowledged);
      const final = await cluster.waitUntilCaughtUp(remaining);
      expect(final.members).toEqual(remaining);
      expect(cluster.logs(removed).filter((line) => line.incarnation === 2 && line.msg === 'became the leader')).toEqual([]);
      await stopAndCompareDigests(cluster, remaining);
    },
    3,
    { REPLICHAT_ADMIN_TOKEN: ADMIN_TOKEN },
  );

  scenario(
    'c. an operator removes the leader: it hands leadership over to another member and writes go on',
    60_000,
    async (cluster) => {
      await Promise.all(ORIGINAL.map((index) => cluster.start(index, ORIGINAL)));
      const leader = (await cluster.waitUntilCaughtUp(ORIGINAL)).ordinal;
      const remaining = ORIGINAL.filter((index) => index !== leader);
      const alice = await logInAlice(cluster.clientServers(ORIGINAL), true);
      stream = new SendStream(cluster.clientServers(ORIGINAL), alice, 'handover', 2);
      await stream.awaitMore(20);

      const requestedAtMs = performance.now();
      expect((await callRemoveMember(cluster.clientAddress(leader), leader, ADMIN_TOKEN)).code).toBe(grpc.status.OK);
      const successor = await cluster.waitForLeader(
        `another member leads a configuration without replica ${leader}`,
        (status) => !status.members.includes(leader),
        { among: remaining },
      );
      const handedOverMs = performance.now() - requestedAtMs;
      expect(remaining).toContain(successor.ordinal);
      const afterHandOverMs = performance.now();
      await stream.awaitMore(30);
      await stream.stop();
      expect(stream.failures).toEqual([]);
      const acknowledged = [...stream.acknowledged];
      stream = undefined;
      note(
        `c: leader ${leader} removed itself; replica ${successor.ordinal} led without it ${handedOverMs.toFixed(0)} ms after ` +
          `RemoveMember; longest send across the hand-over ` +
          `${Math.max(...acknowledged.filter((ack) => ack.ackedAtMs > requestedAtMs).map((ack) => ack.ackedAtMs - ack.startedAtMs)).toFixed(0)} ms`,
      );
      expect(acknowledged.some((ack) => ack.startedAtMs > afterHandOverMs)).toBe(true);

      // The former leader, still running, stepped down and says it is no longer a member.
      const former = await pollUntil(
        `the former leader ${leader} says it was removed`,
        async () => {
          const status = await cluster.status(leader);
          return status !== undefined && status.role === 'follower' && REMOVED.test(status.waitingReason ?? '') ? status : undefined;
        },
        10_000,
      );
      expect(former.role).toBe('follower');
      await expectAllReadable(cluster.clientServers(remaining), alice, acknowledged);
      await cluster.waitUntilCaughtUp(remaining);
      await stopAndCompareDigests(cluster, remaining);
    },
    3,
    { REPLICHAT_ADMIN_TOKEN: ADMIN_TOKEN },
  );

  scenario(
    'd. the leader is SIGKILLed in the middle of a snapshot transfer to a joiner: the joiner ends in sync with the new leader',
    120_000,
    async (cluster) => {
      const seeded = await seedDatabase(cluster.databasePath(0), {
        members: members(ORIGINAL, cluster),
        messageCount: SEEDED_MESSAGES,
        bodyBytes: SEEDED_BODY_BYTES,
      });
      await cluster.createStoreRecord(seededRecord(members(ORIGINAL, cluster)));
      await Promise.all(ORIGINAL.map((index) => cluster.start(index, ORIGINAL)));
      // Replica 0 leads at once: it is the whole in-sync set of the seeded configuration.
      const alice = await logInAlice(cluster.clientServers(ORIGINAL), false);
      // Writes go on from here to the end. (They also keep re-admission going: in a cluster without writes,
      // a follower that has caught up can wait for ever to re-enter the in-sync set; see the report.)
      stream = new SendStream(cluster.clientServers(ORIGINAL), alice, 'transfer', 2);
      // 1 and 2 start empty and catch up from replica 0's snapshot.
      await cluster.waitForInSyncSet(ORIGINAL, 60_000);
      await stream.awaitMore(10);

      await cluster.start(3, ALL_FOUR);
      // Killed once bytes have arrived and before they all have: in the middle of the transfer. The replica
      // killed is the one the joiner fetches from (its latest "fetching a snapshot" line names it), and only
      // while the leader it follows has a follower in sync: on a loaded machine, leadership moved between the
      // waits above and this point, once to a leader alone in its in-sync set, and once while the joiner
      // went on fetching from the deposed leader; killing a replica chosen earlier proved nothing then.
      const fetchSource = (): number | undefined => {
        const line = cluster.logs(3).filter((logged) => logged.msg?.startsWith('fetching a snapshot:') === true).at(-1);
        return typeof line?.from === 'number' ? line.from : undefined;
      };
      const transferring = await pollUntil(
        'the joiner is receiving a snapshot while its leader has an in-sync follower',
        async () => {
          const status = await cluster.status(3);
          if (status === undefined || !status.snapshotting || status.snapshotBytesReceived === 0 || status.leaderOrdinal === null) return undefined;
          const leading = await cluster.status(status.leaderOrdinal);
          return leading !== undefined && leading.role === 'leader' && leading.inSync.length >= 2 && fetchSource() !== undefined ? status : undefined;
        },
        30_000,
        5,
      );
      const leader = fetchSource()!;
      await cluster.kill(leader);
      const killedAtMs = performance.now();
      const survivors = ALL_FOUR.filter((index) => index !== leader);
      const failedFetch = await cluster.waitForLog(
        3,
        (line) => line.msg === 'fetching the snapshot failed; will retry when asked again',
        { description: 'the joiner reports the interrupted transfer', timeoutMs: 10_000 },
      );
      const newLeader = await cluster.waitForInSyncSet(survivors, 60_000);
      const inSyncAfterMs = performance.now() - killedAtMs;
      const installed = cluster.logs(3).find((line) => line.msg === 'installed a snapshot');
      expect(installed).toBeDefined();
      await stream.awaitMore(10);
      await stream.stop();
      expect(stream.failures).toEqual([]);
      const acknowledged = [...stream.acknowledged];
      stream = undefined;
      note(
        `d: seeded ${SEEDED_MESSAGES} messages (index ${seeded.lastIndex}) in ${seeded.seconds.toFixed(1)} s; killed replica ${leader}, the joiner's snapshot source, with ` +
          `${transferring.snapshotBytesReceived} of ${transferring.snapshotBytesTotal} snapshot bytes received by the joiner ` +
          `(its fetch failed: ${String((failedFetch.err as { message?: unknown } | undefined)?.message)}); new leader ${newLeader.ordinal}; ` +
          `joiner in sync ${inSyncAfterMs.toFixed(0)} ms after the kill, its snapshot installed in ` +
          `${Number(installed!.durationSeconds).toFixed(2)} s; leaders: ${cluster.leaderHistory()}`,
      );
      expect(newLeader.ordinal).not.toBe(leader);
      await expectAllReadable(cluster.clientServers(survivors), alice, acknowledged);
      await cluster.waitUntilCaughtUp(survivors);
      await stopAndCompareDigests(cluster, survivors);
    },
    4,
  );
}, clusterUnavailableReason);
