#!/usr/bin/env bash
# End-to-end service benchmark of one firmware profile on this machine (docs/benchmarks.md,
# "Service"). Not part of `make test`: it takes a few minutes and its numbers are recorded,
# never asserted.
#
#   cargo build --release
#   scripts/bench-service.sh edge-small            # CPUS=0,1 SECONDS_PER_RUN=20 by default
#
# Runs the release server pinned with taskset to the profile's cores, on a fresh data
# directory on the same disk as the repository (never a tmpfs), and measures: start-up
# time to /readyz, idle RSS, saturation (closed loop), latency at half of the saturation
# rate (open loop), overload at twice the saturation rate (only 202/429/503, RSS against
# the budget, every accepted case completes), disk bytes per case, binary size, and this
# disk's raw synchronous-write rate. Reports land in target/bench-service/.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-edge-small}
CPUS=${CPUS:-0,1}
RUN=${SECONDS_PER_RUN:-20}
PORT=${PORT:-18181}
BIN=target/release/casegraph
LOADGEN=target/release/casegraph-loadgen
OUT=target/bench-service
DATA=$OUT/data
URL=http://127.0.0.1:$PORT

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"

say() { printf '\n== %s\n' "$*"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

say "binary: $(stat -c %s "$BIN") bytes ($(du -h "$BIN" | cut -f1))"

say "raw synchronous 4 KiB writes on this disk (dd oflag=dsync, 2 s worth)"
dd if=/dev/zero of="$OUT/fsync.probe" bs=4k count=400 oflag=dsync 2>&1 | tail -n 1
rm -f "$OUT/fsync.probe"

say "start $PROFILE pinned to CPUs $CPUS"
start=$(date +%s.%N)
taskset -c "$CPUS" "$BIN" serve --profile "$PROFILE" --data "$DATA" \
    --listen "127.0.0.1:$PORT" >"$OUT/server.out" 2>"$OUT/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until "$BIN" health --url "$URL/readyz" >/dev/null 2>&1; do sleep 0.01; done
ready=$(date +%s.%N)
echo "start-up to /readyz: $(echo "($ready - $start) * 1000" | bc -l | xargs printf '%.0f') ms"
sleep 2
echo "idle RSS: $(rss_mib $PID) MiB"
TOKEN_FILE=$DATA/admin.token

lg() { taskset -c "$CPUS" "$LOADGEN" --url "$URL" --token-file "$TOKEN_FILE" --server-pid $PID --quiet "$@"; }

say "saturation: closed loop, 64 senders, ${RUN}s"
lg --concurrency 64 --follow 10 --poll-ms 250 --duration "$RUN" --drain 120 --json "$OUT/saturation.json"
SAT=$(python3 -c "import json;print(json.load(open('$OUT/saturation.json'))['accepted_per_s'])")

HALF=$(python3 -c "print(round($SAT/2))")
say "half load: open loop at $HALF/s (50% of $SAT/s), ${RUN}s"
lg --rate "$HALF" --connections 64 --follow 10 --duration "$RUN" --drain 120 --json "$OUT/half.json"

TWICE=$(python3 -c "print(round($SAT*2))")
say "overload: open loop at $TWICE/s (2x saturation), ${RUN}s, 256 connections"
lg --rate "$TWICE" --connections 256 --follow 10 --poll-ms 250 --duration "$RUN" --drain 180 --json "$OUT/overload.json"

say "after the overload: cases still to run, open tasks, shed requests (server metrics)"
sleep 5
curl -s -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$URL/metrics" \
    | grep -E '^casegraph_(pending_cases|open_tasks|intake_rejected_total|process_resident_bytes|memory_budget_bytes|case_segments_total)' || true

say "settings and memory as the server reports them"
curl -s -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$URL/v1/admin/settings" \
    | python3 -c "import json,sys; v=json.load(sys.stdin); print(json.dumps(v.get('memory'))); print('profile fits:', (v.get('profile') or {}).get('fits'))" || true

kill -TERM $PID; wait $PID || true
trap - EXIT
say "disk"
python3 - "$OUT" "$DATA" <<'PY'
import json, os, sys
out, data = sys.argv[1], sys.argv[2]
runs = [json.load(open(f"{out}/{n}.json")) for n in ("saturation", "half", "overload")]
accepted = sum(r["accepted"] for r in runs)
completed = sum(r["completed"] for r in runs)
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
print(f"data directory: {size} bytes for {accepted} accepted, {completed} completed cases "
      f"= {size/max(completed,1):.0f} bytes per completed case")
PY
