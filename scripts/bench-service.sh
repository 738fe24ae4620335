#!/usr/bin/env bash
# End-to-end service benchmark of one firmware profile on this machine (docs/benchmarks.md,
# "Service"). Not part of `make test`: it takes several minutes and its numbers are
# recorded, never asserted.
#
#   cargo build --release
#   scripts/bench-service.sh edge-small        # CPUS=0,1 SECONDS_PER_RUN=20 by default
#
# The release server runs pinned with taskset to the profile's cores (the load generator
# shares them: this machine has no others), on a fresh data directory under target/ (the
# repository's disk, never a tmpfs). Runs, each on the profile as shipped unless said:
#   intake     closed loop, 64 senders, with limits.queue_depth raised so that the case
#              workers cannot stop intake: what durable acceptance alone sustains
#   saturation closed loop, 16 senders: the whole pipeline (accept, run, reviewer tasks,
#              every customer question answered)
#   half       open loop at half the pipeline's saturation rate: latency in steady state,
#              with the server's own acceptance and store-write (sync) percentiles over
#              the run beside the client's, so a tail can be told apart from the disk's
#   half of intake  open loop at half the intake rate, acceptance only, on a server of its
#              own with the queue raised as for intake (on the shipped one it would measure
#              the queue's wait once the workers fall behind)
#   overload   open loop at twice the saturation rate for OVERLOAD_SECONDS (60 by
#              default): only 202/429/503, RSS against the budget, every accepted case runs
# plus start-up time to /readyz (the model loaded), idle RSS, binary size, disk bytes per
# case, and the two limits the pipeline is measured against in the same run: this disk's
# raw synchronous-write rate and the intent model's standalone throughput (`casegraph
# classify`, the profile's threads and batch size, same CPUs). Reports (JSON) land in
# target/bench-service/; the last lines print the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-edge-small}
CPUS=${CPUS:-0,1}
RUN=${SECONDS_PER_RUN:-20}
OVERLOAD_RUN=${OVERLOAD_SECONDS:-60}
PORT=${PORT:-18181}
BIN=${BIN:-target/release/casegraph}
LOADGEN=target/release/casegraph-loadgen
OUT=target/bench-service
URL=http://127.0.0.1:$PORT
PID=
# How the server gets the profile; SERVER_ENV adds CASEGRAPH_* settings to every start.
SERVE_ARGS=${SERVE_ARGS---profile $PROFILE}
SERVER_ENV=${SERVER_ENV:-}

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
trap '[ -n "$PID" ] && kill $PID 2>/dev/null || true' EXIT

