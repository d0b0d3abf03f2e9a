/**
 * What the driver (src/node/replica-node.ts) does with several peer messages that arrive in one turn of
 * the event loop: it carries out the core's output once, at the end of the turn, so that their entries are
 * persisted in one transaction. A real ReplicaNode on a real SQLite file, with hand-driven seams: a clock
 * whose deferred callbacks run when the test says, and a transport that records what is sent.
 *
 * Found by the netns suite: an append asking for a digest, followed in the same turn by another append,
 * made the follower stop on "a digest is taken at the last index", because the digest was filled in
 * after both appends were persisted. The digest must be the chain value at the index the reply names.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Command } from '../src/core/commands.js';
import type { AppendMessage, AppendReplyMessage, PeerMessage } from '../src/core/replication/messages.js';
import { DEFAULT_REPLICATION_TIMINGS } from '../src/core/replication/replica-core.js';
import { MemoryConfigurationStore } from '../src/configuration/memory-configuration-store.js';
import { ReplicaNode } from '../src/node/replica-node.js';
import type { Clock, TimerHandle } from '../src/node/seams.js';
import { ReplicaStore } from '../src/storage/replica-store.js';

const members = [
  { ordinal: 0, address: 'replica-0:7000' },
  { ordinal: 1, address: 'replica-1:7000' },
];
const configuration = { members, inSync: [0, 1] };

function command(index: number): Command {
  if (index === 1) return { kind: 'initializeCluster', clusterId: 'turn-test', sessionSecretHex: 'ab'.repeat(32), timestampMs: 1000 };
  return { kind: 'configuration', configuration, timestampMs: 1000 + index };
}

function append(prevIndex: number, count: number, requestDigest: boolean): AppendMessage {
  return {
    type: 'append', from: 0, epoch: 1, prevIndex, prevEpoch: prevIndex === 0 ? 0 : 1,
    entries: Array.from({ length: count }, (_, position) => {
      const index = prevIndex + 1 + position;
      const entryCommand = command(index);
      return {
        index,
        epoch: 1,
        command: entryCommand,
        ...(entryCommand.kind === 'configuration' ? { configuration } : { initialize: true as const }),
      };
    }),
    commitIndex: 0, sentAtMs: 5, leaderIncarnation: 1, requestDigest,
  };
}

let directory: string;
beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-turn-'));
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

test('two appends in one turn are persisted together, and a reply\'s digest is the chain at the index it names', () => {
  const deferred: (() => void)[] = [];
  let timerId = 0;
  const clock: Clock = {
    nowMs: () => 100,
    wallClockMs: () => 1_796_000_000_000,
    setTimeout: (): TimerHandle => ({ timerId: (timerId += 1) }),
    clearTimeout: () => undefined,
    defer: (callback) => void deferred.push(callback),
  };
  const sent: PeerMessage[] = [];
  const node = new ReplicaNode(
    { ordinal: 1, peers: members, timings: DEFAULT_REPLICATION_TIMINGS, logRetentionEntries: 10_000, dataDirectory: join(directory, 'follower'), clientAddress: 'replica-1:8000' },
    {
      clock,
      transport: { send: (_address, message) => void sent.push(message), fetchSnapshot: () => Promise.reject(new Error('no snapshots here')) },
      configurationStore: new MemoryConfigurationStore(),
      fatal: (error) => {
        throw error;
      },
    },
    pino({ level: 'silent' }),
    new Proxy({}, { get: () => () => undefined }) as never,
  );
  try {
    node.start();
    sent.length = 0;
    node.onPeerMessage(append(0, 2, true), '');
    node.onPeerMessage(append(2, 1, false), '');
    // Nothing is persisted or sent before the turn ends.
    expect(node.lastIndex).toBe(0);
    expect(sent.filter((message) => message.type === 'appendReply')).toEqual([]);
    while (deferred.length > 0) deferred.shift()!();
    expect(node.lastIndex).toBe(3);
    const replies = sent.filter((message): message is AppendReplyMessage => message.type === 'appendReply');
    expect(replies.map((reply) => [reply.ok, reply.matchIndex])).toEqual([
      [true, 2],
      [true, 3],
    ]);
    // The same two entries applied to a fresh store give the chain value the first reply must carry.
    const reference = ReplicaStore.open(join(directory, 'reference.sqlite'));
    try {
      reference.applyEntries([1, 2].map((index) => ({ index, epoch: 1, command: command(index) })));
      expect(replies[0]!.digest).toEqual({ index: 2, value: reference.logChainDigest });
    } finally {
      reference.close();
    }
  } finally {
    node.stop();
  }
});
