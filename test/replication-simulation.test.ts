/**
 * Deterministic simulation of the replication protocol: the real ReplicaCore in three replicas with a
 * simulated clock (drifting), network (drops, delays, duplicates, reordering) and disk, under seeded
 * random crashes, restarts and pauses. After every step the invariants are checked (see
 * test/simulation/cluster-simulation.ts); after the faults stop, the cluster must elect a leader,
 * acknowledge new writes and converge to equal logs. A failure prints its seed; replay one seed with
 * `SIMULATION_SEED=<seed> npm run test:simulation`, or run many with `SIMULATION_SEEDS=5000 npm run test:simulation`.
 */
import { ClusterSimulation } from './simulation/cluster-simulation.js';

const singleSeed = process.env.SIMULATION_SEED;
const seedCount = Number(process.env.SIMULATION_SEEDS ?? 60);
const firstSeed = Number(process.env.SIMULATION_FIRST_SEED ?? 1);
const seeds =
  singleSeed !== undefined ? [Number(singleSeed)] : Array.from({ length: seedCount }, (_, n) => firstSeed + n);

test(`the protocol keeps its invariants and recovers under ${seeds.length} seeded fault schedules`, () => {
  let acknowledged = 0;
  let elections = 0;
  let snapshots = 0;
  for (const seed of seeds) {
    const result = new ClusterSimulation({ seed }).run();
    acknowledged += result.acknowledgedWrites;
    elections += result.elections;
    snapshots += result.snapshots;
  }
  // The schedules must exercise the protocol, not idle: writes, failovers and repairs all happen.
  expect(acknowledged).toBeGreaterThan(seeds.length * 10);
  expect(elections).toBeGreaterThan(seeds.length);
  if (seeds.length >= 20) expect(snapshots).toBeGreaterThan(0);
});
