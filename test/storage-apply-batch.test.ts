/**
 * Proves that the cheaper apply paths of ReplicaStore keep what the per-entry path gave: the log chain in
 * cluster_state is written once per outermost transaction, yet after every batch (a follower's
 * applyEntries, a leader's batch of client writes with a savepoint each, some rolled back) it is the chain
 * computed entry by entry over the entries actually logged; a send's result is built from the values
 * inserted, yet equals its row read back; the log text and chain text are those of the definitions; and a
 * leader's write opens no temporary file for its savepoint.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command, CommandResult, SendMessageCommand } from '../src/core/commands.js';
import { ChatError, NotFoundError } from '../src/core/errors.js';
import { canonicalCommand, commandChainText, storedCommandText } from '../src/storage/command-encoding.js';
import { type LogEntry, ReplicaStore } from '../src/storage/replica-store.js';
import { EnvelopeSequence, uuid } from './support/storage-commands.js';

let directory: string;
const envelopes = new EnvelopeSequence();
const envelope = (principal: string) => envelopes.envelope(principal);

function send(n: number, fields: Partial<SendMessageCommand> = {}): SendMessageCommand {
  return {
    kind: 'sendMessage',
    ...envelope('session:x'),
    messageId: uuid(n),
    sender: 'alice',
    recipient: 'bob',
    body: `message ${n}`,
    instant: n % 3 === 0,
    ...fields,
  };
}

/** The chain after `entries`, from the definition: each link hashes the previous one, the index and the canonical command. */
function chainOf(entries: readonly LogEntry[], start = ''): string {
  let chain = start;
  for (const entry of entries) {
    const text = JSON.stringify(canonicalCommand(entry.command));
    chain = createHash('sha256').update(`${chain}\n${entry.index}\n${text}`).digest('hex');
  }
  return chain;
}

function storedChain(store: ReplicaStore): string | undefined {
  return store.chat.clusterValue('log_chain');
}

/** The first entries of every test's log: the cluster and three accounts. */
function setUpEntries(): LogEntry[] {
  const commands: Command[] = [
    { kind: 'initializeCluster', clusterId: 'c', sessionSecretHex: 'ab'.repeat(32), timestampMs: envelopes.timestampMs },
    ...['alice', 'bob', 'carol'].map(
      (username): Command => ({ kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `h-${username}` }),
    ),
  ];
  return commands.map((command, position) => ({ index: position + 1, epoch: 1, command }));
}

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-apply-batch-'));
});
afterEach(() => {
  rmSync(directory, { recursive: true, force: true });
});

test("a follower's batch stores the chain computed entry by entry, in the same transaction", () => {
  const path = join(directory, 'follower.sqlite');
  const store = ReplicaStore.open(path);
  const first = setUpEntries();
  store.applyEntries(first);
  expect(storedChain(store)).toBe(chainOf(first));
  const batch: LogEntry[] = Array.from({ length: 64 }, (_, position) => ({
    index: first.length + position + 1,
    epoch: 2,
    command: send(position + 1, position % 5 === 0 ? { recipient: 'BOB' } : {}),
  }));
  store.applyEntries(batch);
  const all = [...first, ...batch];
  expect(store.logChainDigest).toBe(chainOf(all));
  expect(storedChain(store)).toBe(chainOf(all));
  for (const entry of all) expect(store.chainAt(entry.index)).toBe(chainOf(all.slice(0, entry.index)));

  // The same entries one transaction each give the same chain, row and digest.
  const reference = ReplicaStore.open(join(directory, 'reference.sqlite'));
  for (const entry of all) reference.applyEntry(entry);
  expect(storedChain(reference)).toBe(storedChain(store));
  expect(reference.stateDigest()).toBe(store.stateDigest());

  // A batch that fails part-way leaves neither its rows nor its chain, on disk or in the counters.
  const failing: LogEntry[] = [
    { index: all.length + 1, epoch: 2, command: send(100) },
    { index: all.length + 2, epoch: 2, command: send(101, { recipient: 'nobody' }) },
  ];
  expect(() => store.applyEntries(failing)).toThrow(NotFoundError);
  expect(store.lastIndex).toBe(all.length);
  expect(store.logChainDigest).toBe(chainOf(all));
  expect(storedChain(store)).toBe(chainOf(all));
  expect(store.chat.message(uuid(100))).toBeUndefined();
  store.close();

  // What a restart reads back is the chain of the last committed batch.
  const reopened = ReplicaStore.open(path);
  expect(reopened.lastIndex).toBe(all.length);
  expect(reopened.logChainDigest).toBe(chainOf(all));
  reopened.close();
  reference.close();
});

