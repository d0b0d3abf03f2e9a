/**
 * Wires one replica together: the replica node (SQLite store and protocol driver), the peer gRPC service,
 * the client gRPC service with health and reflection, and the HTTP metrics server. `start` resolves once clients can connect; `stop` shuts down
 * gracefully (in-flight calls get `shutdownGraceMs` to finish) and closes the database last.
 */
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Server as HttpServer } from 'node:http';
import type { Logger } from 'pino';
import { ChatService } from '../api/chat-service.js';
import { DEFAULT_SCRYPT_COST_LOG2, setPasswordHashCost } from '../api/password-hashing.js';
import { UnavailableError } from '../core/errors.js';
import { CHAT_SERVICE_NAME, chatServiceDefinitionForServer, loadChatPackageDefinition } from '../api/proto.js';
import { startHttpServer } from '../metrics/http-server.js';
import { ReplicaMetrics } from '../metrics/metrics.js';
import { cleanUpTempSnapshots } from '../storage/snapshot.js';
import { GrpcPeerNetwork } from '../transport/peer-network.js';
import { peerServiceDefinition } from '../transport/peer-proto.js';
import { peerServiceHandlers } from '../transport/peer-server.js';
import {
  clientPortServerCredentials,
  loadPeerTls,
  peerChannelCredentials,
  peerServerCredentials,
} from '../transport/tls-credentials.js';
import type { ConfigurationStore } from '../configuration/configuration-store.js';
import { openConfigurationStore } from '../configuration/open-configuration-store.js';
import type { ServerConfig } from './config.js';
import { ReplicaNode } from './replica-node.js';
import { systemClock } from './seams.js';

/** Largest request accepted: a few message bodies' worth, so a huge frame is refused before decoding. */
const GRPC_MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

export interface RunningServer {
  readonly clientPort: number;
  readonly peerPort: number;
  readonly metricsPort: number;
  stop(): Promise<void>;
}

/** Opens the configuration store the config names. */
function openStore(config: ServerConfig): Promise<ConfigurationStore> {
  const store = config.configurationStore;
  if (store.kind === 'etcd') {
    return openConfigurationStore({
      kind: 'etcd',
      clusterName: config.clusterName,
      timeoutMs: store.timeoutMs,
      etcd: {
        endpoints: store.endpoints,
        prefix: store.prefix,
        ...(store.tls?.caPath === undefined
          ? {}
          : {
              tls: {
                caFile: store.tls.caPath,
                ...(store.tls.certificatePath === undefined ? {} : { certFile: store.tls.certificatePath }),
                ...(store.tls.keyPath === undefined ? {} : { keyFile: store.tls.keyPath }),
              },
            }),
      },
    });
  }
  return openConfigurationStore({
    kind: 'kubernetes',
    clusterName: config.clusterName,
    timeoutMs: store.timeoutMs,
    kubernetes: { leaseName: store.leaseName, ...(store.namespace === undefined ? {} : { namespace: store.namespace }) },
  });
}

/** Keeps the pod's role label in step with the replica's role, inside Kubernetes; a no-op elsewhere. */
async function podRoleLabeler(
  config: ServerConfig,
  logger: Logger,
  onFailure: () => void,
): Promise<((role: 'leader' | 'follower') => void) | undefined> {
  const store = config.configurationStore;
  if (store.kind !== 'kubernetes') return undefined;
  const [{ createKubernetesClient }, { PodRoleLabeler }] = await Promise.all([
    import('../kube/kubernetes-client.js'),
    import('../kube/pod-labels.js'),
  ]);
  const client = createKubernetesClient(store.namespace === undefined ? {} : { namespace: store.namespace });
  const labeler = new PodRoleLabeler({ client, podName: store.podName, logger, onLabelUpdateFailed: onFailure });
  return (role) => labeler.setRole(role);
}

