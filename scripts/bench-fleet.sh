#!/usr/bin/env bash
# Fleet hub benchmark on this machine (docs/fleet.md, "Benchmark"). Not part of `make test`:
# it takes a few minutes and its numbers are recorded, never asserted.
#
#   cargo build --release -p casegraph --bin casegraph
#   scripts/bench-fleet.sh                  # BRANCHES=50 RATE=20 SECONDS_LIVE=30 BACKLOG=10000
#
# One nats-server (JetStream, domain `hub`; from scripts/setup.sh test) holds 50 simulated
# branch streams and the hub's CG_FLEET; `casegraph hub simulate` publishes what 50 boxes'
# relays would (one chained audit record and one case summary per case, a health snapshot
# a second); `casegraph hub` sources, verifies and stores them on a fresh data directory
# under target/ (the repository's disk). Runs:
#   live      every branch at RATE cases/s for SECONDS_LIVE: the hub's ingest lag p50/p99
#             (record `at` → committed at the hub) and its CPU per 1000 records
#   catch-up  the hub killed, BACKLOG cases published across the branches at full speed,
#             the hub started again: time until every record is applied, i.e. the hub's
#             peak ingest rate (how long it was away does not matter to JetStream, only
#             how much piled up)
# Every run ends with every chain verified and no record twice. The report (JSON) lands in
# target/bench-fleet/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/casegraph}
NATS_SERVER=${NATS_SERVER:-.local/nats/nats-server}
BRANCHES=${BRANCHES:-50}
RATE=${RATE:-20}
SECONDS_LIVE=${SECONDS_LIVE:-30}
BACKLOG=${BACKLOG:-10000}
OUT=target/bench-fleet
[ -x "$BIN" ] || { echo "build first: cargo build --release -p casegraph --bin casegraph" >&2; exit 1; }
[ -x "$NATS_SERVER" ] || { echo "no nats-server: scripts/setup.sh test" >&2; exit 1; }

rm -rf "$OUT" && mkdir -p "$OUT/hub"
NATS_PID= HUB_PID=
cleanup() { [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null; [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null; true; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NATS=nats://127.0.0.1:$port
printf 'host: 127.0.0.1\nport: %s\nmax_payload: 1MB\njetstream { store_dir: "%s", domain: hub }\n' \
    "$port" "$PWD/$OUT/jetstream" > "$OUT/nats.conf"
"$NATS_SERVER" -c "$OUT/nats.conf" -l "$OUT/nats.log" & NATS_PID=$!
until grep -q "Server is ready" "$OUT/nats.log" 2>/dev/null; do sleep 0.1; done

now() { date +%s.%N; }
start_hub() {
    : > "$OUT/hub.out"
    "$BIN" hub --nats "$NATS" --data "$OUT/hub" --listen 127.0.0.1:0 --log warn >"$OUT/hub.out" 2>>"$OUT/hub.log" &
    HUB_PID=$!
    until grep -q "listening on" "$OUT/hub.out"; do sleep 0.05; done
    URL=$(sed -n 's/^listening on //p' "$OUT/hub.out")
    until [ -s "$OUT/hub/admin.token" ]; do sleep 0.05; done
    TOKEN=$(cat "$OUT/hub/admin.token")
}
ingest() { curl -sf -H "Authorization: Bearer $TOKEN" "$URL/v1/fleet/ingest"; }
# Waits until the hub has applied $1 records since it started; prints the seconds it took from $2.
wait_records() {
    until [ "$(ingest | jq .records)" -ge "$1" ]; do sleep 0.05; done
    python3 -c "import sys; print(round($(now) - $2, 3))"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$HUB_PID/stat"; }
# Every branch: all records held once, chain verified, nothing refused.
check_fleet() {
    local want=$1 page after="" bad=0 n=0
    while :; do
        page=$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/v1/fleet/branches?limit=100${after:+&after=$after}")
        n=$((n + $(jq '.branches | length' <<<"$page")))
        bad=$((bad + $(jq --argjson w "$want" '[.branches[] | select(.records != $w or .applied != $w or .chain != "verified" or .rejected != 0)] | length' <<<"$page")))
        after=$(jq -r '.next // empty' <<<"$page"); [ -n "$after" ] || break
    done
    echo "branches $n, not as expected $bad"
    [ "$n" -eq "$BRANCHES" ] && [ "$bad" -eq 0 ]
}

# Set-up: one case per branch makes the streams; the hub sources them all.
"$BIN" hub simulate --nats "$NATS" --branches "$BRANCHES" --cases 1 --write-branches "$OUT/hub/branches.toml" >/dev/null
start_hub
wait_records "$BRANCHES" "$(now)" >/dev/null
total=1

# live
cases=$(python3 -c "print(int($RATE * $SECONDS_LIVE))")
echo "live: $BRANCHES branches × $RATE cases/s for ${SECONDS_LIVE}s ($((cases * BRANCHES)) records)"
ticks0=$(cpu_ticks); t0=$(now)
sim_live=$("$BIN" hub simulate --nats "$NATS" --branches "$BRANCHES" --cases "$cases" --rate "$RATE")
total=$((total + cases))
live_drain=$(wait_records $((BRANCHES * total)) "$t0")
ticks1=$(cpu_ticks)
live=$(ingest)
hz=$(getconf CLK_TCK)
cpu_per_1000=$(python3 -c "print(round(($ticks1 - $ticks0) / $hz / ($cases * $BRANCHES) * 1000, 4))")
check_fleet "$total"
echo "  simulator: $sim_live"
echo "  hub: $live, all applied ${live_drain}s after the start, CPU ${cpu_per_1000}s per 1000 records"

# catch-up
per_branch=$((BACKLOG / BRANCHES))
echo "catch-up: hub killed, $((per_branch * BRANCHES)) cases published, hub started again"
kill -9 "$HUB_PID"; wait "$HUB_PID" 2>/dev/null || true; HUB_PID=
sim_backlog=$("$BIN" hub simulate --nats "$NATS" --branches "$BRANCHES" --cases "$per_branch")
total=$((total + per_branch))
t0=$(now)
start_hub
ticks0=$(cpu_ticks)
catchup=$(wait_records $((BRANCHES * per_branch)) "$t0")
ticks1=$(cpu_ticks)
after=$(ingest)
check_fleet "$total"
rate=$(python3 -c "print(round($BRANCHES * $per_branch / $catchup))")
catchup_cpu=$(python3 -c "print(round(($ticks1 - $ticks0) / $hz, 2))")
echo "  simulator: $sim_backlog"
echo "  hub: $after, caught up in ${catchup}s (start included): $rate records/s, CPU ${catchup_cpu}s"

jq -n --argjson branches "$BRANCHES" --argjson rate "$RATE" --argjson seconds "$SECONDS_LIVE" \
    --argjson live "$live" --argjson live_drain "$live_drain" --argjson cpu "$cpu_per_1000" \
    --argjson backlog $((BRANCHES * per_branch)) --argjson catchup "$catchup" --argjson catchup_rate "$rate" \
    --argjson sim_live "$sim_live" --argjson sim_backlog "$sim_backlog" \
    '{branches: $branches, live: {cases_per_second_per_branch: $rate, seconds: $seconds, simulator: $sim_live,
      hub: $live, all_applied_after_s: $live_drain, hub_cpu_s_per_1000_records: $cpu},
      catch_up: {backlog_cases: $backlog, simulator: $sim_backlog, seconds: $catchup, records_per_second: $catchup_rate}}' \
    | tee "$OUT/report.json"