test("a leader's batch with a savepoint per write stores the chain of the writes that were not rolled back", () => {
  const path = join(directory, 'leader.sqlite');
  const store = ReplicaStore.open(path);
  const first = setUpEntries();
  store.applyEntries(first);
  const rejected: string[] = [];
  const results = new Map<string, CommandResult>();
  // As ReplicaNode.applySubmitted: one outer transaction, and appendAndApply (a savepoint) per client write,
  // where a ChatError rolls back that write only.
  const commands: Command[] = [];
  for (let n = 1; n <= 64; n += 1) {
    if (n % 10 === 0) commands.push(send(n, { recipient: 'nobody' }));
    else if (n % 10 === 5) commands.push({ kind: 'deleteMessages', ...envelope('session:y'), username: 'bob', messageIds: [uuid(999)] });
    else commands.push(send(n, n % 7 === 0 ? { recipient: 'Carol' } : {}));
  }
  store.atomically(() => {
    for (const command of commands) {
      try {
        const { result } = store.appendAndApply(2, command);
        results.set((command as { requestId: string }).requestId, result);
      } catch (error) {
        if (!(error instanceof ChatError)) throw error;
        rejected.push((command as { requestId: string }).requestId);
      }
    }
    // A nested transaction that appends and then fails takes its entry back with it, and the counters too.
    expect(() =>
      store.atomically(() => {
        store.appendAndApply(2, send(500));
        throw new NotFoundError('rolled back after its append');
      }),
    ).toThrow(NotFoundError);
    store.atomically(() => store.appendAndApply(2, send(501)));
  });
  expect(rejected).toHaveLength(12);
  const logged = store.entries(1, 1000);
  expect(logged).toHaveLength(first.length + 64 - 12 + 1);
  expect(logged.map((entry) => entry.index)).toEqual(logged.map((_, position) => position + 1));
  expect(logged.some((entry) => (entry.command as SendMessageCommand).messageId === uuid(500))).toBe(false);
  expect(store.lastIndex).toBe(logged.length);
  expect(store.logChainDigest).toBe(chainOf(logged));
  expect(storedChain(store)).toBe(chainOf(logged));
  for (const requestId of rejected) expect(store.chat.request(requestId)).toBeUndefined();

  // A follower applying what the leader logged reaches the same chain and state.
  const follower = ReplicaStore.open(join(directory, 'follower.sqlite'));
  follower.applyEntries(logged);
  expect(storedChain(follower)).toBe(storedChain(store));
  expect(follower.stateDigest()).toBe(store.stateDigest());
  follower.close();
  store.close();
  const reopened = ReplicaStore.open(path);
  expect(reopened.logChainDigest).toBe(chainOf(logged));
  reopened.close();
});

