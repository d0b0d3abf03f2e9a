/**
 * The monitoring of replichat, checked against a real server and the real promtool (Debian's prometheus
 * package):
 * - `promtool check metrics` lints the /metrics text of a real `replichat server` process that has served
 *   a few calls: no replichat metric breaks Prometheus's naming rules;
 * - every metric that the Grafana dashboard's queries and the alerts name is one that server exports
 *   (read from its /metrics output, not from a list), and every dashboard query is valid PromQL;
 * - `promtool test rules` passes the alerts' unit tests in test/monitoring/, and those tests see every
 *   alert fire at least once;
 * - the metrics this chart added behave: leader changes count epoch increases, redirects are not counted
 *   as answers, a removed follower's lag series is dropped.
 * What it does not prove: that Grafana draws the panels as intended (no Grafana runs here), or that the
 * thresholds suit a production cluster.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { parse } from 'yaml';
import { ReplicaMetrics, type MetricSources } from '../src/metrics/metrics.js';
import { RawChatClient } from './support/grpc-client.js';
import { type ServerProcess, startServer } from './support/processes.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DASHBOARD_PATH = join(ROOT, 'helm/replichat/dashboards/replichat.json');
const ALERTS_PATH = join(ROOT, 'helm/replichat/alerts/replichat-alerts.yaml');
const ALERT_TESTS_PATH = join(ROOT, 'test/monitoring/replichat-alerts.test.yaml');

/**
 * prom-client's default metrics that promtool's linter objects to: gauges named `_total`. They are the
 * library's names, kept so that Node dashboards elsewhere work; anything else promtool says fails the test.
 */
const PROM_CLIENT_LINT_EXCEPTIONS = [
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
];

let temporaryDirectory: string;
let server: ServerProcess;
let metricsText: string;
/** Metric family name to its type, from the `# TYPE` lines of the real /metrics output. */
let exported: Map<string, string>;

function promtool(args: readonly string[], input?: string): { status: number | null; output: string } {
  const result = spawnSync('promtool', args, { input, encoding: 'utf8', cwd: ROOT });
  if (result.error !== undefined) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}


/** The metric families a PromQL expression reads: a histogram's _bucket/_sum/_count become the family. */
function metricNamesIn(expression: string): string[] {
  const names = new Set<string>();
  // Every identifier followed by a selector or range, or standing as a bare vector, with our prefixes or
  // Node's and the process's: label names inside braces and `by (...)` lists never carry these prefixes.
  for (const match of expression.matchAll(/\b((?:replichat|nodejs|process)_[A-Za-z0-9_]+)/g)) names.add(match[1]!);
  return [...names].map((name) => {
    const family = name.replace(/_(bucket|sum|count)$/, '');
    return family !== name && exported.get(family) === 'histogram' ? family : name;
  });
}

interface DashboardPanel {
  readonly type: string;
  readonly title: string;
  readonly targets?: readonly { readonly expr: string }[];
}

function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as {
    panels: DashboardPanel[];
    templating: { list: { query?: { query: string } | string }[] };
  };
  const expressions = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr));
  for (const variable of dashboard.templating.list) {
    const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
    if (query !== undefined && query.startsWith('label_values(')) {
      // label_values(metric{...}, label) is Grafana's, not PromQL: keep the selector.
      expressions.push(query.slice('label_values('.length, query.lastIndexOf(',')));
    }
  }
  return expressions;
}

