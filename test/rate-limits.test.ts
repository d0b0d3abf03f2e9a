/**
 * Proves the login and sign-up limits on a real server (src/api/rate-limiter.ts):
 * - a flood of wrong-password logins at one account, 16 at a time from one address, is cut to the
 *   username bucket's size plus its refill: the rest is RESOURCE_EXHAUSTED, with the time to retry in the
 *   message and in the `retry-after-ms` trailing metadata;
 * - meanwhile other users, from another address (a TCP relay bound to 127.0.0.2), log in successfully;
 * - one address spraying many usernames, and one address signing up many accounts, are throttled too.
 * The token buckets themselves and the cap on concurrent scrypt computations are checked with a fake clock
 * and fake tasks at the end. Every attempt is a real gRPC call; nothing about speed is asserted.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chatServiceClientConstructor } from '../src/api/proto.js';
import { ConcurrencyLimit, TokenBuckets } from '../src/api/rate-limiter.js';
import { RETRY_AFTER_METADATA_KEY } from '../src/api/status-mapping.js';
import { type ServerProcess, startServer } from './support/processes.js';

const ClientConstructor = chatServiceClientConstructor();

interface Outcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly retryAfterMs: string | undefined;
}

function call(client: grpc.Client, method: string, request: Record<string, unknown>): Promise<Outcome> {
  return new Promise((resolve) => {
    (client as unknown as Record<string, Function>)[method]!.call(
      client,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + 60_000 },
      (error: grpc.ServiceError | null) => {
        if (error === null) return resolve({ code: grpc.status.OK, details: '', retryAfterMs: undefined });
        const retryAfter = error.metadata?.get(RETRY_AFTER_METADATA_KEY)[0];
        resolve({ code: error.code, details: error.details, retryAfterMs: typeof retryAfter === 'string' ? retryAfter : undefined });
      },
    );
  });
}

let directory: string;
let server: ServerProcess;
let relay: Server;
let direct: grpc.Client;
let relayed: grpc.Client;
let requestCounter = 0;
const requestId = (): string => `rate-${++requestCounter}`;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-rate-limits-'));
  server = await startServer({ dataDirectory: join(directory, 'data') });
  const [host, port] = [server.address.slice(0, server.address.lastIndexOf(':')), Number(server.address.split(':').pop())];
  // Connections through the relay reach the server from 127.0.0.2: another client address on one machine.
  relay = createServer((inbound) => {
    const outbound = createConnection({ host, port, localAddress: '127.0.0.2' });
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const relayPort = (relay.address() as { port: number }).port;
  direct = new ClientConstructor(server.address, grpc.credentials.createInsecure());
  relayed = new ClientConstructor(`127.0.0.1:${relayPort}`, grpc.credentials.createInsecure());
  for (const username of ['victim', 'alice', 'bob']) {
    const created = await call(relayed, 'CreateAccount', { requestId: requestId(), username, password: `${username} password` });
    expect([username, grpc.status[created.code]]).toEqual([username, 'OK']);
  }
}, 60_000);

afterAll(async () => {
  direct.close();
  relayed.close();
  await new Promise((resolve) => relay.close(resolve));
  expect(await server.stop()).toBe(0);
  rmSync(directory, { recursive: true, force: true });
});

test('a login flood at one account is throttled with a retry time, while other users from another address log in', async () => {
  const startedAt = Date.now();
  const outcomes: Outcome[] = [];
  const attacker = async (): Promise<void> => {
    for (let attempt = 0; attempt < 6; attempt += 1) {
      outcomes.push(await call(direct, 'Login', { requestId: requestId(), username: 'victim', password: `guess ${attempt}` }));
    }
  };
  const flood = Promise.all(Array.from({ length: 16 }, attacker));
  // Other users log in while the flood runs; each must succeed.
  const others: Outcome[] = [];
  for (const username of ['alice', 'bob', 'alice', 'bob']) {
    others.push(await call(relayed, 'Login', { requestId: requestId(), username, password: `${username} password` }));
  }
  await flood;
  const elapsedSeconds = (Date.now() - startedAt) / 1000;

  expect(others.map((outcome) => grpc.status[outcome.code])).toEqual(['OK', 'OK', 'OK', 'OK']);
  const checked = outcomes.filter((outcome) => outcome.code === grpc.status.UNAUTHENTICATED);
  const throttled = outcomes.filter((outcome) => outcome.code === grpc.status.RESOURCE_EXHAUSTED);
  expect(checked.length + throttled.length).toBe(16 * 6);
  // The username bucket holds 10 and refills one every 6 s: that many guesses, no more, reached scrypt.
  expect(checked.length).toBeGreaterThanOrEqual(1);
  expect(checked.length).toBeLessThanOrEqual(10 + Math.ceil(elapsedSeconds / 6));
  for (const outcome of throttled) {
    expect(outcome.details).toMatch(/^too many login attempts for this username; retry in \d+ s$/);
    expect(Number(outcome.retryAfterMs)).toBeGreaterThan(0);
  }
}, 120_000);

test('one address trying many usernames is throttled by its address bucket', async () => {
  // All at once, as a spray would come: the address bucket (30, refilling 2 a second) decides at arrival.
  const outcomes = await Promise.all(
    Array.from({ length: 40 }, (_, index) =>
      call(direct, 'Login', { requestId: requestId(), username: `sprayed${index}`, password: 'a guess' }),
    ),
  );
  expect(outcomes.every((outcome) => ['UNAUTHENTICATED', 'RESOURCE_EXHAUSTED'].includes(grpc.status[outcome.code]))).toBe(true);
  const byAddress = outcomes.filter((outcome) => outcome.details.startsWith('too many login attempts from this address'));
  expect(byAddress.length).toBeGreaterThan(0);
  expect(byAddress.every((outcome) => outcome.code === grpc.status.RESOURCE_EXHAUSTED && Number(outcome.retryAfterMs) > 0)).toBe(true);
  // The other address is not affected.
  expect(grpc.status[(await call(relayed, 'Login', { requestId: requestId(), username: 'alice', password: 'alice password' })).code]).toBe('OK');
}, 120_000);

test('one address signing up many accounts is throttled', async () => {
  // All at once, so that the bucket (10, refilling one every 6 s) has no time to refill between them.
  const outcomes = await Promise.all(
    Array.from({ length: 14 }, (_, index) =>
      call(direct, 'CreateAccount', { requestId: requestId(), username: `signup${index}`, password: 'signup password' }),
    ),
  );
  const codes = outcomes.map((outcome) => grpc.status[outcome.code]).sort();
  expect(codes).toEqual([...Array(10).fill('OK'), ...Array(4).fill('RESOURCE_EXHAUSTED')]);
  for (const outcome of outcomes.filter((candidate) => candidate.code === grpc.status.RESOURCE_EXHAUSTED)) {
    expect(outcome.details).toMatch(/^too many sign-up attempts from this address; retry in \d+ s$/);
  }
}, 120_000);

describe('the building blocks', () => {
  test('a token bucket allows its capacity, then one per refill interval, and says how long to wait', () => {
    let nowMs = 0;
    const buckets = new TokenBuckets({ capacity: 3, refillPerSecond: 0.5 }, () => nowMs);
    expect([buckets.take('a'), buckets.take('a'), buckets.take('a')]).toEqual([0, 0, 0]);
    expect(buckets.take('a')).toBe(2000);
    expect(buckets.take('b')).toBe(0);
    nowMs = 1999;
    expect(buckets.take('a')).toBeGreaterThan(0);
    // 1.9 s more at 0.5 a second: just under two tokens, so one take succeeds and the next waits.
    nowMs = 3900;
    expect(buckets.take('a')).toBe(0);
    expect(buckets.take('a')).toBeGreaterThan(0);
  });

  test('the concurrency limit runs at most its size at once, queues a few, and refuses the rest', async () => {
    const limit = new ConcurrencyLimit(2, 1, 'password checks in progress');
    let running = 0;
    let mostRunning = 0;
    const releases: (() => void)[] = [];
    const task = (): Promise<void> =>
      new Promise<void>((resolve) => {
        running += 1;
        mostRunning = Math.max(mostRunning, running);
        releases.push(() => {
          running -= 1;
          resolve();
        });
      });
    const first = limit.run(task);
    const second = limit.run(task);
    const queued = limit.run(task);
    await expect(limit.run(task)).rejects.toThrow('too many password checks in progress; retry in 1 s');
    expect(limit.waitingCount).toBe(1);
    releases.shift()!();
    await first;
    // The queued task took the freed slot.
    await new Promise((resolve) => setImmediate(resolve));
    expect(releases.length).toBe(2);
    releases.splice(0).forEach((release) => release());
    await Promise.all([second, queued]);
    releases.splice(0).forEach((release) => release());
    expect(mostRunning).toBe(2);
  });
});
