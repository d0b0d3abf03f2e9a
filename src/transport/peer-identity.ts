/**
 * Who a peer certificate names. The cluster CA (scripts/make-dev-certs.sh, or an operator's own CA) puts
 * one URI subject alternative name in each replica's certificate:
 *
 *   spiffe://replichat/<cluster-name>/replica/<ordinal>
 *
 * That URI is the replica's identity on the peer port: the TLS handshake proves the certificate was issued
 * by the cluster CA, and this module reads which cluster and ordinal it was issued for. DNS names in the
 * certificate serve only the client-side host name check.
 */
import type { PeerCertificate } from 'node:tls';

export interface PeerIdentity {
  readonly clusterName: string;
  readonly ordinal: number;
}

const IDENTITY_URI = /^spiffe:\/\/replichat\/([A-Za-z0-9_.-]{1,64})\/replica\/(\d{1,4})$/;

/** The URI a certificate for `ordinal` of `clusterName` carries. */
export function peerIdentityUri(clusterName: string, ordinal: number): string {
  return `spiffe://replichat/${clusterName}/replica/${ordinal}`;
}

/**
 * The identity in a certificate's subjectaltname string (as Node reports it: `DNS:a, URI:b, IP Address:c`),
 * or a reason why there is none. A certificate naming two replica identities is refused: it is ambiguous.
 */
export function identityFromSubjectAltName(subjectAltName: string | undefined): PeerIdentity | string {
  if (subjectAltName === undefined || subjectAltName === '') return 'the certificate has no subject alternative names';
  const identities: PeerIdentity[] = [];
  for (const part of subjectAltName.split(',').map((item) => item.trim())) {
    if (!part.startsWith('URI:')) continue;
    const match = IDENTITY_URI.exec(part.slice('URI:'.length));
    if (match !== null) identities.push({ clusterName: match[1]!, ordinal: Number(match[2]) });
  }
  if (identities.length === 0) return 'the certificate names no replica (no URI spiffe://replichat/<cluster>/replica/<ordinal>)';
  if (identities.length > 1) return 'the certificate names more than one replica';
  return identities[0]!;
}

/** The identity of a verified peer certificate, or a reason why it names none. */
export function identityFromCertificate(certificate: PeerCertificate | undefined): PeerIdentity | string {
  if (certificate === undefined || Object.keys(certificate).length === 0) return 'no client certificate was presented';
  return identityFromSubjectAltName(certificate.subjectaltname);
}
