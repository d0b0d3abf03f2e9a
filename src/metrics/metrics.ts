/**
 * Prometheus metrics of one replica: Node's default process metrics, per-method RPC counts by status code,
 * RPC latency histograms, redirects, the replica's log position, replication, snapshot, SQLite commit and
 * configuration-store metrics, and its subscriber count. The Grafana dashboard and the alerts of
 * helm/replichat query these names; test/monitoring.test.ts checks that every name they use is exported.
 */
import type * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The replica state the gauges read when Prometheus scrapes. */
export interface MetricSources {
  lastLogIndex(): number;
  subscriberCount(): number;
  replication(): {
    role: 'leader' | 'follower';
    epoch: number;
    commitIndex: number;
    inSyncSize: number;
    followers: readonly { ordinal: number; lagEntries: number; inSync: boolean }[];
    waiting: boolean;
    snapshotting: boolean;
    snapshotBytesReceived: number;
    /** Members of this replica's latest configuration, in sync or joining; the leader's follower count + 1 when absent. */
    memberCount?: number;
  };
}

/** Status names as Prometheus label values, e.g. 5 becomes NOT_FOUND. */
const STATUS_NAMES: Record<number, string> = {
  0: 'OK', 1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND',
  6: 'ALREADY_EXISTS', 7: 'PERMISSION_DENIED', 8: 'RESOURCE_EXHAUSTED', 9: 'FAILED_PRECONDITION',
  10: 'ABORTED', 11: 'OUT_OF_RANGE', 12: 'UNIMPLEMENTED', 13: 'INTERNAL', 14: 'UNAVAILABLE',
  15: 'DATA_LOSS', 16: 'UNAUTHENTICATED',
};

export class ReplicaMetrics {
  readonly registry = new Registry();
  private readonly rpcRequests: Counter<'method' | 'code'>;
  private readonly rpcDuration: Histogram<'method'>;

  private readonly elections: Counter;
  private readonly snapshotsInstalled: Counter;
  private readonly snapshotSeconds: Histogram;
  private readonly replicationRoundTrip: Histogram;
  private readonly snapshotsServed: Counter<'outcome'>;
  private readonly snapshotBytesServed: Counter;
  private readonly sqliteCommitSeconds: Histogram;
  private readonly redirects: Counter<'method'>;
  private readonly configurationStoreReachable: Gauge<'backend'>;
  private readonly podLabelFailures: Counter;

