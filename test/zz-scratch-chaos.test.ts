import { performance } from 'node:perf_hooks';
import { ChatClient } from '../src/cli/chat-client.js';
import { NetnsCluster, pollUntil } from './support/netns-cluster.js';

const PASSWORD = 'password12';
test('chaos', async () => {
  const cluster = await NetnsCluster.create({ prefix: `ch${process.pid.toString(36)}` });
  const acked: { id: string; body: string; started: number }[] = [];
  const failures: string[] = [];
  let running = true;
  try {
    await cluster.startAll();
    await cluster.waitUntilInSync();
    const setup = new ChatClient({ servers: cluster.clientServers(), tls: 'insecure' });
    await setup.createAccount('alice', PASSWORD);
    await setup.createAccount('bob', PASSWORD);
    const alice = (await setup.login('alice', PASSWORD)).sessionToken;
    setup.close();
    const clients = [{}, { deadlineMs: 300 }, {}, { deadlineMs: 700 }].map((o) => new ChatClient({ servers: cluster.clientServers(), tls: 'insecure', sessionToken: alice, ...o }));
    const loops = clients.map(async (client, n) => {
      for (let k = 0; running; k++) {
        const body = `c${n}.${k}`;
        const started = performance.now();
        try { const m = await client.sendMessage('bob', body); acked.push({ id: m.id, body, started }); }
        catch (e) { if (running) failures.push(`${body}: ${(e as Error).message}`); }
      }
    });
    const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 100000);
    let state = seed;
    const rand = () => { state = (state * 1103515245 + 12345) % 2147483648; return state / 2147483648; };
    console.log('seed', seed);
    const rounds = Number(process.env.CHAOS_ROUNDS ?? 12);
    for (let round = 0; round < rounds; round++) {
      const leader = await cluster.leader();
      const action = rand();
      const t = performance.now();
      let what: string;
      if (action < 0.35) { what = `SIGKILL leader ${leader}`; await cluster.kill(leader); }
      else if (action < 0.55) { const f = [0,1,2].filter(i => i !== leader)[Math.floor(rand()*2)]!; what = `SIGKILL follower ${f}`; await cluster.kill(f); }
      else if (action < 0.85) { const ms = 300 + Math.floor(rand() * 2500); what = `SIGSTOP leader ${leader} ${ms} ms`; cluster.pause(leader); await new Promise(r => setTimeout(r, ms)); cluster.resume(leader); }
      else { what = `SIGKILL all`; await cluster.killTogether([0,1,2]); }
      await new Promise(r => setTimeout(r, Math.floor(rand() * 800)));
      for (const i of [0,1,2]) if (!cluster.isRunning(i)) await cluster.start(i);
      await pollUntil(() => `acks after round ${round} (${what}); failures ${failures.slice(-2)}`, () => acked.filter(a => a.started > t).length >= 10, 20000);
      await cluster.waitForInSyncSet([0,1,2], 20000);
      console.log(`round ${round}: ${what}; acked ${acked.length}; failures ${failures.length}`);
    }
    running = false;
    await Promise.all(loops);
    clients.forEach(c => c.close());
    await cluster.waitUntilInSync();
    const reader = new ChatClient({ servers: cluster.clientServers(), tls: 'insecure', sessionToken: alice });
    const ids = new Map<string, string>(); let token = '';
    do { const p = await reader.listHistory({ pageSize: 500, pageToken: token }); for (const m of p.messages) ids.set(m.id, m.body); token = p.nextPageToken; } while (token);
    reader.close();
    const missing = acked.filter(a => ids.get(a.id) !== a.body);
    const bodies = [...ids.values()]; const dup = bodies.filter((b, i) => bodies.indexOf(b) !== i);
    console.log('acked', acked.length, 'stored', ids.size, 'missing', missing.length, 'dups', dup.length, 'failures', failures);
    expect(missing).toEqual([]);
    expect(dup).toEqual([]);
    expect(await cluster.stopAll()).toEqual([0,0,0]);
    const d = cluster.digests();
    expect(new Set(d).size).toBe(1);
    expect(cluster.problems()).toEqual([]);
  } catch (e) {
    console.log(cluster.describe(60));
    throw e;
  } finally {
    running = false;
    await cluster.destroy();
  }
}, 300000);
