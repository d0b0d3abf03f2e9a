/**
 * The simulation's own fault primitives, checked without any replica: a paused process's events wait and
 * run in order when it resumes, a dead process's events never run, timers follow the process's clock rate,
 * and a store swap whose caller is paused takes effect at once while its answer waits for the resume (the
 * window between a decision and its effect that scenario A needs). If these were wrong, every simulated
 * run would test something other than what it claims.
 */
import { Random } from './simulation/random.js';
import { Scheduler, SimulatedProcess } from './simulation/scheduler.js';
import { SimulatedClock } from './simulation/simulated-clock.js';
import { SimulatedConfigurationStore, STORE_CALL_TIMEOUT_MS } from './simulation/simulated-configuration-store.js';

const record = (epoch: number, leader: number) => ({
  epoch,
  leader,
  members: [0, 1].map((ordinal) => ({ ordinal, address: `replica-${ordinal}` })),
  inSync: [leader],
  removed: [],
  clusterId: 'scaffolding',
});

test('a paused process holds its events until it resumes; a dead one loses them', async () => {
  const scheduler = new Scheduler();
  const paused = new SimulatedProcess('paused', 0);
  const dead = new SimulatedProcess('dead', 0);
  const ran: string[] = [];
  scheduler.schedule(10, 'a', () => ran.push(`a@${scheduler.nowMs}`), paused);
  scheduler.schedule(20, 'b', () => ran.push(`b@${scheduler.nowMs}`), paused);
  scheduler.schedule(15, 'c', () => ran.push(`c@${scheduler.nowMs}`), dead);
  scheduler.schedule(5, 'free', () => ran.push(`free@${scheduler.nowMs}`));
  scheduler.pause(paused);
  scheduler.kill(dead, 'test');
  await scheduler.runUntil(100);
  expect(ran).toEqual(['free@5']);
  scheduler.resume(paused);
  await scheduler.runUntil(100);
  expect(ran).toEqual(['free@5', 'a@100', 'b@100']);
});

test('a clock restarts near its origin and runs its timers at its own rate', async () => {
  const scheduler = new Scheduler();
  await scheduler.runUntil(5000);
  const process = new SimulatedProcess('fast', scheduler.nowMs);
  const clock = new SimulatedClock(scheduler, process, { originMs: 30, rate: 1.05, wallClockAtStartMs: 1000 });
  expect(clock.nowMs()).toBe(30);
  let firedAtLocalMs: number | undefined;
  clock.setTimeout(() => {
    firedAtLocalMs = clock.nowMs();
  }, 105);
  await scheduler.runUntil(5099);
  expect(firedAtLocalMs).toBeUndefined();
  await scheduler.runUntil(5101);
  expect(firedAtLocalMs).toBeCloseTo(135, 6);
});

test('a swap takes effect while its caller is paused, and the caller hears of it only after resuming', async () => {
  const scheduler = new Scheduler();
  const store = new SimulatedConfigurationStore(scheduler, new Random(1), () => undefined);
  const process = new SimulatedProcess('caller', 0);
  const client = store.clientFor(1, process);
  store.onSwapApplied = () => scheduler.pause(process);
  let outcome: unknown;
  void client.compareAndSwap(null, record(1, 1)).then((value) => {
    outcome = value;
  });
  await scheduler.runUntil(500);
  expect(store.peek()?.record.leader).toBe(1);
  expect(outcome).toBeUndefined();
  scheduler.resume(process);
  await scheduler.runUntil(600);
  expect(outcome).toMatchObject({ swapped: true });
});

test('a lost store answer leaves the swap done and the caller with a timeout', async () => {
  const scheduler = new Scheduler();
  const store = new SimulatedConfigurationStore(scheduler, new Random(2), () => undefined);
  store.faults.answerLossProbability = 1;
  const client = store.clientFor(0, new SimulatedProcess('caller', 0));
  let failure: unknown;
  client.compareAndSwap(null, record(1, 0)).catch((error: unknown) => {
    failure = error;
  });
  await scheduler.runUntil(STORE_CALL_TIMEOUT_MS + 1);
  expect(store.peek()?.record.epoch).toBe(1);
  expect(failure).toMatchObject({ code: 'TIMEOUT' });
});
