# syntax=docker/dockerfile:1
# One image for the replichat server and its CLI: `replichat server ...` runs a replica, any other
# arguments run the client (`replichat status`, `replichat chat`). NOTEBOOK.md §15 explains the choices.
#
#   docker build -t replichat .                       # from the official Node 20 images
#   scripts/build-base-image.sh && podman build \     # offline, from a base assembled with debootstrap
#     --build-arg BASE_IMAGE=localhost/replichat-base:bookworm-node20 \
#     --build-arg BUILD_BASE_IMAGE=localhost/replichat-build-base:bookworm-node20 -t replichat .
#
# Behind a TLS-inspecting proxy, give npm the proxy's CA as a build secret (it never enters a layer):
#   --secret id=npm-ca,src=/etc/ssl/certs/ca-certificates.crt

# Node 20 is what the project runs and tests on; better-sqlite3 12 and @kubernetes/client-node 1.4 are
# pinned for it (package.json "engines"). It has been past end of life since 2026-04-30: moving to Node 22
# is a follow-up (NOTEBOOK.md §15). Both images must carry the same Node major, since the native module
# compiled in the build image is loaded by the runtime image.
ARG BASE_IMAGE=node:20-bookworm-slim
ARG BUILD_BASE_IMAGE=node:20-bookworm

# The build stages: a compiler for better-sqlite3 (present in node:20-bookworm; installed when missing).
FROM ${BUILD_BASE_IMAGE} AS toolchain
RUN if ! command -v g++ >/dev/null || ! command -v make >/dev/null || ! command -v python3 >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ make python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /build
# Compile better-sqlite3 from source (no prebuilt binary fetched from GitHub), against the headers that
# come with the build image's Node (no download from nodejs.org).
ENV npm_config_build_from_source=true \
    npm_config_fund=false \
    npm_config_audit=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./

# Production dependencies only, exactly as package-lock.json pins them; this is the runtime's node_modules.
FROM toolchain AS dependencies
# The compiler's intermediate files and SQLite's sources are left behind; the loaded module is checked.
RUN --mount=type=secret,id=npm-ca --mount=type=cache,target=/root/.npm \
    if [ -f /run/secrets/npm-ca ]; then export npm_config_cafile=/run/secrets/npm-ca; fi; \
    export npm_config_nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"; \
    npm ci --omit=dev \
    && cd node_modules/better-sqlite3 \
    && find build -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + \
    && find build/Release -mindepth 1 ! -name better_sqlite3.node -exec rm -rf {} + \
    && rm -rf deps src \
    && node -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()"

# The TypeScript compile, on top of the production dependencies (their type declarations). The compiler and
# the @types packages come at the versions package-lock.json pins, installed in /node_modules (above /build), where both
# Node's and TypeScript's resolution find them; the rest of devDependencies (jest, helm, schemas: hundreds
# of packages) is test tooling the image does not need.
FROM dependencies AS build
RUN --mount=type=secret,id=npm-ca --mount=type=cache,target=/root/.npm \
    if [ -f /run/secrets/npm-ca ]; then export npm_config_cafile=/run/secrets/npm-ca; fi; \
    compiler=$(node -p "const locked = require('./package-lock.json').packages; \
      ['typescript', '@types/node', '@types/better-sqlite3', '@types/jest'] \
        .map((name) => name + '@' + locked['node_modules/' + name].version).join(' ')") \
    && mkdir -p /compiler && cd /compiler && echo '{"private": true}' >package.json \
    && npm install --no-save --no-package-lock --ignore-scripts $compiler \
    && mv /compiler/node_modules /node_modules
COPY tsconfig.json ./
COPY src ./src
RUN /node_modules/.bin/tsc -p tsconfig.json

# The runtime: slim Debian, Node, tini, the compiled JavaScript and the production dependencies.
FROM ${BASE_IMAGE} AS runtime
RUN if ! command -v tini >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
# /var/lib/replichat is the data directory (a volume in Kubernetes); HOME holds the CLI's session file.
RUN groupadd --system --gid 10001 replichat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/replichat --create-home \
       --shell /usr/sbin/nologin replichat \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/replichat
WORKDIR /app
ENV NODE_ENV=production \
    REPLICHAT_DATA_DIR=/var/lib/replichat
COPY package.json package-lock.json ./
COPY proto ./proto
COPY --from=dependencies /build/node_modules ./node_modules
COPY --from=build /build/dist ./dist
# package.json's bin (replichat -> dist/cli/main.js), put on PATH as npm would.
RUN chmod 0755 dist/cli/main.js \
    && ln -s /app/dist/cli/main.js /usr/local/bin/replichat \
    && replichat --help >/dev/null
USER 10001:10001
# Client gRPC, peer gRPC, HTTP metrics and probes.
EXPOSE 50051 50052 9100
# tini is PID 1: it forwards SIGTERM to Node (which then leaves the in-sync set or hands over leadership)
# and reaps zombies; exec form, so no shell stands in between.
ENTRYPOINT ["/usr/bin/tini", "--", "replichat"]
CMD ["--help"]
