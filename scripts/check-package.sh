#!/usr/bin/env bash
# The published package stays light: packs this repository, installs the tarball with
# `--omit=dev` into an empty project, and checks that the gateway client loads, that none of the
# load-test-only packages came along, and that `shardlimit bench` there says what to install
# instead of failing with a stack trace. Needs the npm registry (for the runtime dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD_TEST=(ioredis rate-limiter-flexible cli-progress hdr-histogram-js)
work=$(mktemp -d "${TMPDIR:-/tmp}/shardlimit-package-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Builds dist/ first unless told it is built (the e2e test, which must not rewrite dist/ under
# the other tests' processes); packs without running the prepare script again.
[ "${1:-}" = "--built" ] || npm run --silent build
tgz=$(npm pack --silent --ignore-scripts --pack-destination "$work" | tail -n 1)
echo "packed $tgz"
cd "$work"
mkdir app && cd app
npm init -y >/dev/null
npm install --omit=dev --no-audit --no-fund --loglevel=error "$work/$tgz" >/dev/null
echo "installed into $PWD"

kind=$(node --input-type=module -e 'import { createLimiter } from "shardlimit"; console.log(typeof createLimiter)')
echo "typeof createLimiter: $kind"
[ "$kind" = "function" ] || { echo "check:package: createLimiter did not load" >&2; exit 1; }

for p in "${LOAD_TEST[@]}"; do
  if [ -e "node_modules/$p" ]; then echo "check:package: $p was installed" >&2; exit 1; fi
done
echo "none of ${LOAD_TEST[*]} in node_modules"

set +e
out=$(npx --no-install shardlimit bench 2>&1)
status=$?
set -e
echo "npx shardlimit bench -> exit $status:"
echo "$out"
if [ "$status" -ne 1 ] || ! grep -q "npm install ${LOAD_TEST[*]}" <<<"$out" || grep -q "    at " <<<"$out"; then
  echo "check:package: shardlimit bench did not print the install hint" >&2
  exit 1
fi
echo "check:package: ok"
