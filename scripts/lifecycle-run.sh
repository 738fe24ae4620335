#!/usr/bin/env bash
# A day of a box's data lifecycle, accelerated (docs/reliability.md, "Retention over a long
# run"). Not part of `make test`: it runs for MINUTES and its numbers are recorded, never
# asserted in CI.
#
#   cargo build --release --locked -p casegraph -p casegraph-loadgen
#   scripts/lifecycle-run.sh                 # MINUTES=12 by default
#
# The release server runs with retention at ages of minutes instead of months and a data
# budget ([storage] budget_mib); archives go to a directory beside the data directory (on a
# box: copied off it). The load generator sends the sample mix in bursts with quiet gaps
# between them (a day's busy hours and its nights, shortened): the retention job runs only
# when the store is quiet. Meanwhile the data directory's size is sampled every SAMPLE
# seconds. At the end, the script checks
#   1. the data directory stayed within the budget at every sample,
#   2. `casegraph audit verify --archive` accepts the whole history (live chain + archives),
#   3. every case the audit chain names is live (answered by the server) or in an archive,
# and prints bytes per case: live, after an offline compaction, and in the archives.
# Everything lands in target/lifecycle/; the last lines are the summary.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-12}
BURST=${BURST:-45}          # seconds of load per cycle
QUIET=${QUIET:-20}          # seconds without requests per cycle
RATE=${RATE:-20}            # requests per second during a burst (open loop)
BUDGET_MIB=${BUDGET_MIB:-256}
AGE=${AGE:-2m}              # completed cases older than this are archived
SAMPLE=${SAMPLE:-3}
PORT=${PORT:-18282}
BIN=target/release/casegraph
LOADGEN=target/release/casegraph-loadgen
OUT=target/lifecycle
DATA=$OUT/data
ARCHIVES=$OUT/archive
URL=http://127.0.0.1:$PORT
PID=
SAMPLER=

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || {
    echo "build first: cargo build --release --locked -p casegraph -p casegraph-loadgen" >&2
    exit 1
}
rm -rf "$OUT" && mkdir -p "$DATA" "$ARCHIVES"
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
}
trap cleanup EXIT

cat >"$OUT/casegraph.toml" <<EOF
[storage]
budget_mib = $BUDGET_MIB

[retention]
enabled = true
completed = "$AGE"
failed = "$AGE"
escalated = "$AGE"
directory = "$ARCHIVES"
interval = "15s"
idle_after = "5s"
compact = true
EOF

say() { printf '\n== %s\n' "$*"; }
start() {
    "$BIN" serve --config "$OUT/casegraph.toml" --data "$DATA" --listen "127.0.0.1:$PORT" \
        >>"$OUT/server.out" 2>>"$OUT/server.log" &
    PID=$!
    until "$BIN" health --url "$URL/readyz" >/dev/null 2>&1; do sleep 0.1; done
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
metric() { grep -E "^$1 " "$OUT/metrics.txt" | awk '{print $2}'; }

say "server: retention at $AGE, budget $BUDGET_MIB MiB, $MINUTES min of ${BURST}s bursts at $RATE/s and ${QUIET}s quiet"
start
TOKEN=$(cat "$DATA/admin.token")

# The data directory's size, every SAMPLE seconds: unix time, bytes.
(while true; do
    echo "$(date +%s) $(du -sb "$DATA" | cut -f1)"
    sleep "$SAMPLE"
done) >"$OUT/du.txt" &
SAMPLER=$!

END=$(($(date +%s) + MINUTES * 60))
CYCLE=0
while [ "$(date +%s)" -lt "$END" ]; do
    CYCLE=$((CYCLE + 1))
    "$LOADGEN" --url "$URL" --token "$TOKEN" --server-pid "$PID" --quiet \
        --rate "$RATE" --connections 16 --follow 10 --poll-ms 250 \
        --duration "$BURST" --drain 10 --json "$OUT/burst-$CYCLE.json" >/dev/null
    echo "burst $CYCLE: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['accepted'], 'accepted')" "$OUT/burst-$CYCLE.json"), data $(du -sb "$DATA" | cut -f1) bytes"
    sleep "$QUIET"
done
kill "$SAMPLER" && SAMPLER=
curl -s -H "Authorization: Bearer $TOKEN" "$URL/metrics" >"$OUT/metrics.txt"
stop

