#!/usr/bin/env bash
# The cluster tests start real etcd processes. Installs Debian's etcd-server when etcd is missing
# (these machines run as root with Debian's registry); elsewhere says what to install.
set -euo pipefail
if command -v etcd >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "etcd not found: installing Debian's etcd-server" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  command -v etcd >/dev/null 2>&1 && exit 0
fi
echo "the cluster tests need etcd (3.4+) on PATH: install it (Debian: apt-get install etcd-server)" >&2
exit 1
