/**
 * Prometheus metrics of one replica: Node's default process metrics, per-method RPC counts by status code,
 * RPC latency histograms, and the replica's log position and subscriber count.
 */
import type * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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

  constructor(sources: { lastLogIndex: () => number; subscriberCount: () => number }) {
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
      name: 'replichat_subscribers',
      help: 'Open Subscribe streams on this replica.',
      registers: [this.registry],
      collect() {
        this.set(sources.subscriberCount());
      },
    });
  }

  /** Records one finished RPC; implements the api layer's RpcObserver. */
  observe(method: string, code: grpc.status, durationSeconds: number): void {
    this.rpcRequests.inc({ method, code: STATUS_NAMES[code] ?? String(code) });
    this.rpcDuration.observe({ method }, durationSeconds);
  }
}
