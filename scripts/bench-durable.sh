#!/usr/bin/env bash
# The durable-workflow benchmark (docs/benchmarks.md, "Durable workflow, no model"): the
# five-step workflow of loadgen/durable/ (parse, risk rule, back-office call, decision,
# outcome rule) served on the shipped defaults, requests whose intent a trusted token states
# (`state_intent`), closed loop at several concurrencies. Not part of `make test`; its
# numbers are recorded, never asserted.
#
#   cargo build --release
#   scripts/bench-durable.sh                 # CONCURRENCY="8 32 128" SECONDS_PER_RUN=20
#
# Per run, on a fresh data directory under target/bench-durable/: finished cases/s (the
# server's own count), acceptance p50/p99, 429/503 answers, and the server's CPU time per
# finished case (utime + stime from /proc). The last run repeats the highest concurrency
# with a client that ignores Retry-After and sends again at once: what rejections cost.
# SERVER_ENV adds CASEGRAPH_* settings to every start (e.g. CASEGRAPH_LIMITS__QUEUE_WAIT=0s
# answers 429 at once, as before the queue wait); WORKFLOWS serves another copy of the
# workflow (e.g. one whose look-up has no `effect: read`, to see the write-ahead record's
# cost).
set -euo pipefail
cd "$(dirname "$0")/.."

CONCURRENCY=${CONCURRENCY:-8 32 128}
RUN=${SECONDS_PER_RUN:-20}
CPUS=${CPUS:-0,1}
PORT=${PORT:-18282}
BIN=${BIN:-target/release/casegraph}
LOADGEN=${LOADGEN:-target/release/casegraph-loadgen}
OUT=target/bench-durable
URL=http://127.0.0.1:$PORT
SERVER_ENV=${SERVER_ENV:-}
WORKFLOWS=${WORKFLOWS:-loadgen/durable/workflows}
PID=

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
trap '[ -n "$PID" ] && kill $PID 2>/dev/null || true' EXIT
TICK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'): v=v.get(k) if isinstance(v, dict) else None
print(v)" "$@"; }

# run NAME CONCURRENCY [LOADGEN FLAGS...]: one fresh server, one closed-loop run.
run() {
    local name=$1 conc=$2; shift 2
    local data=$OUT/$name
    mkdir -p "$data"
    "$BIN" token create --data "$data" --role admin --name bench \
        --capability state_intent >"$data.token" 2>/dev/null
    # shellcheck disable=SC2086
    env $SERVER_ENV CASEGRAPH_LOG=warn taskset -c "$CPUS" "$BIN" serve --data "$data" \
        --workflows "$WORKFLOWS" --listen "127.0.0.1:$PORT" \
        >"$data.out" 2>"$data.log" &
    PID=$!
    until "$BIN" health --url "$URL/readyz" >/dev/null 2>&1; do sleep 0.01; done
    local t0
    t0=$(cpu_ticks "$PID")
    taskset -c "$CPUS" "$LOADGEN" --url "$URL" --token-file "$data.token" --server-pid "$PID" \
        --quiet --concurrency "$conc" --duration "$RUN" --drain 30 \
        --mix loadgen/durable/requests.jsonl --keep-metadata --off-topic 0 --ocr-noise 0 --follow 5 \
        --json "$data.json" "$@" >"$data.report"
    local t1 finished
    t1=$(cpu_ticks "$PID")
    kill -TERM "$PID"; wait "$PID" || true; PID=
    finished=$(field "$data.json" server_finished_cases)
    python3 - "$name" "$conc" "$data.json" "$t0" "$t1" "$TICK" "$finished" <<'PY'
import json, sys
name, conc, path, t0, t1, tick, finished = sys.argv[1:]
r = json.load(open(path))
fin = float(finished) if finished not in ("None", "") else 0.0
cpu_ms = (int(t1) - int(t0)) * 1000 / int(tick)
answers = r.get("answers", {})
rejected = sum(v for k, v in answers.items() if k.startswith("429") or k.startswith("503"))
acc = r.get("acceptance_ms", {})
print(f"{name:<22} c={conc:>4}  finished/s {r.get('server_finished_per_s')!s:>8}  "
      f"accept p50 {acc.get('p50')!s:>6} ms p99 {acc.get('p99')!s:>7} ms  "
      f"429/503 {rejected:>8}  server CPU/finished case "
      f"{(cpu_ms / fin if fin else float('nan')):.3f} ms")
PY
}

echo "durable five-step workflow, shipped defaults, CPUs $CPUS, $RUN s per run"
for c in $CONCURRENCY; do
    run "closed-c$c" "$c"
done
top=${CONCURRENCY##* }
run "retry-at-once-c$top" "$top" --ignore-retry-after
echo "reports: $OUT/*.report, $OUT/*.json"
