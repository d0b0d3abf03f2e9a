import { ClusterSimulation } from './simulation/cluster-simulation.js';
test('trace', () => { new ClusterSimulation({ seed: Number(process.env.SIMULATION_SEED) }).run(); });
