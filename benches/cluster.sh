#!/usr/bin/env bash
# fulmar bench across a three-node fulmar cluster (one nats-server with
# JetStream) against the same load on one node, in one run.
#
#   cargo build --release -p fulmar
#   benches/cluster.sh                 # DURATION=10 per scenario
#   ONLY=steady DURATION=5 benches/cluster.sh
#
# Topologies, each on fresh processes:
#   single  one `fulmar broker` without --cluster; publishers and subscribers on it
#   local   three nodes; publishers and subscribers all on node A (what clustering
#           costs a node: every message also goes to NATS)
#   cross   three nodes; publishers on node A, subscribers on nodes B and C
#           (every delivery crosses NATS)
# Every broker runs with --no-persistence. Needs nats-server and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${FULMAR:-target/release/fulmar}
DURATION=${DURATION:-10}
ONLY=${ONLY:-}
export PATH="$PATH:/usr/sbin"
command -v nats-server >/dev/null || { echo "cluster.sh: nats-server is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "cluster.sh: python3 is needed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "cluster.sh: build $BIN first (cargo build --release -p fulmar)" >&2; exit 1; }

OUT=$(mktemp -d)
PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$OUT"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_line() { # file needle
    for _ in $(seq 1 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "cluster.sh: no '$2' in $1:" >&2
    cat "$1" >&2
    exit 1
}

# Starts a broker; prints its port. Extra arguments go to `fulmar broker`.
start_broker() { # name args...
    local name=$1
    shift
    local port
    port=$(free_port)
    "$BIN" broker -p "$port" --bind 127.0.0.1 --no-persistence "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" &
    PIDS+=($!)
    wait_for_line "$OUT/$name.log" "listening"
    echo "$port"
}

start_nats() {
    local port
    port=$(free_port)
    mkdir -p "$OUT/js"
    nats-server -js -a 127.0.0.1 -p "$port" -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
    PIDS+=($!)
    wait_for_line "$OUT/nats.log" "Server is ready"
    echo "nats://127.0.0.1:$port"
}

SCENARIOS=(
    "steady-q1|-P 1 -S 1 -q 1 --rate 1000"
    "fanin-q0|-P 10 -S 1 -q 0"
    "fanin-q1|-P 10 -S 1 -q 1"
    "fanout-q0|-P 1 -S 10 -q 0"
    "fanout-q1|-P 1 -S 10 -q 1"
)

for topology in single local cross; do
    stop_all
    case $topology in
        single)
            a=$(start_broker single)
            subs=$a
            ;;
        local | cross)
            url=$(start_nats)
            a=$(start_broker "$topology-a" --cluster "$url")
            b=$(start_broker "$topology-b" --cluster "$url")
            c=$(start_broker "$topology-c" --cluster "$url")
            for n in a b c; do wait_for_line "$OUT/$topology-$n.log" "cluster: connected to NATS"; done
            if [ "$topology" = local ]; then subs=$a; else subs="$b,$c"; fi
            ;;
    esac
    for entry in "${SCENARIOS[@]}"; do
        name=${entry%%|*}
        args=${entry#*|}
        [ -n "$ONLY" ] && [[ $name != *$ONLY* ]] && continue
        echo "== $topology $name: fulmar bench -p $a --sub-ports $subs $args -d $DURATION" >&2
        rc=0
        # shellcheck disable=SC2086
        "$BIN" bench -p "$a" --sub-ports "$subs" $args -d "$DURATION" \
            -t "cl-$topology-$name/{i}" -f "cl-$topology-$name/#" --json \
            >"$OUT/$name.$topology.json" 2>"$OUT/$name.$topology.err" || rc=$?
        # Exit 0, or 2 (acknowledged QoS 1/2 messages lost: in the table),
        # and no errors in the report; else failed, kept apart.
        if ! { [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; } ||
            ! python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("errors") != 0)' \
                "$OUT/$name.$topology.json" 2>/dev/null; then
            echo "   failed (exit $rc): $(tail -3 "$OUT/$name.$topology.err")" >&2
            mv -f "$OUT/$name.$topology.json" "$OUT/$name.$topology.failed" 2>/dev/null || true
        fi
    done
done
stop_all

python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name, topo):
    path = os.path.join(out, f"{name}.{topo}.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)
names = []
for f in sorted(os.listdir(out)):
    # A scenario whose runs all failed has only .failed and .err files:
    # it keeps its row, marked failed.
    if f.endswith((".json", ".failed", ".err")):
        n = f.split(".")[0]
        if n not in names:
            names.append(n)
order = ["steady-q1", "fanin-q0", "fanin-q1", "fanout-q0", "fanout-q1"]
names.sort(key=lambda n: order.index(n) if n in order else 99)
print("| scenario | topology | received msg/s | p50 us | p99 us | lost | vs single msg/s | p50 - single p50 |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
def rate(r):
    return r["received_msgs_per_s"]
for n in names:
    single = load(n, "single")
    for topo in ["single", "local", "cross"]:
        r = load(n, topo)
        if r is None:
            print(f"| {n} | {topo} | failed | | | | | |")
            continue
        lat = r["latency"]
        lost = sum(q.get("lost", 0) for q in r.get("qos", []))
        ratio = hop = ""
        if single:
            ratio = f"{rate(r) / rate(single):.2f}x" if rate(single) else ""
            hop = f"{lat['p50_us'] - single['latency']['p50_us']:+d}"
        print(f"| {n} | {topo} | {rate(r):,.0f} | {lat['p50_us']} | {lat['p99_us']} | {lost} | {ratio} | {hop} |")
EOF