function splitHostPort(address: string): { host: string; port: number } {
  const separator = address.lastIndexOf(':');
  return { host: address.slice(0, separator).replace(/^\[|\]$/g, ''), port: Number(address.slice(separator + 1)) };
}

export async function startServer(config: ServerConfig, logger: Logger): Promise<RunningServer> {
  setPasswordHashCost(config.passwordHashCostLog2);
  if (config.passwordHashCostLog2 < DEFAULT_SCRYPT_COST_LOG2) {
    logger.warn({ costLog2: config.passwordHashCostLog2 }, 'new password hashes use a scrypt cost below OWASP\'s: for test clusters only');
  }
  // The peer port is mutual TLS, always: a certificate that does not name this replica fails here, at start.
  const peerTls = loadPeerTls(config.peerTls, config.clusterName, config.ordinal);
  const network = new GrpcPeerNetwork(
    config.clusterName,
    config.ordinal,
    config.advertisedClientAddress,
    peerChannelCredentials(peerTls),
  );
  const metrics: ReplicaMetrics = new ReplicaMetrics({
    lastLogIndex: (): number => node.lastIndex,
    subscriberCount: (): number => chatService.subscriptions.subscriberCount,
    replication: () => {
      const status = node.status();
      return {
        role: status.role,
        epoch: status.epoch,
        commitIndex: status.commitIndex,
        inSyncSize: status.record?.inSync.length ?? 0,
        memberCount: status.record?.members.length ?? 0,
        followers: status.followers,
        waiting: status.waitingReason !== null,
        snapshotting: status.snapshotting,
        snapshotBytesReceived: node.snapshotBytesReceived,
      };
    },
  });
  const configurationStore = await openStore(config);
  const setPodRole = await podRoleLabeler(config, logger, () => metrics.onPodLabelFailure());
  const node: ReplicaNode = new ReplicaNode(
    {
      ordinal: config.ordinal,
      peers: config.peers,
      timings: config.timings,
      logRetentionEntries: config.logRetentionEntries,
      dataDirectory: config.dataDirectory,
      clientAddress: config.advertisedClientAddress,
    },
    {
      clock: systemClock,
      transport: network,
      configurationStore,
      // Fail-stop: log what broke and end the process before anything more is sent; the next start
      // recovers from the log. process.exit runs no more of this turn's code.
      fatal: (error: unknown, context: string): never => {
        logger.fatal({ err: error, context }, 'stopping: an unexpected error on the replication path');
        process.exit(70);
      },
    },
    logger,
    {
      onElection: () => metrics.onElection(),
      onSnapshotInstalled: (seconds) => metrics.onSnapshotInstalled(seconds),
      onReplicationRoundTrip: (seconds) => metrics.onReplicationRoundTrip(seconds),
      onSnapshotServed: (outcome, sizeBytes) => metrics.onSnapshotServed(outcome, sizeBytes),
      onStorageCommit: (seconds) => metrics.observeCommit(seconds),
      onConfigurationStoreAnswer: (reachable) =>
        metrics.setConfigurationStoreReachable(config.configurationStore.kind, reachable),
      onRoleChanged: (role) => setPodRole?.(role),
    },
  );
  logger.info(
    { ordinal: config.ordinal, peers: config.peers, lastIndex: node.lastIndex, epoch: node.currentEpoch() },
    'opened the replica store',
  );
  // Only now, with the data directory locked by this process, may files in it be deleted.
  const removed = await cleanUpTempSnapshots(config.dataDirectory);
  if (removed.length > 0) logger.info({ removed }, 'removed the temporary files of interrupted snapshots');
  const chatService: ChatService = new ChatService(node, config.limits, logger, metrics, config.adminToken);

  const peerServer = new grpc.Server({
    // Channelz keeps per-call statistics for a debugging service this server does not offer: a cost on
    // every call and frame for nothing.
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
  });
  peerServer.addService(
    peerServiceDefinition(),
    peerServiceHandlers(config.clusterName, node, {
      limits: { maxEntriesPerAppend: config.timings.maxEntriesPerAppend },
      logger,
    }),
  );
  const peerPort = await new Promise<number>((resolve, reject) => {
    peerServer.bindAsync(config.peerListenAddress, peerServerCredentials(peerTls), (error, port) =>
      error ? reject(error) : resolve(port),
    );
  });
  node.start();

  const grpcServer = new grpc.Server({
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': GRPC_MAX_RECEIVE_BYTES,
    // Pings keep idle Subscribe streams alive through proxies and find dead clients within a minute.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  const packageDefinition = loadChatPackageDefinition();
  grpcServer.addService(chatServiceDefinitionForServer(packageDefinition), chatService.handlers());
  const health = new HealthImplementation({ '': 'NOT_SERVING', [CHAT_SERVICE_NAME]: 'NOT_SERVING' });
  health.addToServer(grpcServer);
  new ReflectionService(packageDefinition).addToServer(grpcServer);

  const credentials =
    config.tls === 'insecure'
      ? grpc.ServerCredentials.createInsecure()
      : clientPortServerCredentials(config.tls.certificatePath, config.tls.keyPath);
  const clientPort = await new Promise<number>((resolve, reject) => {
    grpcServer.bindAsync(config.listenAddress, credentials, (error, port) => (error ? reject(error) : resolve(port)));
  });
  // The kubelet's native gRPC probe speaks no TLS: it gets a plaintext port that serves health and nothing else.
  let healthServer: grpc.Server | undefined;
  if (config.healthListenAddress !== undefined) {
    healthServer = new grpc.Server();
    health.addToServer(healthServer);
    const listening = healthServer;
    await new Promise<number>((resolve, reject) => {
      listening.bindAsync(config.healthListenAddress!, grpc.ServerCredentials.createInsecure(), (error, port) =>
        error ? reject(error) : resolve(port),
      );
    });
  }
  const metricsAddress = splitHostPort(config.metricsListenAddress);
  const http = await startHttpServer(metricsAddress.host, metricsAddress.port, metrics.registry, {
    notReadyReason: () => {
      const status = node.status();
      if (status.role === 'leader') return undefined;
      if (status.leaderOrdinal !== null) return undefined;
      return status.waitingReason ?? 'no leader is known yet';
    },
    readinessWarning: () => {
      const status = node.status();
      return status.storeReachable
        ? undefined
        : `the configuration store is unreachable (${status.storeProblem ?? 'no answer'}): writes go on with the in-sync set, reconfiguration waits`;
    },
  });
  health.setStatus('', 'SERVING');
  health.setStatus(CHAT_SERVICE_NAME, 'SERVING');
  logger.info(
    { clientPort, peerPort, metricsPort: http.port, tls: config.tls !== 'insecure', ordinal: config.ordinal },
    'serving',
  );

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(CHAT_SERVICE_NAME, 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          logger.warn({ shutdownGraceMs: config.shutdownGraceMs }, 'in-flight calls outlived the grace period');
          grpcServer.forceShutdown();
          resolve();
        }, config.shutdownGraceMs);
        // Subscribe streams never end by themselves: end them with UNAVAILABLE so that clients subscribe
        // again elsewhere, and tryShutdown then waits only for unary calls.
        chatService.subscriptions.closeEveryone(new UnavailableError('the server is shutting down'));
        grpcServer.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      // Hand leadership over, or leave the in-sync set, before the peer port closes: a rolling update then
      // never makes writes wait for a timeout.
      await node.shutDownGracefully(Math.min(config.shutdownGraceMs, 5_000));
      peerServer.forceShutdown();
      healthServer?.forceShutdown();
      network.close();
      await closeHttp(http.server);
      node.stop();
      await configurationStore.close();
      logger.info('stopped');
    })();
    return stopping;
  };
  return { clientPort, peerPort, metricsPort: http.port, stop };
}

function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
