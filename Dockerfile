# shardlimit server image: `docker build -t shardlimit:0.1.0 .`
# Runs `shardlimit serve` with the sample config by default; mount a config and pass
# `serve --config /etc/shardlimit/limits ...` (or SHARDLIMIT_* variables) for real use.
# test/deploy/image-layout.test.ts lays this file's runtime stage out on disk and runs it: keep
# RUN steps to the commands it knows (npm ci, npm run build, npm cache clean, groupadd, useradd).

# Build stage: every dependency, then TypeScript -> dist/. Manifests first, so a source change
# reuses the installed node_modules layer. --ignore-scripts: the package's own `prepare` (a build)
# would run before the sources are here; no dependency needs an install script to build.
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies only (no TypeScript, vitest, load-test packages), the
# compiled dist/, the .proto files the server loads at start, and the sample config.
FROM node:20-slim
# NODE_OPTIONS: the young generation the server is tuned for (src/app/heap.ts, bench/RESULTS.md
# 16x); set NODE_OPTIONS yourself to replace it (the Helm chart sets it with the old generation's size).
ENV NODE_ENV=production \
    NODE_OPTIONS=--max-semi-space-size=64 \
    SHARDLIMIT_GRPC_PORT=8081 \
    SHARDLIMIT_HTTP_PORT=8080
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY proto ./proto
COPY examples ./examples
# A fixed numeric user, so Kubernetes' runAsNonRoot can check it. The files stay root's and
# read-only to it: the server writes nothing to disk (readOnlyRootFilesystem works).
RUN groupadd --system --gid 10001 shardlimit \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin shardlimit
USER 10001:10001
EXPOSE 8081 8080
# Readiness, as Kubernetes' probe asks it: node:20-slim has no curl, so node itself fetches
# /readyz on the HTTP port (exit 0 when it answers 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.SHARDLIMIT_HTTP_PORT || '8080') + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1 (exec form, no shell in between) and gets SIGTERM itself: `serve` installs
# handlers for SIGTERM, SIGINT and SIGHUP before it starts, so the kernel's PID-1 rule (signals
# without a handler are ignored) does not swallow them, and it spawns no children to reap, so no
# tini is needed (`docker run --init` adds one for those who want it anyway).
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve", "--config", "/app/examples/config.yaml"]