/** SQLite's temporary files (statement journals among them) are named etilqs_… and unlinked at once. */
function openTemporaryFiles(): string[] {
  const names: string[] = [];
  for (const descriptor of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${descriptor}`);
      if (target.includes('etilqs_')) names.push(target);
    } catch {
      // The descriptor was closed between the listing and the read (readdir's own, for one).
    }
  }
  return names;
}

test("a leader's write keeps its savepoint's journal in memory, not in a temporary file", () => {
  // A savepoint's statement journal holds the pages the write changes. With 16 KiB pages a send changes
  // about eight (message, its three indexes, request, its index, log, chain): 128 KiB, past the 64 KiB
  // SQLite keeps in memory by default, so each write created, wrote and unlinked a temporary file.
  const store = ReplicaStore.open(join(directory, 'leader.sqlite'));
  store.applyEntries(setUpEntries());
  for (let n = 1; n <= 50; n += 1) store.atomically(() => store.appendAndApply(2, send(n)));
  let seenInsideWrite: string[] | undefined;
  store.atomically(() => {
    store.appendAndApply(2, send(51));
    seenInsideWrite = openTemporaryFiles();
  });
  expect(seenInsideWrite).toEqual([]);
  store.close();
});

test('the chains of the most recent 4096 entries are remembered, and no older ones', () => {
  const store = ReplicaStore.open(':memory:');
  const all = setUpEntries();
  store.applyEntries(all);
  for (let batch = 0; batch < 21; batch += 1) {
    const entries: LogEntry[] = Array.from({ length: 200 }, (_, position) => ({
      index: all.length + position + 1,
      epoch: 1,
      command: send(all.length + position + 1),
    }));
    store.applyEntries(entries);
    all.push(...entries);
  }
  let chain = '';
  const chains = all.map((entry) => (chain = chainOf([entry], chain)));
  const last = store.lastIndex;
  expect(last).toBe(4204);
  for (let index = 1; index <= last; index += 1) {
    expect(store.chainAt(index)).toBe(index > last - 4096 ? chains[index - 1] : undefined);
  }
  expect(store.chainAt(0)).toBeUndefined();
  expect(store.chainAt(last + 1)).toBeUndefined();
  store.close();
});

test("appends inside the caller's own transaction still store the chain", () => {
  // test/support/membership-cluster.ts seeds a database this way: database.transaction around appendAndApply.
  const store = ReplicaStore.open(join(directory, 'seeded.sqlite'));
  store.database.transaction(() => {
    for (const entry of setUpEntries()) store.appendAndApply(1, entry.command);
    for (let n = 1; n <= 10; n += 1) store.appendAndApply(1, send(n));
  })();
  const logged = store.entries(1, 1000);
  expect(logged).toHaveLength(14);
  expect(storedChain(store)).toBe(chainOf(logged));
  store.close();
});

test('a send returns exactly the message row that is read back', () => {
  const store = ReplicaStore.open(join(directory, 'send.sqlite'));
  store.applyEntries(setUpEntries());
  const sends: SendMessageCommand[] = [
    send(1, { instant: false }),
    send(2, { instant: true }),
    // The message names the recipient's account as it was registered.
    send(3, { recipient: 'BoB' }),
    send(4, { body: 'emoji 😀, a combining accent e\u0301 and a NUL \u0000 in the middle' }),
    // A lone surrogate does not survive UTF-8: the row holds U+FFFD, and the result must say so too.
    send(5, { body: 'lone \ud800 surrogate' }),
    send(6, { body: 'x'.repeat(10_000), sender: 'carol', recipient: 'alice' }),
  ];
  for (const command of sends) {
    const { entry, result } = store.appendAndApply(1, command);
    const message = (result as CommandResult<'sendMessage'>).message;
    const row = store.chat.message(command.messageId);
    expect(row).toBeDefined();
    expect(message).toStrictEqual(row);
    expect(Object.keys(message)).toEqual(Object.keys(row!));
    expect(message.sequence).toBe(entry.index);
    expect(message.delivered).toBe(false);
    // The replay of the request rebuilds the same result from the row.
    expect(store.chat.request(command.requestId)?.result).toStrictEqual({ message });
  }
  expect(store.chat.message(uuid(3))?.recipient).toBe('bob');
  expect(store.chat.message(uuid(5))?.body).not.toBe(sends[4]!.body);
  // Every entry reads back as the command that was appended, the changed body included.
  const logged = store.entries(5, 100);
  expect(logged.map((entry) => entry.command)).toEqual(sends.map((command) => canonicalCommand(command)));
  store.close();
});

test('the chain text is the canonical command, whatever the order of its keys', () => {
  const base = send(1);
  const shuffled = Object.fromEntries(Object.entries(base).reverse()) as unknown as Command;
  const withExtra = { ...base, extra: 1 } as unknown as Command;
  const withPrototypeName = JSON.parse(JSON.stringify({ ...base, constructor: 'x', toString: 'y' })) as Command;
  const withProto = JSON.parse(`${JSON.stringify(base).slice(0, -1)},"__proto__":{"a":1}}`) as Command;
  const withIntegerKey = { ...base, 7: 'seven' } as unknown as Command;
  const missingKey = { ...base, instant: undefined } as unknown as Command;
  const login: Command = { kind: 'login', ...envelope('user:bob'), username: 'bob', sessionId: 'f'.repeat(32), expiresAtMs: 5 };
  const loginShuffled = Object.fromEntries(Object.entries(login).reverse()) as unknown as Command;
  const configuration: Command = { kind: 'configuration', configuration: { members: [], inSync: [] }, timestampMs: 1 };
  for (const command of [base, shuffled, withExtra, withPrototypeName, withProto, withIntegerKey, missingKey, login, loginShuffled, configuration]) {
    expect(commandChainText(command)).toBe(JSON.stringify(canonicalCommand(command)));
  }
  expect(commandChainText(shuffled)).toBe(commandChainText(base));
});

test('the stored text leaves out exactly the envelope and the fields the message row holds', () => {
  // The definition, as it was first written: a copy of the command with those keys deleted.
  const reference = (command: Command, result: CommandResult): string => {
    if (command.kind === 'initializeCluster' || command.kind === 'configuration') return JSON.stringify(command);
    const stored: Record<string, unknown> = { ...command };
    for (const key of ['requestId', 'principal', 'fingerprint', 'timestampMs']) delete stored[key];
    if (command.kind === 'sendMessage') {
      const message = (result as CommandResult<'sendMessage'>).message;
      if (message.id === command.messageId) delete stored.messageId;
      if (message.sender === command.sender) delete stored.sender;
      if (message.body === command.body) delete stored.body;
      if (message.instant === command.instant) delete stored.instant;
    }
    return JSON.stringify(stored);
  };
  const command = send(1, { instant: true });
  const message = {
    id: command.messageId, sequence: 9, sender: command.sender, recipient: 'bob', body: command.body,
    sentAtMs: command.timestampMs, delivered: false, instant: true,
  };
  const cases: [Command, CommandResult][] = [
    [command, { message }],
    [command, { message: { ...message, body: 'changed' } }],
    [command, { message: { ...message, instant: false, sender: 'someone' } }],
    [{ ...command, extra: [1, 2] } as unknown as Command, { message }],
    [Object.fromEntries(Object.entries(command).reverse()) as unknown as Command, { message }],
    [{ kind: 'deleteAccount', ...envelope('session:a'), username: 'alice' }, {}],
    [{ kind: 'initializeCluster', clusterId: 'c', sessionSecretHex: 'ab'.repeat(32), timestampMs: 3 }, {}],
  ];
  for (const [each, result] of cases) expect(storedCommandText(each, result)).toBe(reference(each, result));
});
