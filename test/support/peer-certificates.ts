/**
 * Peer certificates for tests, made with scripts/make-dev-certs.sh exactly as an operator would: one cluster
 * CA per cluster name per test process, and a certificate per replica, so that every harness can start
 * servers whose peer port is mutual TLS (there is no plaintext peer mode).
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { removeWhenThisProcessEnds } from './watchdog.js';

export const MAKE_DEV_CERTS = fileURLToPath(new URL('../../scripts/make-dev-certs.sh', import.meta.url));

/** Replicas issued a certificate up front; others are issued on demand. */
const INITIAL_REPLICAS = 8;

export interface PeerCertificates {
  readonly directory: string;
  readonly clusterName: string;
  /** The cluster CA certificate. */
  readonly caPath: string;
  /** The certificate and key of replica `ordinal`, issued on first use. */
  certificatePath(ordinal: number): string;
  keyPath(ordinal: number): string;
  /** `--peer-ca --peer-cert --peer-key` for replica `ordinal`. */
  serverArguments(ordinal: number): string[];
  /**
   * Channel credentials that present replica `ordinal`'s certificate, for a test acting as a peer (or
   * probing GetStatus). The server's host name is checked as usual; its identity is not.
   */
  clientCredentials(ordinal: number): grpc.ChannelCredentials;
}

/** Makes a fresh cluster CA and peer certificates in `directory`, for `clusterName`. */
export function makePeerCertificates(directory: string, clusterName = 'replichat', names: readonly string[] = []): PeerCertificates {
  const environment = { ...process.env, REPLICAS: String(INITIAL_REPLICAS), CLUSTER_NAME: clusterName };
  execFileSync('bash', [MAKE_DEV_CERTS, directory, ...names], { env: environment, stdio: 'ignore' });
  const ensure = (ordinal: number): void => {
    if (!existsSync(join(directory, `peer-${ordinal}.pem`))) {
      execFileSync('bash', [MAKE_DEV_CERTS, 'peer', directory, String(ordinal), ...names], { env: environment, stdio: 'ignore' });
    }
  };
  const certificatePath = (ordinal: number): string => {
    ensure(ordinal);
    return join(directory, `peer-${ordinal}.pem`);
  };
  const keyPath = (ordinal: number): string => {
    ensure(ordinal);
    return join(directory, `peer-${ordinal}-key.pem`);
  };
  return {
    directory,
    clusterName,
    caPath: join(directory, 'peer-ca.pem'),
    certificatePath,
    keyPath,
    serverArguments: (ordinal) => [
      '--peer-ca', join(directory, 'peer-ca.pem'),
      '--peer-cert', certificatePath(ordinal),
      '--peer-key', keyPath(ordinal),
    ],
    clientCredentials: (ordinal) =>
      grpc.credentials.createSsl(
        readFileSync(join(directory, 'peer-ca.pem')),
        readFileSync(keyPath(ordinal)),
        readFileSync(certificatePath(ordinal)),
      ),
  };
}

const sharedByCluster = new Map<string, PeerCertificates>();

/**
 * The certificates shared by every server this test process starts for `clusterName`, so that replicas
 * started one by one trust each other. Removed when the process exits.
 */
export function sharedPeerCertificates(clusterName = 'replichat'): PeerCertificates {
  let certificates = sharedByCluster.get(clusterName);
  if (certificates === undefined) {
    const directory = mkdtempSync(join(tmpdir(), 'replichat-peer-certs-'));
    removeWhenThisProcessEnds(directory);
    certificates = makePeerCertificates(directory, clusterName);
    sharedByCluster.set(clusterName, certificates);
  }
  return certificates;
}

/** The value of `--flag` in an argument list, if it is there (the last one wins, as in parseArgs). */
export function argumentValue(argumentsList: readonly string[], flag: string): string | undefined {
  let value: string | undefined;
  argumentsList.forEach((argument, position) => {
    if (argument === flag) value = argumentsList[position + 1];
    else if (argument.startsWith(`${flag}=`)) value = argument.slice(flag.length + 1);
  });
  return value;
}
