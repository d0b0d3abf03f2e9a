/**
 * TLS for both ports. The client port serves a certificate with a modern suite list (TLS 1.2 with AEAD
 * suites and forward secrecy only, and TLS 1.3). The peer port is mutual TLS, always: each replica presents
 * its cluster-CA certificate as server and as client, trusts only the cluster CA, and checks that the other
 * side's certificate names a replica of its own cluster (peer-identity.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import type { SecureServerOptions } from 'node:http2';
import { checkServerIdentity, createSecureContext, type PeerCertificate, type SecureContextOptions } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { identityFromCertificate, identityFromSubjectAltName, peerIdentityUri } from './peer-identity.js';

/**
 * TLS 1.3 suites, then TLS 1.2 ECDHE suites with AES-GCM or ChaCha20-Poly1305 (Mozilla's "intermediate"
 * list without finite-field DHE). No CBC, no SHA-1 MACs, no static RSA key exchange.
 */
export const MODERN_TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

const TLS_PROTOCOL_OPTIONS = { ciphers: MODERN_TLS_CIPHERS, minVersion: 'TLSv1.2', honorCipherOrder: true } as const;

/**
 * grpc-js's createSsl takes no suite list, so the options go through the ServerCredentials base class,
 * which hands them to http2.createSecureServer unchanged.
 */
class TunedServerCredentials extends grpc.ServerCredentials {
  constructor(serverOptions: SecureServerOptions, contextOptions: SecureContextOptions) {
    super(serverOptions, contextOptions);
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** Server credentials for the client port, from a PEM certificate chain and key. */
export function clientPortServerCredentials(certificatePath: string, keyPath: string): grpc.ServerCredentials {
  return new TunedServerCredentials(
    { ...TLS_PROTOCOL_OPTIONS, requestCert: false },
    { cert: readFileSync(certificatePath), key: readFileSync(keyPath) },
  );
}

/** The peer port's files: the cluster CA, and this replica's certificate and key issued by it. */
export interface PeerTlsFiles {
  readonly caPath: string;
  readonly certificatePath: string;
  readonly keyPath: string;
}

/** The peer TLS material, loaded and checked to name this replica. */
export interface PeerTlsMaterial {
  readonly clusterName: string;
  readonly ordinal: number;
  readonly ca: Buffer;
  readonly certificate: Buffer;
  readonly key: Buffer;
}

/**
 * Reads the peer files and checks that the certificate names this replica of this cluster, so that a
 * certificate mixed up between replicas fails at start with a clear message rather than at every message.
 */
export function loadPeerTls(files: PeerTlsFiles, clusterName: string, ordinal: number): PeerTlsMaterial {
  const ca = readFileSync(files.caPath);
  const certificate = readFileSync(files.certificatePath);
  const key = readFileSync(files.keyPath);
  const leaf = new X509Certificate(certificate);
  const identity = identityFromSubjectAltName(leaf.subjectAltName);
  if (typeof identity === 'string') throw new Error(`--peer-cert ${files.certificatePath}: ${identity}`);
  if (identity.clusterName !== clusterName || identity.ordinal !== ordinal) {
    throw new Error(
      `--peer-cert ${files.certificatePath} names ${peerIdentityUri(identity.clusterName, identity.ordinal)}, ` +
        `but this replica is ${peerIdentityUri(clusterName, ordinal)}`,
    );
  }
  if (!leaf.checkIssued(new X509Certificate(ca))) {
    throw new Error(`--peer-cert ${files.certificatePath} was not issued by --peer-ca ${files.caPath}`);
  }
  return { clusterName, ordinal, ca, certificate, key };
}

/** Server credentials for the peer port: a client certificate from the cluster CA is required. */
export function peerServerCredentials(material: PeerTlsMaterial): grpc.ServerCredentials {
  return new TunedServerCredentials(
    { ...TLS_PROTOCOL_OPTIONS, requestCert: true, rejectUnauthorized: true },
    { ca: material.ca, cert: material.certificate, key: material.key },
  );
}

/**
 * Channel credentials for calls to other replicas: this replica's certificate as the client certificate,
 * the cluster CA as the only root, the usual host name check, and a check that the server names a replica
 * of this cluster.
 */
export function peerChannelCredentials(material: PeerTlsMaterial): grpc.ChannelCredentials {
  const context = createSecureContext({
    ...TLS_PROTOCOL_OPTIONS,
    ca: material.ca,
    cert: material.certificate,
    key: material.key,
  });
  return grpc.credentials.createFromSecureContext(context, {
    checkServerIdentity: (hostname: string, certificate: PeerCertificate) => {
      const hostProblem = checkServerIdentity(hostname, certificate);
      if (hostProblem !== undefined) return hostProblem;
      const identity = identityFromCertificate(certificate);
      if (typeof identity === 'string') return new Error(`the peer at ${hostname}: ${identity}`);
      if (identity.clusterName !== material.clusterName) {
        return new Error(`the peer at ${hostname} belongs to cluster ${identity.clusterName}, not ${material.clusterName}`);
      }
      return undefined;
    },
  });
}