say() { printf '\n== %s\n' "$*"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
scrape() { curl -s -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$URL/metrics" >"$1"; }
# percentiles BEFORE AFTER: upper bounds of the buckets that hold p50 / p95 / p99 of the
# server's histograms over the interval between two scrapes of /metrics.
percentiles() {
    python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path, name):
    out = {}
    for line in open(path):
        m = re.match(name + r'_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
def bound(le):
    return float("inf") if le == "+Inf" else float(le)
for name, what in [("casegraph_accept_duration_seconds", "acceptance made durable"),
                   ("casegraph_store_write_duration_seconds", "store write (one sync each)")]:
    a, z = buckets(sys.argv[1], name), buckets(sys.argv[2], name)
    if "+Inf" not in z:
        continue
    total = z["+Inf"] - a.get("+Inf", 0)
    order = sorted(z, key=bound)
    def upto(p):
        for le in order:
            if z[le] - a.get(le, 0) >= p * total:
                return "inf" if le == "+Inf" else f"{bound(le) * 1000:g}"
    print(f"server {what}: p50 / p95 / p99 <= {upto(.5)} / {upto(.95)} / {upto(.99)} ms ({total:.0f})")
PY
}

# start DATA [ENV=VALUE...]: starts the server, waits for /readyz, prints the time it took.
start() {
    local data=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    env $SERVER_ENV "$@" taskset -c "$CPUS" "$BIN" serve $SERVE_ARGS --data "$data" \
        --listen "127.0.0.1:$PORT" >"$data.out" 2>"$data.log" &
    PID=$!
    until "$BIN" health --url "$URL/readyz" >/dev/null 2>&1; do sleep 0.005; done
    t1=$(date +%s.%N)
    echo "start-up to /readyz: $(echo "($t1 - $t0) * 1000" | bc -l | xargs printf '%.0f') ms"
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
lg() {
    taskset -c "$CPUS" "$LOADGEN" --url "$URL" --token-file "$TOKEN_FILE" --server-pid "$PID" \
        --quiet "$@"
}

say "binary: $(stat -c %s "$BIN") bytes"

say "raw synchronous 4 KiB writes on this disk (dd oflag=dsync)"
FSYNC_T0=$(date +%s.%N)
dd if=/dev/zero of="$OUT/fsync.probe" bs=4k count=400 oflag=dsync 2>&1 | tail -n 1
FSYNC_T1=$(date +%s.%N)
FSYNC=$(python3 -c "print(round(400 / ($FSYNC_T1 - $FSYNC_T0)))")
echo "raw synchronous writes: $FSYNC/s"
rm -f "$OUT/fsync.probe"

# The profile's inference settings, for the standalone model run.
profile_value() {
    python3 -c "import sys, tomllib; p = tomllib.load(open(sys.argv[1], 'rb')); print(p.get('inference', {}).get(sys.argv[2], sys.argv[3]))" \
        "firmware-profiles/$PROFILE.toml" "$1" "$2"
}
THREADS=$(profile_value threads 1)
BATCH=$(profile_value batch_size 16)
say "intent model alone: casegraph classify, $THREADS thread(s), batch $BATCH, 2,000 requests of the mix"
python3 - "$OUT/classify.jsonl" <<'PY'
import json, sys
samples = [json.loads(l) for l in open("workflows/samples/requests.jsonl") if l.strip()]
texts = [{"text": s["text"], "channel": s["channel"]} for s in samples if s.get("text", "").strip()]
with open(sys.argv[1], "w") as f:
    for i in range(2000):
        f.write(json.dumps(texts[i % len(texts)], ensure_ascii=False) + "\n")
PY
CLS_T0=$(date +%s.%N)
taskset -c "$CPUS" "$BIN" classify --input "$OUT/classify.jsonl" --threads "$THREADS" --batch "$BATCH" >/dev/null
CLS_T1=$(date +%s.%N)
CLASSIFY=$(python3 -c "print(round(2000 / ($CLS_T1 - $CLS_T0)))")
echo "intent model alone: $CLASSIFY requests/s (load included)"

say "intake: $PROFILE with limits.queue_depth=1000000, closed loop 64 senders, ${RUN}s"
start "$OUT/intake" CASEGRAPH_LIMITS__QUEUE_DEPTH=1000000
TOKEN_FILE=$OUT/intake/admin.token
lg --concurrency 64 --no-follow --duration "$RUN" --json "$OUT/intake.json"
stop

say "$PROFILE as shipped, pinned to CPUs $CPUS"
start "$OUT/data"
TOKEN_FILE=$OUT/data/admin.token
sleep 2
echo "idle RSS: $(rss_mib "$PID") MiB"

# Every case is followed, so that every question a case asks its customer (a confirmation
# before an irreversible action, a missing detail) is answered: a case left waiting for its
# customer never finishes, and with only a tenth followed about half the mix would not.
say "saturation: closed loop, 16 senders, ${RUN}s (every case followed and its questions answered)"
lg --concurrency 16 --follow 100 --poll-ms 250 --duration "$RUN" --drain 120 --json "$OUT/saturation.json"
SAT=$(field "$OUT/saturation.json" server_finished_per_s)

HALF=$(python3 -c "print(max(1, round($SAT / 2)))")
say "half load: open loop at $HALF/s (half of $SAT finished cases/s), ${RUN}s"
scrape "$OUT/half.before"
lg --rate "$HALF" --connections 32 --follow 100 --duration "$RUN" --drain 120 --json "$OUT/half.json"
scrape "$OUT/half.after"
percentiles "$OUT/half.before" "$OUT/half.after"

TWICE=$(python3 -c "print(max(2, round($SAT * 2)))")
say "overload: open loop at $TWICE/s (twice $SAT/s), ${OVERLOAD_RUN}s, 256 connections"
lg --rate "$TWICE" --connections 256 --follow 10 --poll-ms 250 --duration "$OVERLOAD_RUN" --drain 300 --json "$OUT/overload.json"

say "after the runs: server metrics"
sleep 5
scrape "$OUT/after.metrics" || true
grep -E '^casegraph_(classifications_total|pending_cases|open_tasks|intake_rejected_total|process_resident_bytes|memory_budget_bytes|case_segments_total|store_disk_bytes)' \
    "$OUT/after.metrics" || true
say "effective memory settings and fit (GET /v1/admin/settings)"
curl -s -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$URL/v1/admin/settings" \
    | python3 -c "import json,sys; v=json.load(sys.stdin); print(json.dumps(v['memory'])); print('profile', v['profile']['name'], 'fits:', v['profile']['fits'])" || true
stop

INTAKE=$(field "$OUT/intake.json" accepted_per_s)
HALF_INTAKE=$(python3 -c "print(max(1, round($INTAKE / 2)))")
say "half of intake: open loop at $HALF_INTAKE/s (half of $INTAKE accepted/s), 5s, acceptance only, queue raised"
start "$OUT/half-intake" CASEGRAPH_LIMITS__QUEUE_DEPTH=1000000
TOKEN_FILE=$OUT/half-intake/admin.token
scrape "$OUT/half-intake.before"
lg --rate "$HALF_INTAKE" --connections 64 --no-follow --duration 5 --json "$OUT/half-intake.json"
scrape "$OUT/half-intake.after"
percentiles "$OUT/half-intake.before" "$OUT/half-intake.after"
stop

say "disk bytes per case"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
runs = [json.load(open(f"{out}/{n}.json")) for n in ("saturation", "half", "overload")]
accepted = sum(r["accepted"] for r in runs)
finished = sum(r.get("server_finished_cases", 0) for r in runs)
data = f"{out}/data"
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
print(f"data directory {size} bytes; {accepted} accepted, {finished:.0f} finished cases; "
      f"{size / max(accepted, 1):.0f} bytes per accepted case")
PY

say "ratios (same run)"
python3 - "$OUT" "$FSYNC" "$CLASSIFY" <<'PY'
import json, sys
out, fsync, classify = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
intake = json.load(open(f"{out}/intake.json"))["accepted_per_s"]
sat = json.load(open(f"{out}/saturation.json"))["server_finished_per_s"]
print(f"durable intake {intake:.0f} accepted/s = {intake / fsync:.1f}x the raw sync rate ({fsync:.0f}/s)")
print(f"pipeline {sat:.0f} finished cases/s = {sat / classify:.2f}x the model alone ({classify:.0f}/s)")
PY
