#!/usr/bin/env bash
# The tests start real processes: etcd (cluster tests), redis-server (the Redis-backed baseline
# of `shardlimit bench`), chromium (renders the bench's HTML report) and openssl (the README's
# certificate commands, test/deploy/readme-certs.test.ts). Installs Debian's
# packages for whichever is missing (these machines run as root with Debian's registry);
# elsewhere says what to install.
set -euo pipefail
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# gRPC's C core as an interop client of the lean transport (test/server/lean-interop.test.ts).
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || missing+=(python3-grpcio)
# h2load, the load generator of `shardlimit bench sync-compare` (test/loadtest/sync-compare.test.ts).
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  command -v etcd >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 && /usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1 && exit 0
fi
echo "the tests need etcd (3.4+), redis-server, chromium, openssl, h2load and Debian's python3-grpcio (Debian: apt-get install ${missing[*]})" >&2
exit 1
