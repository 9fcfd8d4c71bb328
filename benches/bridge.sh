#!/usr/bin/env bash
# Bridged throughput: publishers on an "edge" broker, the subscriber on a
# "cloud" broker, the edge bridging `bench/#` out to the cloud. Runs the same
# `fulmar bench` scenarios with two `fulmar broker`s (a [[bridge]] table) and
# with two Debian mosquitto brokers (a `connection` section), both bridges
# MQTT 5.0 at QoS 1, and prints the fulmar/mosquitto ratios.
#
#   benches/bridge.sh                 # about 2 minutes
#   ROUNDS=3 benches/bridge.sh        # brokers alternating which goes first
#   DURATION=5 benches/bridge.sh
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
EDGE_PORT=${EDGE_PORT:-28841}
CLOUD_PORT=${CLOUD_PORT:-28842}
OUT=${OUT:-$(mktemp -d /tmp/fulmar-bridge-bench.XXXXXX)}
mkdir -p "$OUT"

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "bridge.sh: mosquitto not found (apt-get install mosquitto)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bridge.sh: python3 is needed for the table" >&2; exit 1; }
cargo build --release -p fulmar --quiet
BIN=$PWD/target/release/fulmar

# Both brokers of a pair keep their defaults (queues of 1000 messages), plus
# TCP_NODELAY for mosquitto, which fulmar sets too.
cat >"$OUT/cloud.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$CLOUD_PORT"
[log]
level = "warn"
EOF
cat >"$OUT/edge.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$EDGE_PORT"
[log]
level = "warn"
[[bridge]]
name = "cloud"
address = "127.0.0.1:$CLOUD_PORT"
client_id = "edge"
[[bridge.topic]]
pattern = "bench/#"
direction = "out"
qos = 1
EOF
common="allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
log_type error
user root"
printf 'listener %s 127.0.0.1\n%s\n' "$CLOUD_PORT" "$common" >"$OUT/cloud.conf"
printf 'listener %s 127.0.0.1\n%s\nconnection cloud\naddress 127.0.0.1:%s\nremote_clientid edge\nbridge_protocol_version mqttv50\ntopic bench/# out 1\n' \
    "$EDGE_PORT" "$common" "$CLOUD_PORT" >"$OUT/edge.conf"

PIDS=()
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "bridge.sh: nothing listens on $1" >&2
    exit 1
}
start_pair() { # broker
    case $1 in
        fulmar)
            "$BIN" broker -c "$OUT/cloud.toml" --no-persistence 2>>"$OUT/fulmar.log" &
            PIDS+=($!)
            wait_port "$CLOUD_PORT"
            "$BIN" broker -c "$OUT/edge.toml" --no-persistence 2>>"$OUT/fulmar.log" &
            PIDS+=($!)
            ;;
        mosquitto)
            "$MOSQUITTO" -c "$OUT/cloud.conf" 2>>"$OUT/mosquitto.log" &
            PIDS+=($!)
            wait_port "$CLOUD_PORT"
            "$MOSQUITTO" -c "$OUT/edge.conf" 2>>"$OUT/mosquitto.log" &
            PIDS+=($!)
            ;;
    esac
    wait_port "$EDGE_PORT"
    sleep 1 # the bridge connects and subscribes
}
stop_pair() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap stop_pair EXIT

D=$DURATION
SCENARIOS=(
    "bridge-q0|-P 10 -S 1 -q 0 -t bench/{i} -f bench/# -d $D"
    "bridge-q1|-P 10 -S 1 -q 1 -t bench/{i} -f bench/# -d $D"
    "bridge-steady-q1|-P 10 -S 1 -q 1 -t bench/{i} -f bench/# --rate 1000 -d $D"
)
for round in $(seq "$ROUNDS"); do
    for entry in "${SCENARIOS[@]}"; do
        name=${entry%%|*}
        args=${entry#*|}
        order="fulmar mosquitto"
        if [ $((round % 2)) -eq 0 ]; then order="mosquitto fulmar"; fi
        for broker in $order; do
            start_pair "$broker"
            report=$OUT/$name.$broker.r$round
            echo "== $name on $broker (round $round of $ROUNDS): fulmar bench -p $EDGE_PORT --sub-ports $CLOUD_PORT $args" >&2
            rc=0
            # shellcheck disable=SC2086 # the arguments are split on purpose
            "$BIN" bench -p "$EDGE_PORT" --sub-ports "$CLOUD_PORT" --json $args \
                >"$report.json" 2>"$report.err" || rc=$?
            # Exit 0, or 2 (acknowledged QoS 1/2 messages lost: in the
            # table), and no errors in the report; else failed, kept apart.
            if ! { [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; } ||
                ! python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("errors") != 0)' \
                    "$report.json" 2>/dev/null; then
                echo "   failed (exit $rc): $(tail -n 1 "$report.err")" >&2
                mv -f "$report.json" "$report.failed" 2>/dev/null || true
            fi
            stop_pair
        done
    done
done

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
names = []
for f in sorted(os.listdir(out), key=lambda f: os.path.getmtime(os.path.join(out, f))):
    # A scenario whose runs all failed has only .failed and .err files:
    # it keeps its row, marked failed.
    if f.endswith((".json", ".failed", ".err")):
        n = f.rsplit(".", 3)[0]
        if n not in names:
            names.append(n)

def cols(n, b, r):
    try:
        with open(os.path.join(out, f"{n}.{b}.r{r}.json")) as fh:
            j = json.load(fh)
    except (OSError, ValueError):
        return None
    return (j["received_msgs_per_s"], j["latency"]["p99_us"], sum(q["lost"] for q in j["qos"]))

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

print(f"median of {rounds} round(s)")
print(f"{'scenario':<17} {'fulmar msg/s':>13} {'mosq msg/s':>11} {'ratio':>6} "
      f"{'fulmar p99 us':>14} {'mosq p99 us':>12} {'p99 ratio':>9} {'lost f/m':>11}")
for n in names:
    f = [cols(n, "fulmar", r) for r in range(1, rounds + 1)]
    m = [cols(n, "mosquitto", r) for r in range(1, rounds + 1)]
    fr, mr = med(x and x[0] for x in f), med(x and x[0] for x in m)
    fp, mp = med(x and x[1] for x in f), med(x and x[1] for x in m)
    fl = sum(x[2] for x in f if x)
    ml = sum(x[2] for x in m if x)
    ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b else "-"
    fmt = lambda v: f"{v:.0f}" if v is not None else "failed"
    failed = sum(x is None for x in f) + sum(x is None for x in m)
    lost = f"{fl}/{ml}" + (f" ({failed} failed)" if failed else "")
    print(f"{n:<17} {fmt(fr):>13} {fmt(mr):>11} {ratio(fr, mr):>6} "
          f"{fmt(fp):>14} {fmt(mp):>12} {ratio(fp, mp):>9} {lost:>11}")
print(f"\nreports: {out}")
EOF
