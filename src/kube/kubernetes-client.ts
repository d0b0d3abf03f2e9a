/**
 * The one way this program talks to the Kubernetes API server: a KubeConfig loaded either in-cluster
 * (from the pod's service account, the default) or from an explicit server URL, bearer token and CA (tests
 * against test/support/fake-kubernetes-api.ts, or a run outside the cluster), and the API clients made from
 * it. Everything in src/kube shares it, so there is one place that knows the service-account paths and one
 * way to put a deadline on a request.
 */
import { existsSync, readFileSync } from 'node:fs';
import {
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  Observable,
  type ConfigurationOptions,
  type ObservableMiddleware,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';

/** Where Kubernetes mounts the pod's service account. */
export const SERVICE_ACCOUNT_DIRECTORY = '/var/run/secrets/kubernetes.io/serviceaccount';

/** An API server named explicitly instead of the in-cluster one. */
export interface KubernetesServer {
  /** e.g. `https://127.0.0.1:6443`. */
  readonly url: string;
  /** A bearer token (a service-account token). */
  readonly token: string;
  /** PEM of the CA that signed the server's certificate. */
  readonly caPem?: string;
  readonly caFile?: string;
}

export interface KubernetesClientOptions {
  /** Absent: in-cluster, from the service account mounted in the pod. */
  readonly server?: KubernetesServer;
  /** Absent: the service account's namespace (in-cluster), which must then exist. */
  readonly namespace?: string;
}

/** The loaded configuration and the API clients the backends and the pod labeler need. */
export interface KubernetesClient {
  readonly kubeConfig: KubeConfig;
  /** The namespace everything of ours lives in (the pod's own, unless told otherwise). */
  readonly namespace: string;
  /** The API server's URL, for logs (never the token). */
  readonly serverUrl: string;
  readonly coordination: CoordinationV1Api;
  readonly core: CoreV1Api;
}

/** Loads the configuration and makes the clients; throws a message naming what is missing. */
export function createKubernetesClient(options: KubernetesClientOptions = {}): KubernetesClient {
  const kubeConfig = new KubeConfig();
  let namespace = options.namespace;
  if (options.server === undefined) {
    if (process.env.KUBERNETES_SERVICE_HOST === undefined || process.env.KUBERNETES_SERVICE_PORT === undefined) {
      throw new Error(
        'not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset): the kubernetes configuration store needs the pod service account',
      );
    }
    // The client re-reads the token file once a minute, so a rotated (bound) token is picked up.
    kubeConfig.loadFromCluster();
    if (namespace === undefined) {
      const namespaceFile = `${SERVICE_ACCOUNT_DIRECTORY}/namespace`;
      if (!existsSync(namespaceFile)) throw new Error(`no namespace given and ${namespaceFile} does not exist`);
      namespace = readFileSync(namespaceFile, 'utf8').trim();
    }
  } else {
    const { url, token, caPem, caFile } = options.server;
    kubeConfig.loadFromOptions({
      clusters: [
        {
          name: 'replichat',
          server: url,
          skipTLSVerify: false,
          ...(caPem === undefined ? {} : { caData: Buffer.from(caPem, 'utf8').toString('base64') }),
          ...(caFile === undefined ? {} : { caFile }),
        },
      ],
      users: [{ name: 'replichat', token }],
      contexts: [{ name: 'replichat', cluster: 'replichat', user: 'replichat', ...(namespace === undefined ? {} : { namespace }) }],
      currentContext: 'replichat',
    });
  }
  if (namespace === undefined || namespace === '') throw new Error('no Kubernetes namespace given');
  const cluster = kubeConfig.getCurrentCluster();
  return {
    kubeConfig,
    namespace,
    serverUrl: cluster?.server ?? '(unknown)',
    coordination: kubeConfig.makeApiClient(CoordinationV1Api),
    core: kubeConfig.makeApiClient(CoreV1Api),
  };
}

/**
 * Per-request options that abort the request after `timeoutMs` (the HTTP request itself, not only the
 * promise) and set extra headers, e.g. the Content-Type of a merge patch.
 */
export function requestOptions(timeoutMs: number, headers: Readonly<Record<string, string>> = {}): ConfigurationOptions {
  // The object-style API that makeApiClient returns runs observable middleware (the client's own stub of
  // an Observable), so each hook returns one.
  const middleware: ObservableMiddleware = {
    pre: (context: RequestContext) => {
      context.setSignal(AbortSignal.timeout(timeoutMs));
      for (const [name, value] of Object.entries(headers)) context.setHeaderParam(name, value);
      return new Observable(Promise.resolve(context));
    },
    post: (context: ResponseContext) => new Observable(Promise.resolve(context)),
  };
  // `append` keeps any middleware the configuration already has.
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

/** The HTTP status of a failed API call, or undefined when it never got one (timeout, refused). */
export function httpStatusOf(error: unknown): number | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    if (typeof code === 'number') return code;
  }
  return undefined;
}
