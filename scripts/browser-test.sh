#!/usr/bin/env bash
# Browser tests of the web console (`make test` runs them after `cargo test`): builds the
# binary, then tests/browser/run.mjs starts `casegraph serve` on 127.0.0.1:0 with a fresh
# data directory and drives the console in headless Chromium, and tests/browser/fleet.mjs
# does the same for the Fleet page of `casegraph hub` (with a nats-server from
# `scripts/setup.sh test` and simulated branches). Screenshots of every screen land in
# artifacts/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
$CARGO build --locked -p casegraph --bin casegraph
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
fi
rm -f artifacts/screenshots/failed-*.png
status=0
node tests/browser/run.mjs || status=1
node tests/browser/fleet.mjs || status=1
exit $status
