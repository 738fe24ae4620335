#!/usr/bin/env bash
# What a customer's answer costs: the same stream of requests that make their cases ask a
# question (a refund letter without an amount, a lost card without customer number), once
# left unanswered and once answered through POST /v1/cases/{id}/messages by the load
# generator. Prints the answers' accept latency and the server's CPU time per answer (the
# difference of the two runs' CPU, divided by the answers posted).
#
#   cargo build --release -p casegraph -p casegraph-loadgen
#   scripts/bench-messages.sh [PROFILE]        # RATE=20 SECONDS_PER_RUN=20 CPUS=0,1
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-edge-small}
CPUS=${CPUS:-0,1}
RATE=${RATE:-20}
RUN=${SECONDS_PER_RUN:-20}
PORT=${PORT:-18182}
BIN=target/release/casegraph
LOADGEN=target/release/casegraph-loadgen
OUT=target/bench-messages
URL=http://127.0.0.1:$PORT
PID=

[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
trap '[ -n "$PID" ] && kill $PID 2>/dev/null || true' EXIT

# Requests whose cases ask the customer (the samples' conversations, without their answers).
python3 - "$OUT/mix.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open("workflows/samples/requests.jsonl") if l.strip()]
asking = [l for l in lines if "answers" in l and "metadata" not in l]
with open(sys.argv[1], "w") as f:
    for l in asking:
        l.pop("answers")
        f.write(json.dumps(l, ensure_ascii=False) + "\n")
PY

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])); [v := v[k] for k in sys.argv[2:]]; print(v)" "$@"; }

run() {
    local name=$1 percent=$2 data=$OUT/$1
    taskset -c "$CPUS" "$BIN" serve --profile "$PROFILE" --data "$data" --listen "127.0.0.1:$PORT" \
        >"$data.out" 2>"$data.log" &
    PID=$!
    until "$BIN" health --url "$URL/readyz" >/dev/null 2>&1; do sleep 0.01; done
    sleep 1
    local before after
    before=$(cpu_ticks "$PID")
    taskset -c "$CPUS" "$LOADGEN" --url "$URL" --token-file "$data/admin.token" --server-pid "$PID" \
        --quiet --mix "$OUT/mix.jsonl" --off-topic 0 --rate "$RATE" --connections 16 \
        --duration "$RUN" --drain 60 --poll-ms 100 --answer-percent "$percent" \
        --json "$OUT/$name.json" >"$OUT/$name.txt"
    after=$(cpu_ticks "$PID")
    kill -TERM "$PID"; wait "$PID" || true; PID=
    echo $((after - before)) >"$OUT/$name.cpu"
    echo "$name: $(cat "$OUT/$name.cpu") CPU ticks, $(field "$OUT/$name.json" accepted) accepted, $(field "$OUT/$name.json" customer_answers posted) answers posted"
}

run unanswered 0
run answered 100
python3 - "$OUT" "$(getconf CLK_TCK)" <<'PY'
import json, sys
out, hz = sys.argv[1], int(sys.argv[2])
a = json.load(open(f"{out}/answered.json"))
u = json.load(open(f"{out}/unanswered.json"))
ca, cu = (int(open(f"{out}/{n}.cpu").read()) for n in ("answered", "unanswered"))
posted = a["customer_answers"]["posted"]
acc = a["customer_answers"]["accept_ms"]
print(f"answers posted: {posted} (of {a['accepted']} cases); unanswered run: {u['customer_answers']['left_unanswered']} questions left")
print(f"answer accept ms p50 / p95 / p99 / max: {acc['p50']} / {acc['p95']} / {acc['p99']} / {acc['max']}")
print(f"request accept ms p50 (answered run / unanswered run): {a['acceptance_ms']['p50']} / {u['acceptance_ms']['p50']}")
if posted:
    print(f"server CPU: answered run {ca / hz:.2f} s, unanswered run {cu / hz:.2f} s; per answer {(ca - cu) / hz / posted * 1000:.2f} ms (classification of the answer, its segment, the case's end)")
PY
