/**
 * The replica's HTTP endpoints: /metrics for Prometheus, /healthz (the process answers: a liveness probe),
 * /readyz (this replica serves clients now: a readiness probe). Anything else is 404.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface ReadinessSource {
  /** Undefined when ready, else the reason it is not. */
  notReadyReason(): string | undefined;
  /**
   * A warning that does not make the replica unready (it still serves), shown in the /readyz body: e.g.
   * the configuration store is unreachable, so no takeover or in-sync change can happen meanwhile.
   */
  readinessWarning?(): string | undefined;
}

export async function startHttpServer(
  host: string,
  port: number,
  registry: Registry,
  readiness: ReadinessSource,
): Promise<{ server: Server; port: number }> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: unknown) => response.writeHead(500).end(String(error)),
      );
      return;
    }
    if (path === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const reason = readiness.notReadyReason();
      const warning = readiness.readinessWarning?.();
      response
        .writeHead(reason === undefined ? 200 : 503, { 'content-type': 'text/plain' })
        .end(
          (reason === undefined ? 'ready\n' : `not ready: ${reason}\n`) + (warning === undefined ? '' : `warning: ${warning}\n`),
        );
      return;
    }
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
