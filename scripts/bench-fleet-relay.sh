#!/usr/bin/env bash
# The fleet relay's added CPU per case (docs/fleet.md, "Box side: cost of the relay"): the
# same open-loop load against a box without [fleet] and against one relaying into a local
# nats-server (the leaf-node topology: the server runs on the box). CPU seconds of each
# process are read from /proc/<pid>/stat before the load and after the box finished every
# case and the relay's backlog is 0, and divided by the cases the server finished.
# Not part of `make test`; its numbers are recorded, never asserted.
#
#   cargo build --release --locked -p casegraph -p casegraph-loadgen
#   scripts/setup.sh test            # installs .local/nats/nats-server
#   scripts/bench-fleet-relay.sh     # RATE=20 SECONDS_PER_RUN=30 REPEAT=3 CPUS=0,1 by default
#
# The two boxes run alternately REPEAT times (fresh data directories each time) and the
# medians are compared: on a shared machine one pair of runs differs by more than the
# relay costs.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-20}
RUN=${SECONDS_PER_RUN:-30}
REPEAT=${REPEAT:-3}
CPUS=${CPUS:-0,1}
PORT=${PORT:-18281}
NATS_PORT=${NATS_PORT:-18222}
BIN=target/release/casegraph
LOADGEN=target/release/casegraph-loadgen
NATS=${NATS_SERVER:-.local/nats/nats-server}
OUT=target/bench-fleet-relay
URL=http://127.0.0.1:$PORT
PID=
NATS_PID=

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release -p casegraph -p casegraph-loadgen" >&2; exit 1; }
[ -x "$NATS" ] || { echo "no nats-server at $NATS: run scripts/setup.sh test" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; [ -n "$NATS_PID" ] && kill $NATS_PID 2>/dev/null; true' EXIT

say() { printf '\n== %s\n' "$*"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
metric() {
    curl -s -H "Authorization: Bearer $(cat "$1/admin.token")" "$URL/metrics" \
        | awk -v m="$2" '$1 == m { print $2 }'
}

start() {
    local data=$1; shift
    # shellcheck disable=SC2086
    env "$@" taskset -c "$CPUS" "$BIN" serve --data "$data" --listen "127.0.0.1:$PORT" \
        >"$data.out" 2>"$data.log" &
    PID=$!
    until "$BIN" health --url "$URL/readyz" >/dev/null 2>&1; do sleep 0.01; done
    until [ -s "$data/admin.token" ]; do sleep 0.01; done
    sleep 2
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }

# run NAME [ENV=VALUE...]: one box, one load; prints and records box (and nats) CPU per case.
# A NAME starting with `fleet` waits for the relay's backlog to drain before reading CPU.
run() {
    local name=$1; shift
    local data=$OUT/$name
    start "$data" "$@"
    local cpu0 ncpu0=0 cpu1 ncpu1=0
    cpu0=$(cpu_s "$PID")
    [ -n "$NATS_PID" ] && ncpu0=$(cpu_s "$NATS_PID")
    taskset -c "$CPUS" "$LOADGEN" --url "$URL" --token-file "$data/admin.token" --server-pid "$PID" \
        --quiet --rate "$RATE" --connections 16 --follow 10 --duration "$RUN" --drain 120 \
        --json "$OUT/$name.json"
    if [[ $name == fleet* ]]; then
        until [ "$(metric "$data" casegraph_fleet_backlog_records)" = 0 ]; do sleep 0.1; done
    fi
    cpu1=$(cpu_s "$PID")
    [ -n "$NATS_PID" ] && ncpu1=$(cpu_s "$NATS_PID")
    local cases
    cases=$(field "$OUT/$name.json" server_finished_cases)
    python3 - "$name" "$cpu0" "$cpu1" "$ncpu0" "$ncpu1" "$cases" "$OUT/$name.cpu.json" <<'PY'
import json, sys
name, c0, c1, n0, n1, cases, out = sys.argv[1:]
box = float(c1) - float(c0); nats = float(n1) - float(n0); cases = float(cases)
r = {"run": name, "cases": cases, "box_cpu_s": round(box, 3),
     "box_cpu_ms_per_case": round(1000 * box / cases, 3),
     "nats_cpu_s": round(nats, 3), "nats_cpu_ms_per_case": round(1000 * nats / cases, 3)}
print(json.dumps(r))
json.dump(r, open(out, "w"))
PY
    if [[ $name == fleet* ]]; then
        echo "published: $(curl -s -H "Authorization: Bearer $(cat "$data/admin.token")" "$URL/metrics" | grep '^casegraph_fleet_published_total' | tr '\n' ' ')"
    fi
    stop
}

mkdir -p "$OUT/nats"
cat >"$OUT/nats/nats.conf" <<CONF
host: 127.0.0.1
port: $NATS_PORT
server_name: b1
jetstream { store_dir: "$PWD/$OUT/nats/js", domain: b1 }
CONF

for i in $(seq 1 "$REPEAT"); do
    say "run $i/$REPEAT without [fleet]: open loop $RATE/s for ${RUN}s"
    run "plain-$i"

    say "run $i/$REPEAT with [fleet] into a local nats-server (leaf topology): open loop $RATE/s for ${RUN}s"
    rm -rf "$OUT/nats/js"
    taskset -c "$CPUS" "$NATS" -c "$OUT/nats/nats.conf" -l "$OUT/nats/nats.log" &
    NATS_PID=$!
    sleep 1
    run "fleet-$i" CASEGRAPH_FLEET__NATS_URL="nats://127.0.0.1:$NATS_PORT" CASEGRAPH_FLEET__BRANCH=b1 \
        CASEGRAPH_FLEET__DOMAIN=b1 CASEGRAPH_FLEET__HEALTH_INTERVAL=30s
    kill "$NATS_PID"; wait "$NATS_PID" 2>/dev/null || true; NATS_PID=
done

say "relay cost (medians of $REPEAT runs each)"
python3 - "$OUT" "$REPEAT" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
load = lambda name: [json.load(open(f"{d}/{name}-{i}.cpu.json")) for i in range(1, n + 1)]
p, f = load("plain"), load("fleet")
med = lambda runs, key: statistics.median(r[key] for r in runs)
pb, fb, fn = med(p, "box_cpu_ms_per_case"), med(f, "box_cpu_ms_per_case"), med(f, "nats_cpu_ms_per_case")
print("box CPU ms per finished case, without:", [r["box_cpu_ms_per_case"] for r in p])
print("box CPU ms per finished case, with:   ", [r["box_cpu_ms_per_case"] for r in f])
print(f"median: {pb:.3f} ms without, {fb:.3f} ms with the relay ({fb - pb:+.3f} ms, ratio {fb / pb:.3f}); "
      f"nats-server on the box: {fn:.3f} ms per case")
PY
