#!/usr/bin/env bash
# A fleet on one machine: a nats-server (packaging/nats/demo.conf), the hub and two boxes
# (branches berlin and hamburg) talking to it, and a signed rollout of a new version of
# request_refund to both. Everything lives under target/fleet-demo/; Ctrl-C stops it all.
#
#   scripts/setup.sh test && cargo build --release && scripts/fleet-demo.sh
#
# Then: the hub's console at http://127.0.0.1:8090/console/ (token in
# target/fleet-demo/hub/admin.token) shows both branches; the boxes answer on :8081 and :8082.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/casegraph}
NATS=${NATS_SERVER:-.local/nats/nats-server}
DIR=target/fleet-demo
NATS_URL=nats://127.0.0.1:4222
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x "$NATS" ] || { echo "install nats-server first: scripts/setup.sh test" >&2; exit 1; }
rm -rf "$DIR" && mkdir -p "$DIR"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
ready() { until curl -fs "$1" >/dev/null 2>&1; do sleep 0.1; done; }

"$NATS" -c packaging/nats/demo.conf -l "$DIR/nats.log" & PIDS+=($!)
"$BIN" rollout keygen --out "$DIR/key"
printf '[[branch]]\nname = "berlin"\ndomain = "hub"\n\n[[branch]]\nname = "hamburg"\ndomain = "hub"\n' \
    > "$DIR/branches.toml"
port=8081
for branch in berlin hamburg; do
    CASEGRAPH_FLEET__NATS_URL=$NATS_URL CASEGRAPH_FLEET__BRANCH=$branch \
    CASEGRAPH_FLEET__HUB_KEY=$(cat "$DIR/key/hub.pub") CASEGRAPH_FLEET__HEALTH_INTERVAL=2s \
        "$BIN" serve --data "$DIR/$branch" --listen "127.0.0.1:$port" > "$DIR/$branch.log" 2>&1 &
    PIDS+=($!)
    ready "http://127.0.0.1:$port/readyz"
    echo "box $branch on http://127.0.0.1:$port (admin token: $DIR/$branch/admin.token)"
    port=$((port + 1))
done
# The hub starts after the boxes made their branch streams: JetStream retries a source
# whose stream does not exist yet only every so often.
"$BIN" hub --nats "$NATS_URL" --data "$DIR/hub" --branches "$DIR/branches.toml" \
    --listen 127.0.0.1:8090 > "$DIR/hub.log" 2>&1 & PIDS+=($!)
ready http://127.0.0.1:8090/healthz

# A few requests on each box, then a signed rollout of request_refund version 2.
for port in 8081 8082; do
    for i in 1 2 3; do
        curl -fs -X POST "http://127.0.0.1:$port/v1/requests" \
            -H "Authorization: Bearer $(cat "$DIR/$([ $port = 8081 ] && echo berlin || echo hamburg)/admin.token")" \
            -H 'Content-Type: application/json' \
            -d '{"channel": "chat", "customer_id": "C-1002345", "text": "Please refund the 42.50 EUR you charged twice."}' \
            >/dev/null
    done
done
cp -r workflows/request_refund "$DIR/request_refund"
sed -i 's/^version: 1$/version: 2/' "$DIR/request_refund/workflow.yaml"
"$BIN" rollout publish --nats "$NATS_URL" --key "$DIR/key/hub.key" \
    --branches berlin,hamburg --workflow "$DIR/request_refund"
sleep 5
echo
echo "the fleet as the hub sees it (GET /v1/fleet/branches):"
curl -fs -H "Authorization: Bearer $(cat "$DIR/hub/admin.token")" http://127.0.0.1:8090/v1/fleet/branches \
    | python3 -c '
import json, sys
for b in json.load(sys.stdin)["branches"]:
    r = (b.get("last_rollout") or {}).get("result", {})
    print("  %-8s records %4s  lag %s  chain %s  cases %s  rollout %s v%s" % (
        b["branch"], b["records"], b["lag"], b["chain"], b["cases"], r.get("status"), r.get("version")))'
echo
echo "hub console: http://127.0.0.1:8090/console/  (token: $DIR/hub/admin.token); Ctrl-C stops the fleet"
wait