  constructor(sources: MetricSources) {
    collectDefaultMetrics({ register: this.registry });
    this.rpcRequests = new Counter({
      name: 'replichat_rpc_requests_total',
      help: 'Client RPCs finished, by method and gRPC status code.',
      labelNames: ['method', 'code'],
      registers: [this.registry],
    });
    this.rpcDuration = new Histogram({
      name: 'replichat_rpc_duration_seconds',
      help: 'Client RPC latency, by method.',
      labelNames: ['method'],
      // From 100 µs (a read) to 2.5 s (a write waiting out a failover).
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    new Gauge({
      name: 'replichat_log_last_index',
      help: 'Index of the last entry in this replica\'s command log.',
      registers: [this.registry],
      collect() {
        this.set(sources.lastLogIndex());
      },
    });
    new Gauge({
      name: 'replichat_is_leader',
      help: '1 while this replica leads, else 0.',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().role === 'leader' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'replichat_epoch',
      help: 'The highest epoch this replica has accepted or started.',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().epoch);
      },
    });
    new Gauge({
      name: 'replichat_commit_index',
      help: 'Highest log index known to be held by every in-sync replica.',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().commitIndex);
      },
    });
    new Gauge({
      name: 'replichat_in_sync_replicas',
      help: 'Size of the in-sync set in this replica\'s latest configuration.',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().inSyncSize);
      },
    });
    new Gauge({
      name: 'replichat_follower_lag_entries',
      help: 'On the leader: log entries each follower is behind.',
      labelNames: ['follower', 'in_sync'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const follower of sources.replication().followers) {
          this.set({ follower: String(follower.ordinal), in_sync: String(follower.inSync) }, follower.lagEntries);
        }
      },
    });
    new Gauge({
      name: 'replichat_waiting_for_election',
      help: '1 while no leader is known and this replica waits (see replichat status for why).',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().waiting ? 1 : 0);
      },
    });
    new Gauge({
      name: 'replichat_snapshot_in_progress',
      help: '1 while this replica fetches and installs a snapshot.',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().snapshotting ? 1 : 0);
      },
    });
    new Gauge({
      name: 'replichat_snapshot_bytes_received',
      help: 'Bytes of the snapshot being fetched so far; 0 when none is.',
      registers: [this.registry],
      collect() {
        this.set(sources.replication().snapshotBytesReceived);
      },
    });
    this.elections = new Counter({
      name: 'replichat_elections_won_total',
      help: 'Times this replica became the leader.',
      registers: [this.registry],
    });
    this.snapshotsInstalled = new Counter({
      name: 'replichat_snapshots_installed_total',
      help: 'Snapshots this replica fetched and installed.',
      registers: [this.registry],
    });
    this.snapshotSeconds = new Histogram({
      name: 'replichat_snapshot_install_seconds',
      help: 'Time to fetch and install a snapshot.',
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300],
      registers: [this.registry],
    });
    this.replicationRoundTrip = new Histogram({
      name: 'replichat_replication_round_trip_seconds',
      help: 'On the leader: from appending a write to every in-sync replica holding it.',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    this.snapshotsServed = new Counter({
      name: 'replichat_snapshots_served_total',
      help: 'Snapshots this replica sent to others, by outcome (sent, cancelled, failed).',
      labelNames: ['outcome'],
      registers: [this.registry],
    });
    this.snapshotBytesServed = new Counter({
      name: 'replichat_snapshot_bytes_served_total',
      help: 'Bytes of snapshots this replica sent whole.',
      registers: [this.registry],
    });
    new Gauge({
      name: 'replichat_members',
      help: 'Members of this replica\'s latest configuration, in sync or joining (compare with replichat_in_sync_replicas).',
      registers: [this.registry],
      collect() {
        const replication = sources.replication();
        if (replication.memberCount !== undefined) this.set(replication.memberCount);
        else if (replication.role === 'leader') this.set(replication.followers.length + 1);
        else this.reset();
      },
    });
    // Every leadership begins with a new epoch (a compare-and-swap naming the leader with epoch + 1), so the
    // leader changes this replica has seen are the increases of its epoch. Counting them when scraped loses
    // none, because the difference since the last scrape is added whole.
    let epochSeenLast: number | undefined;
    new Counter({
      name: 'replichat_leader_changes_total',
      help: 'Leader changes this replica has seen since it started (increases of its epoch).',
      registers: [this.registry],
      collect() {
        const epoch = sources.replication().epoch;
        if (epochSeenLast !== undefined && epoch > epochSeenLast) this.inc(epoch - epochSeenLast);
        epochSeenLast = epoch;
      },
    });
    this.sqliteCommitSeconds = new Histogram({
      name: 'replichat_sqlite_commit_seconds',
      help: 'Time of one SQLite transaction that appends log entries (fsync included).',
      // From 50 µs (a commit in the page cache) to 1 s (a disk that stalls).
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [this.registry],
    });
    this.redirects = new Counter({
      name: 'replichat_redirects_total',
      help: 'Client RPCs answered UNAVAILABLE with the leader\'s address (a redirect, not an error), by method.',
      labelNames: ['method'],
      registers: [this.registry],
    });
    this.configurationStoreReachable = new Gauge({
      name: 'replichat_configuration_store_reachable',
      help: '1 while the last request to the configuration store succeeded, 0 after it failed, by backend.',
      labelNames: ['backend'],
      registers: [this.registry],
    });
    this.podLabelFailures = new Counter({
      name: 'replichat_pod_label_failures_total',
      help: 'Failed updates of this pod\'s role label (writes go on; the leader Service may point nowhere).',
      registers: [this.registry],
    });
    new Gauge({
      name: 'replichat_subscribers',
      help: 'Open Subscribe streams on this replica.',
      registers: [this.registry],
      collect() {
        this.set(sources.subscriberCount());
      },
    });
  }

  onElection(): void {
    this.elections.inc();
  }

  onSnapshotInstalled(durationSeconds: number): void {
    this.snapshotsInstalled.inc();
    this.snapshotSeconds.observe(durationSeconds);
  }

  onSnapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void {
    this.snapshotsServed.inc({ outcome });
    if (outcome === 'sent') this.snapshotBytesServed.inc(sizeBytes);
  }

  onReplicationRoundTrip(durationSeconds: number): void {
    this.replicationRoundTrip.observe(durationSeconds);
  }

  /** Records one SQLite transaction of the log, fsync included. */
  observeCommit(durationSeconds: number): void {
    this.sqliteCommitSeconds.observe(durationSeconds);
  }

  /** Records whether the last request to the configuration store (etcd, kubernetes) succeeded. */
  setConfigurationStoreReachable(backend: string, reachable: boolean): void {
    this.configurationStoreReachable.set({ backend }, reachable ? 1 : 0);
  }

  /** Records a failed update of this pod's role label. */
  onPodLabelFailure(): void {
    this.podLabelFailures.inc();
  }

  /**
   * Records one finished RPC; implements the api layer's RpcObserver. A redirect (UNAVAILABLE naming the
   * leader) is counted in replichat_redirects_total only, so that replichat_rpc_requests_total holds answers
   * and errors and a dashboard of errors by code needs no subtraction.
   */
  observe(method: string, code: grpc.status, durationSeconds: number, redirected = false): void {
    if (redirected) {
      this.redirects.inc({ method });
      return;
    }
    this.rpcRequests.inc({ method, code: STATUS_NAMES[code] ?? String(code) });
    this.rpcDuration.observe({ method }, durationSeconds);
  }
}