function alertExpressions(): { alert: string; expr: string }[] {
  const rules = parse(readFileSync(ALERTS_PATH, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  return rules.groups.flatMap((group) => group.rules);
}

describe('a real server', () => {
  // The server runs for these groups only; the last group tests the metrics in process.
  beforeAll(async () => {
    temporaryDirectory = mkdtempSync(join(tmpdir(), 'monitoring-test-'));
    server = await startServer({ dataDirectory: join(temporaryDirectory, 'data') });
    // A few real calls, so that the labelled series carry samples too, an error code among them.
    const client = new RawChatClient(server.address);
    try {
      await client.ok('GetReplicaStatus', {});
      const outcome = await client.call('Login', { requestId: 'login-nobody', username: 'nobody', password: 'wrong password' });
      expect(outcome.code).not.toBe(grpc.status.OK);
    } finally {
      client.close();
    }
    const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
    expect(response.status).toBe(200);
    metricsText = await response.text();
    exported = new Map(
      [...metricsText.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((match) => [match[1]!, match[2]!] as [string, string]),
    );
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    rmSync(temporaryDirectory, { recursive: true, force: true });
  });

  describe('the /metrics output of a real server', () => {
    test('promtool check metrics finds nothing wrong with any replichat metric', () => {
      const all = promtool(['check', 'metrics'], metricsText);
      const complaints = all.output.split('\n').filter((line) => line.trim() !== '');
      expect(complaints.filter((line) => !PROM_CLIENT_LINT_EXCEPTIONS.includes(line))).toEqual([]);
      // Our families alone pass the linter outright.
      const ours = metricsText
        .split('\n')
        .filter((line) => /^(# (HELP|TYPE) )?replichat_/.test(line))
        .join('\n');
      expect(ours.length).toBeGreaterThan(1000);
      expect(promtool(['check', 'metrics'], `${ours}\n`)).toEqual({ status: 0, output: '' });
    });

    test('it holds the families the dashboard is built on, with samples from the calls just made', () => {
      for (const [name, type] of [
        ['replichat_is_leader', 'gauge'],
        ['replichat_members', 'gauge'],
        ['replichat_leader_changes_total', 'counter'],
        ['replichat_sqlite_commit_seconds', 'histogram'],
        ['replichat_redirects_total', 'counter'],
        ['replichat_configuration_store_reachable', 'gauge'],
        ['replichat_pod_label_failures_total', 'counter'],
      ]) {
        expect({ name, type: exported.get(name!) }).toEqual({ name, type });
      }
      expect(metricsText).toMatch(/^replichat_rpc_requests_total\{method="GetReplicaStatus",code="OK"\} 1$/m);
      expect(metricsText).toMatch(/^replichat_rpc_requests_total\{method="Login",code="[A-Z_]+"\} 1$/m);
      // A lone replica leads, and it is its whole membership.
      expect(metricsText).toMatch(/^replichat_is_leader 1$/m);
      expect(metricsText).toMatch(/^replichat_members 1$/m);
      // The driver feeds the store's reachability (the test servers use a real etcd) and commit latency.
      expect(metricsText).toMatch(/^replichat_configuration_store_reachable\{backend="etcd"\} 1$/m);
      const commits = /^replichat_sqlite_commit_seconds_count (\d+)$/m.exec(metricsText);
      expect(Number(commits?.[1])).toBeGreaterThan(0);
    });
  });

  describe('the dashboard and the alerts', () => {
    test('every metric the dashboard queries is one the server exports', () => {
      const expressions = dashboardExpressions();
      expect(expressions.length).toBeGreaterThan(30);
      const used = new Set(expressions.flatMap(metricNamesIn));
      expect(used.size).toBeGreaterThan(20);
      expect([...used].filter((name) => !exported.has(name)).sort()).toEqual([]);
    });

    test('every metric the alerts query is one the server exports', () => {
      const used = new Set(alertExpressions().flatMap((rule) => metricNamesIn(rule.expr)));
      expect(used.size).toBeGreaterThanOrEqual(8);
      expect([...used].filter((name) => !exported.has(name)).sort()).toEqual([]);
    });

    test('the dashboard has the panels of leadership, redundancy, replication, errors and runtime', () => {
      const dashboard = JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as { panels: DashboardPanel[] };
      const rows = dashboard.panels.filter((panel) => panel.type === 'row').map((panel) => panel.title);
      expect(rows).toEqual(['Leadership', 'Redundancy', 'Replication', 'Errors and runtime']);
      const queried = (title: string): string =>
        dashboard.panels.find((panel) => panel.title === title)?.targets?.map((target) => target.expr).join('\n') ?? '';
      expect(queried('Leader')).toContain('replichat_is_leader');
      expect(queried('Epoch')).toContain('replichat_epoch');
      expect(queried('Leader changes (1 h)')).toContain('replichat_leader_changes_total');
      expect(queried('In-sync set against members')).toMatch(/replichat_in_sync_replicas[\s\S]*replichat_members/);
      expect(queried('Follower lag')).toContain('replichat_follower_lag_entries');
      expect(queried('SendMessage latency')).toContain('histogram_quantile(0.99');
      expect(queried('SQLite commit latency')).toContain('replichat_sqlite_commit_seconds_bucket');
      expect(queried('Snapshot transfers')).toContain('replichat_snapshots_served_total');
      // Errors by code leave the redirects out: they have their own series.
      expect(queried('Errors by gRPC code')).toMatch(/replichat_rpc_requests_total\{[^}]*code!="OK"/);
      expect(queried('Errors by gRPC code')).toContain('replichat_redirects_total');
      expect(queried('Event-loop lag')).toContain('nodejs_eventloop_lag_p99_seconds');
      expect(queried('Memory')).toContain('process_resident_memory_bytes');
    });

    test('every dashboard query is valid PromQL (promtool check rules on them as recording rules)', () => {
      // Grafana's variables become what Grafana would put there.
      const rules = dashboardExpressions().map((expression, index) => ({
        record: `dashboard:query_${index}`,
        expr: expression
          .replaceAll('$__rate_interval', '1m')
          .replaceAll('${datasource}', 'prometheus')
          .replaceAll('$namespace', 'chat')
          .replaceAll('$job', 'chat-peers'),
      }));
      const file = join(temporaryDirectory, 'dashboard-queries.yaml');
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      const result = promtool(['check', 'rules', file]);
      expect(result).toEqual({ status: 0, output: expect.stringContaining(`SUCCESS: ${rules.length} rules found`) });
    });

    test('promtool test rules passes, and the unit tests see every alert fire', () => {
      const result = promtool(['test', 'rules', ALERT_TESTS_PATH]);
      expect(result).toEqual({ status: 0, output: expect.stringContaining('SUCCESS') });
      const tests = parse(readFileSync(ALERT_TESTS_PATH, 'utf8')) as {
        tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
      };
      const seenFiring = new Set(
        tests.tests.flatMap((group) => group.alert_rule_test.filter((check) => check.exp_alerts.length > 0).map((check) => check.alertname)),
      );
      const alerts = alertExpressions().map((rule) => rule.alert);
      expect(alerts).toEqual(expect.arrayContaining(['ReplichatNoLeader', 'ReplichatInSyncSetShrunk', 'ReplichatFrequentLeaderChanges']));
      expect(alerts.filter((alert) => !seenFiring.has(alert))).toEqual([]);
    });
  });
});

describe('the metrics added for the dashboard', () => {
  interface FakeReplica {
    role: 'leader' | 'follower';
    epoch: number;
    followers: { ordinal: number; lagEntries: number; inSync: boolean }[];
  }

  function metricsOf(replica: FakeReplica): ReplicaMetrics {
    const sources: MetricSources = {
      lastLogIndex: () => 0,
      subscriberCount: () => 0,
      replication: () => ({
        role: replica.role,
        epoch: replica.epoch,
        commitIndex: 0,
        inSyncSize: 1 + replica.followers.filter((follower) => follower.inSync).length,
        followers: replica.followers,
        waiting: false,
        snapshotting: false,
        snapshotBytesReceived: 0,
      }),
    };
    return new ReplicaMetrics(sources);
  }

  async function sample(metrics: ReplicaMetrics, line: RegExp): Promise<string[]> {
    return (await metrics.registry.metrics()).split('\n').filter((text) => line.test(text));
  }

  test('leader changes are the epoch increases seen since start, however many fall between two scrapes', async () => {
    const replica: FakeReplica = { role: 'follower', epoch: 7, followers: [] };
    const metrics = metricsOf(replica);
    expect(await sample(metrics, /^replichat_leader_changes_total /)).toEqual(['replichat_leader_changes_total 0']);
    replica.epoch = 8;
    expect(await sample(metrics, /^replichat_leader_changes_total /)).toEqual(['replichat_leader_changes_total 1']);
    replica.epoch = 11;
    expect(await sample(metrics, /^replichat_leader_changes_total /)).toEqual(['replichat_leader_changes_total 4']);
  });

  test('a redirect is counted apart, not as an answer or an error', async () => {
    const metrics = metricsOf({ role: 'follower', epoch: 1, followers: [] });
    metrics.observe('SendMessage', grpc.status.UNAVAILABLE, 0.001, true);
    metrics.observe('SendMessage', grpc.status.UNAVAILABLE, 0.001);
    expect(await sample(metrics, /^replichat_redirects_total/)).toEqual(['replichat_redirects_total{method="SendMessage"} 1']);
    expect(await sample(metrics, /^replichat_rpc_requests_total/)).toEqual([
      'replichat_rpc_requests_total{method="SendMessage",code="UNAVAILABLE"} 1',
    ]);
  });

  test('members, a removed follower, the store and the label failures', async () => {
    const replica: FakeReplica = {
      role: 'leader',
      epoch: 3,
      followers: [
        { ordinal: 1, lagEntries: 0, inSync: true },
        { ordinal: 2, lagEntries: 40, inSync: false },
      ],
    };
    const metrics = metricsOf(replica);
    expect(await sample(metrics, /^replichat_members /)).toEqual(['replichat_members 3']);
    expect(await sample(metrics, /^replichat_follower_lag_entries\{/)).toHaveLength(2);
    replica.followers = replica.followers.filter((follower) => follower.ordinal !== 2);
    expect(await sample(metrics, /^replichat_follower_lag_entries\{/)).toEqual([
      'replichat_follower_lag_entries{follower="1",in_sync="true"} 0',
    ]);
    expect(await sample(metrics, /^replichat_members /)).toEqual(['replichat_members 2']);
    expect(await sample(metrics, /^replichat_configuration_store_reachable/)).toEqual([]);
    metrics.setConfigurationStoreReachable('kubernetes', false);
    expect(await sample(metrics, /^replichat_configuration_store_reachable/)).toEqual([
      'replichat_configuration_store_reachable{backend="kubernetes"} 0',
    ]);
    metrics.onPodLabelFailure();
    metrics.observeCommit(0.0004);
    expect(await sample(metrics, /^replichat_pod_label_failures_total /)).toEqual(['replichat_pod_label_failures_total 1']);
    expect(await sample(metrics, /^replichat_sqlite_commit_seconds_count /)).toEqual(['replichat_sqlite_commit_seconds_count 1']);
  });
});
