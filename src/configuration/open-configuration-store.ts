/**
 * Opens the configuration store the server's flags name. The backend's client library is loaded only
 * when that backend is chosen (a dynamic import), so an etcd deployment never loads the Kubernetes client
 * and the other way round. This is the only module of src/configuration that reaches into src/kube.
 */
import type { ConfigurationStore } from './configuration-store.js';
import type { EtcdTlsFiles } from './etcd-configuration-store.js';
import type { KubernetesServer } from '../kube/kubernetes-client.js';

export interface OpenConfigurationStoreOptions {
  readonly kind: 'etcd' | 'kubernetes';
  readonly clusterName: string;
  /** Per call, for every backend; default 2000 ms. */
  readonly timeoutMs?: number;
  readonly etcd?: {
    /** Default `http://127.0.0.1:2379`. */
    readonly endpoints?: readonly string[];
    /** Default `/replichat/`. */
    readonly prefix?: string;
    readonly tls?: EtcdTlsFiles;
  };
  readonly kubernetes?: {
    /** Default `<clusterName>-configuration`. */
    readonly leaseName?: string;
    /** Default the pod's namespace, from its service account. */
    readonly namespace?: string;
    /** Default in-cluster; set to talk to an explicit API server (tests, runs outside the cluster). */
    readonly server?: KubernetesServer;
  };
}

export const DEFAULT_ETCD_ENDPOINTS: readonly string[] = Object.freeze(['http://127.0.0.1:2379']);
export const DEFAULT_ETCD_PREFIX = '/replichat/';

/** A ready store; throws (with the option at fault in the message) when the options cannot work. */
export async function openConfigurationStore(options: OpenConfigurationStoreOptions): Promise<ConfigurationStore> {
  switch (options.kind) {
    case 'etcd': {
      const { EtcdConfigurationStore } = await import('./etcd-configuration-store.js');
      return new EtcdConfigurationStore({
        endpoints: options.etcd?.endpoints ?? DEFAULT_ETCD_ENDPOINTS,
        prefix: options.etcd?.prefix ?? DEFAULT_ETCD_PREFIX,
        clusterName: options.clusterName,
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
        ...(options.etcd?.tls === undefined ? {} : { tls: options.etcd.tls }),
      });
    }
    case 'kubernetes': {
      const [{ createKubernetesClient }, { KubernetesLeaseStore }] = await Promise.all([
        import('../kube/kubernetes-client.js'),
        import('../kube/kubernetes-lease-store.js'),
      ]);
      const kubernetes = options.kubernetes ?? {};
      const client = createKubernetesClient({
        ...(kubernetes.server === undefined ? {} : { server: kubernetes.server }),
        ...(kubernetes.namespace === undefined ? {} : { namespace: kubernetes.namespace }),
      });
      return new KubernetesLeaseStore({
        client,
        clusterName: options.clusterName,
        ...(kubernetes.leaseName === undefined ? {} : { leaseName: kubernetes.leaseName }),
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      });
    }
    default: {
      const kind: never = options.kind;
      throw new Error(`unknown configuration store ${JSON.stringify(kind)} (etcd or kubernetes)`);
    }
  }
}
