/**
 * Keeps the label `replichat.io/role=leader|follower` on the replica's own pod, so that a Service selecting
 * `replichat.io/role=leader` sends clients to the leader, and `kubectl get pods -L replichat.io/role` shows
 * who leads. The label is a convenience for routing, never a source of truth: the configuration store says
 * who leads, and a follower still answers a misrouted client with the leader's address.
 *
 * `setRole` never blocks and never throws: the replica's driver calls it from its event loop, and an API
 * server that is slow or down must not stall replication. A background loop reconciles: it patches the
 * label (JSON merge patch of the pod's metadata) to the latest role asked for, retries with capped
 * exponential backoff until it matches, and reports each success and failure through callbacks (logs and
 * a metrics counter). Only one patch is in flight at a time, and a role asked for while one is in flight is
 * applied right after it, so the label always ends at the latest role.
 */
import { PatchStrategy } from '@kubernetes/client-node';
import { httpStatusOf, requestOptions, type KubernetesClient } from './kubernetes-client.js';

export const ROLE_LABEL = 'replichat.io/role';

export type ReplicaRole = 'leader' | 'follower';

/** The subset of a pino logger the labeler writes to. */
export interface LabelLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface PodRoleLabelerOptions {
  readonly client: KubernetesClient;
  /** Default $HOSTNAME, which Kubernetes sets to the pod's name. */
  readonly podName?: string;
  /** Default the client's namespace (the pod's own). */
  readonly namespace?: string;
  /** Per request; default 2000 ms. */
  readonly timeoutMs?: number;
  /** First delay after a failure; doubles up to `maxRetryDelayMs`. Defaults 250 ms and 10 s. */
  readonly initialRetryDelayMs?: number;
  readonly maxRetryDelayMs?: number;
  readonly logger?: LabelLogger;
  /** After each patch the API server accepted. */
  readonly onLabelUpdated?: (role: ReplicaRole) => void;
  /** After each failed patch (for a metrics counter); the loop retries on its own. */
  readonly onLabelUpdateFailed?: (error: unknown) => void;
}

export class PodRoleLabeler {
  readonly podName: string;
  readonly namespace: string;
  private readonly options: PodRoleLabelerOptions;
  private readonly timeoutMs: number;
  private readonly initialRetryDelayMs: number;
  private readonly maxRetryDelayMs: number;
  private wantedRole: ReplicaRole | undefined;
  private labelledRole: ReplicaRole | undefined;
  private loop: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private wakeRetry: (() => void) | undefined;
  private closed = false;

  constructor(options: PodRoleLabelerOptions) {
    const podName = options.podName ?? process.env.HOSTNAME;
    if (podName === undefined || podName === '') throw new Error('no pod name given and $HOSTNAME is unset');
    this.podName = podName;
    this.namespace = options.namespace ?? options.client.namespace;
    this.options = options;
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.initialRetryDelayMs = options.initialRetryDelayMs ?? 250;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 10_000;
  }

  /** Asks for the label to become `role`; returns at once. */
  setRole(role: ReplicaRole): void {
    if (this.closed) return;
    this.wantedRole = role;
    if (this.loop === undefined) {
      this.loop = this.reconcile().finally(() => {
        this.loop = undefined;
      });
    }
  }

  /** The role the pod's label was last set to by us (undefined before the first success). */
  get appliedRole(): ReplicaRole | undefined {
    return this.labelledRole;
  }

  /** Stops retrying and waits for a patch in flight (at most the request timeout). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.wakeRetry?.();
    await this.loop;
  }

  private async reconcile(): Promise<void> {
    let retryDelayMs = this.initialRetryDelayMs;
    while (!this.closed && this.wantedRole !== undefined && this.wantedRole !== this.labelledRole) {
      const role = this.wantedRole;
      try {
        await this.patch(role);
        this.labelledRole = role;
        retryDelayMs = this.initialRetryDelayMs;
        this.options.logger?.info({ pod: this.podName, role }, 'pod role label set');
        this.report(() => this.options.onLabelUpdated?.(role));
      } catch (error) {
        this.options.logger?.warn(
          { pod: this.podName, role, status: httpStatusOf(error), error: error instanceof Error ? error.message : String(error), retryDelayMs },
          'could not set the pod role label; retrying',
        );
        this.report(() => this.options.onLabelUpdateFailed?.(error));
        await this.pause(retryDelayMs);
        retryDelayMs = Math.min(retryDelayMs * 2, this.maxRetryDelayMs);
      }
    }
  }

  private async patch(role: ReplicaRole): Promise<void> {
    const body = { metadata: { labels: { [ROLE_LABEL]: role } } };
    const request = this.options.client.core.patchNamespacedPod(
      { name: this.podName, namespace: this.namespace, body },
      requestOptions(this.timeoutMs, { 'Content-Type': PatchStrategy.MergePatch }),
    );
    // The abort signal ends the request; this timer guarantees the loop moves on even if it does not.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`patching pod ${this.podName} took over ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      await Promise.race([request, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private pause(delayMs: number): Promise<void> {
    return new Promise((resolve) => {
      this.wakeRetry = resolve;
      this.retryTimer = setTimeout(resolve, delayMs);
    });
  }

  /** A callback that throws must not end the loop. */
  private report(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      this.options.logger?.warn({ error: String(error) }, 'pod label callback threw');
    }
  }
}