say "checks"
ACCEPTED=$(python3 -c "import json,glob; print(sum(json.load(open(f))['accepted'] for f in glob.glob('$OUT/burst-*.json')))")
MAX_DU=$(sort -k2 -n "$OUT/du.txt" | tail -n 1 | cut -d' ' -f2)
BUDGET=$((BUDGET_MIB * 1024 * 1024))
echo "data directory: at most $MAX_DU bytes over $(wc -l <"$OUT/du.txt") samples; budget $BUDGET"
[ "$MAX_DU" -le "$BUDGET" ] || { echo "FAIL: the data directory exceeded the budget" >&2; exit 1; }

mapfile -t FILES < <(ls "$ARCHIVES"/*.jsonl.zst 2>/dev/null || true)
"$BIN" audit verify --data "$DATA" ${FILES[@]:+--archive "${FILES[@]}"} | tee "$OUT/verify.txt"
"$BIN" audit export --data "$DATA" --output "$OUT/live-audit.jsonl"
for f in "${FILES[@]}"; do zstd -dcq "$f"; done >"$OUT/archives.jsonl"

# Every case named in the chain, and the archived ones; the rest must be live.
python3 - "$OUT" <<'EOF' >"$OUT/ids.txt"
import json, sys
out = sys.argv[1]
named, archived = set(), set()
for line in open(f"{out}/live-audit.jsonl"):
    named.add(json.loads(line)["case_id"])
for line in open(f"{out}/archives.jsonl"):
    l = json.loads(line)
    if l["line"] == "audit":
        named.add(l["case_id"])
    elif l["line"] == "case":
        archived.add(l["case"]["id"])
named.discard("")
print(len(named), len(archived))
for i in sorted(named - archived):
    print(i)
EOF
read -r NAMED ARCHIVED < <(head -n 1 "$OUT/ids.txt")
tail -n +2 "$OUT/ids.txt" >"$OUT/live-ids.txt"
LIVE=$(wc -l <"$OUT/live-ids.txt")
echo "cases: $ACCEPTED accepted by the load generator; $NAMED named in the chain: $ARCHIVED archived, $LIVE to find live"

STORE_BYTES=$(stat -c %s "$DATA/casegraph.redb")
start
MISSING=$(python3 - "$URL" "$TOKEN" "$OUT/live-ids.txt" <<'EOF'
import sys, urllib.request, urllib.error
url, token, ids = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().split()
missing = 0
for i in ids:
    req = urllib.request.Request(f"{url}/v1/cases/{i}", headers={"Authorization": f"Bearer {token}"})
    try:
        urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as e:
        missing += 1
        print(f"missing: {i} ({e.code})", file=sys.stderr)
print(missing)
EOF
)
stop
echo "cases neither live nor archived: $MISSING"
[ "$MISSING" -eq 0 ] || { echo "FAIL: cases lost" >&2; exit 1; }

say "bytes per case"
"$BIN" compact --data "$DATA" | tee "$OUT/compact.txt"
COMPACT_BYTES=$(stat -c %s "$DATA/casegraph.redb")
ARCHIVE_BYTES=$(cat "${FILES[@]}" /dev/null | wc -c)
python3 - <<EOF
live, archived = $LIVE, $ARCHIVED
def per(b, n): return f"{b / n / 1024:.1f} KiB" if n else "n/a"
print(f"live store: {$STORE_BYTES} bytes for {live} live cases = {per($STORE_BYTES, live)} per case")
print(f"after compaction: {$COMPACT_BYTES} bytes = {per($COMPACT_BYTES, live)} per live case")
print(f"archives: {$ARCHIVE_BYTES} bytes in {len('${FILES[*]}'.split())} files for {archived} cases = {per($ARCHIVE_BYTES, archived)} per case")
EOF
echo "retention runs archived $(metric casegraph_retention_archived_cases_total) cases; compactions while serving: $(metric casegraph_store_compactions_total), the last $(metric casegraph_store_last_compaction_bytes_before) -> $(metric casegraph_store_last_compaction_bytes_after) bytes in $(metric casegraph_store_last_compaction_milliseconds) ms"
grep -h "store compacted" "$OUT/server.log" | sed 's/\x1b\[[0-9;]*m//g' >"$OUT/compactions.txt" || true
echo "compactions while serving (server log): $(wc -l <"$OUT/compactions.txt") in target/lifecycle/compactions.txt"
echo "OK"
