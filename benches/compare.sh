#!/usr/bin/env bash
# Runs the same `fulmar bench` scenarios against `fulmar broker` (release
# build) and the Debian `mosquitto` on this machine, one fresh broker per
# scenario, and prints a table of fulmar/mosquitto ratios.
#
#   benches/compare.sh                 # about 6 minutes
#   DURATION=5 benches/compare.sh      # shorter runs
#   ONLY=fanin benches/compare.sh      # scenarios whose name contains "fanin"
#   ROUNDS=3 benches/compare.sh        # every scenario 3 times (brokers alternating
#                                      # which goes first); the table gives the median
#                                      # of each column and the range of the ratios
#
# Each run's JSON report is kept in $OUT (printed at the end).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ONLY=${ONLY:-}
ROUNDS=${ROUNDS:-1}
FULMAR_PORT=${FULMAR_PORT:-28831}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-28832}
# TLS listeners (scenarios named tls-*), same certificate for both brokers.
FULMAR_TLS_PORT=${FULMAR_TLS_PORT:-28833}
MOSQUITTO_TLS_PORT=${MOSQUITTO_TLS_PORT:-28834}
OUT=${OUT:-$(mktemp -d /tmp/fulmar-compare.XXXXXX)}
mkdir -p "$OUT"

# 10 k idle connections need more than 10 k descriptors on each side.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"
if [ "$hard" -lt 10100 ]; then
    echo "compare.sh: ulimit -n is $hard; the 10 k idle scenario needs more" >&2
fi

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ ! -x "$MOSQUITTO" ]; then
    echo "compare.sh: mosquitto not found (apt-get install mosquitto)" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "compare.sh: python3 is needed for the table" >&2; exit 1; }

cargo build --release -p fulmar --quiet
BIN=$PWD/target/release/fulmar

# A CA and a server certificate for 127.0.0.1 (EC P-256), for the TLS
# scenarios; without openssl they are skipped.
TLS=
if command -v openssl >/dev/null; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$OUT/ca.key" -out "$OUT/ca.pem" -days 30 -subj "/CN=compare.sh CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$OUT/server.key" -out "$OUT/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$OUT/server.ext"
    openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" \
        -CAcreateserial -out "$OUT/server.pem" -days 30 -extfile "$OUT/server.ext" 2>/dev/null
    TLS=1
else
    echo "compare.sh: no openssl, the tls-* scenarios are skipped" >&2
fi

# fulmar: default limits, except room for 10 k connections and 1 MiB payloads
# (mosquitto has neither limit by default).
cat >"$OUT/fulmar.toml" <<EOF
[[listener]]
protocol = "tcp"
bind = "127.0.0.1:$FULMAR_PORT"
$( [ -n "$TLS" ] && printf '\n[[listener]]\nprotocol = "tls"\nbind = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\n' "$FULMAR_TLS_PORT" "$OUT/server.pem" "$OUT/server.key" )

[limits]
max_connections = 100000
max_packet_size = 268435455

[log]
level = "warn"
EOF
# mosquitto: its defaults (max_inflight_messages 20, max_queued_messages 1000)
# except TCP_NODELAY, which fulmar sets too: with Nagle on, a 20-message window
# to a subscriber stalls on delayed ACKs (about 2 k msg/s in fan-in).
cat >"$OUT/mosquitto.conf" <<EOF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
set_tcp_nodelay true
log_dest stderr
log_type error
user root
EOF
if [ -n "$TLS" ]; then
    printf 'listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\n' \
        "$MOSQUITTO_TLS_PORT" "$OUT/server.pem" "$OUT/server.key" >>"$OUT/mosquitto.conf"
fi

# Scenarios named persist-*: both brokers keep sessions on disk. fulmar
# commits every acknowledged QoS 1/2 message to its store before the PUBACK
# (durability "immediate", group commit); mosquitto's `persistence true`
# writes its in-memory state to disk at shutdown and every autosave_interval
# (default 30 minutes), not per message.
sed -e 's/^persistence false$/persistence true/' "$OUT/mosquitto.conf" >"$OUT/mosquitto-persist.conf"
# No queue limit for mosquitto here: with its default (1000) it dropped most
# of the fan-in messages for the persistent subscriber that fell behind
# (560 k lost in a 10 s run), which is not a throughput comparison. fulmar
# keeps its default limit (1000 per session) and lost none.
echo 'max_queued_messages 0' >>"$OUT/mosquitto-persist.conf"

# A report counts when `fulmar bench` exited 0, or 2 (acknowledged QoS 1/2
# messages lost, which the table shows), and its JSON says no errors;
# anything else is a failed run, kept as .failed and shown as failed.
report_ok() { # exit-status report.json
    { [ "$1" -eq 0 ] || [ "$1" -eq 2 ]; } &&
        python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("errors") != 0)' "$2" 2>/dev/null
}

BROKER_PID=
start_broker() { # broker scenario
    rm -rf "$OUT/data"
    mkdir -p "$OUT/data"
    case $1 in
        fulmar)
            if [[ $2 == persist* ]]; then store=(--data-dir "$OUT/data"); else store=(--no-persistence); fi
            "$BIN" broker -c "$OUT/fulmar.toml" "${store[@]}" 2>>"$OUT/fulmar.log" &
            BROKER_PID=$!
            PORT=$FULMAR_PORT
            ;;
        mosquitto)
            conf=$OUT/mosquitto.conf
            if [[ $2 == persist* ]]; then conf=$OUT/mosquitto-persist.conf; fi
            (cd "$OUT/data" && exec "$MOSQUITTO" -c "$conf") 2>>"$OUT/mosquitto.log" &
            BROKER_PID=$!
            PORT=$MOSQUITTO_PORT
            ;;
    esac
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "compare.sh: $1 did not start (see $OUT/$1.log)" >&2
    exit 1
}

stop_broker() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}
trap stop_broker EXIT

D=$DURATION
# name | fulmar bench arguments
SCENARIOS=(
    "fanin-q0|-P 50 -S 1 -q 0 -t bench/in/{i} -f bench/in/# -d $D"
    "fanin-q1|-P 50 -S 1 -q 1 -t bench/in/{i} -f bench/in/# -d $D"
    "fanin-q2|-P 50 -S 1 -q 2 -t bench/in/{i} -f bench/in/# -d $D"
    "fanout-q0|-P 1 -S 50 -q 0 -t bench/out -f bench/out -d $D"
    "fanout-q1|-P 1 -S 50 -q 1 -t bench/out -f bench/out -d $D"
    "topics1k-q0|-P 1000 -S 1000 -q 0 -t bench/o/{i} -f bench/o/{i} -d $D"
    "topics1k-q1|-P 1000 -S 1000 -q 1 -t bench/o/{i} -f bench/o/{i} -d $D"
    "steady-q1|-P 10 -S 10 -q 1 --rate 1000 -t bench/s/{i} -f bench/s/{i} -d $D"
    "large1MiB-q0|-P 1 -S 1 -q 0 -s 1048576 -t bench/big -f bench/big -d $D"
    "large1MiB-q1|-P 1 -S 1 -q 1 -s 1048576 -t bench/big -f bench/big -d $D"
    "idle10k|-P 0 -S 0 --idle 10000 --connect-concurrency 128 -d 1"
    "tls-fanin-q1|-P 50 -S 1 -q 1 -t bench/in/{i} -f bench/in/# -d $D"
    "tls-idle5k|-P 0 -S 0 --idle 5000 --connect-concurrency 64 -d 1"
    "persist-fanin-q1|-P 10 -S 1 -q 1 --persistent -t bench/p/{i} -f bench/p/# -d $D"
    "persist-fanout-q1|-P 1 -S 10 -q 1 --persistent -t bench/p -f bench/p -d $D"
)

for round in $(seq "$ROUNDS"); do
for entry in "${SCENARIOS[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    if [ -n "$ONLY" ] && [[ $name != *"$ONLY"* ]]; then continue; fi
    if [[ $name == tls-* ]] && [ -z "$TLS" ]; then continue; fi
    # Even rounds start with mosquitto, so that neither broker always runs
    # right after the other one on the same scenario.
    order="fulmar mosquitto"
    if [ $((round % 2)) -eq 0 ]; then order="mosquitto fulmar"; fi
    for broker in $order; do
        start_broker "$broker" "$name"
        extra=
        if [[ $name == tls-* ]]; then
            if [ "$broker" = fulmar ]; then PORT=$FULMAR_TLS_PORT; else PORT=$MOSQUITTO_TLS_PORT; fi
            extra="--cafile $OUT/ca.pem"
        fi
        report=$OUT/$name.$broker.r$round
        echo "== $name on $broker (round $round of $ROUNDS): fulmar bench -p $PORT $extra $args" >&2
        rc=0
        # shellcheck disable=SC2086 # the arguments are split on purpose
        "$BIN" bench -p "$PORT" --json --broker-pid "$BROKER_PID" $extra $args \
            >"$report.json" 2>"$report.err" || rc=$?
        if ! report_ok "$rc" "$report.json"; then
            echo "   failed (exit $rc): $(tail -n 1 "$report.err")" >&2
            mv -f "$report.json" "$report.failed" 2>/dev/null || true
        fi
        stop_broker
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

def load(n, b, r):
    try:
        with open(os.path.join(out, f"{n}.{b}.r{r}.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None

def median(xs):
    # None is a failed run; 0 is a measurement and stays in.
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"

def spread(pairs):
    """The range of the per-round ratios, when there are several rounds."""
    rs = sorted(a / b for a, b in pairs if a and b)
    return f" [{rs[0]:.2f}-{rs[-1]:.2f}]" if len(rs) > 1 else ""

if rounds > 1:
    print(f"median of {rounds} rounds; [range of the per-round ratios]")
print(f"{'scenario':<14} {'fulmar msg/s':>13} {'mosq msg/s':>13} {'ratio':>6} "
      f"{'fulmar p99 us':>14} {'mosq p99 us':>12} {'p99 ratio':>9} {'lost f/m':>11}")
for n in names:
    runs = [(load(n, "fulmar", r), load(n, "mosquitto", r)) for r in range(1, rounds + 1)]
    if "idle" in n:
        per = [(f and f.get("broker_bytes_per_connection"), m and m.get("broker_bytes_per_connection"))
               for f, m in runs]
        fb, mb = median(a for a, _ in per), median(b for _, b in per)
        fs = f"{fb:.0f} B/conn" if fb is not None else "failed"
        ms = f"{mb:.0f} B/conn" if mb is not None else "failed"
        rates = [(f["connect_rate"], m["connect_rate"]) for f, m in runs if f and m]
        rate = ""
        if rates:
            rate = f"connect {median(a for a, _ in rates):.0f}/{median(b for _, b in rates):.0f} conn/s"
        print(f"{n:<14} {fs:>13} {ms:>13} {ratio(fb, mb):>6}{spread(per)}"
              f"  (memory per idle connection; {rate})")
        continue

    def cols(r):
        if not r:
            return (None, None, None)
        return (r["received_msgs_per_s"], r["latency"]["p99_us"], sum(q["lost"] for q in r["qos"]))

    rows = [(cols(f), cols(m)) for f, m in runs]
    fr, mr = median(f[0] for f, _ in rows), median(m[0] for _, m in rows)
    fp, mp = median(f[1] for f, _ in rows), median(m[1] for _, m in rows)
    fl = sum(f[2] for f, _ in rows if f[2] is not None)
    ml = sum(m[2] for _, m in rows if m[2] is not None)
    failed = sum(f[0] is None for f, _ in rows) + sum(m[0] is None for _, m in rows)
    lost = f"{fl}/{ml}" + (f" ({failed} failed)" if failed else "")

    def fmt(v):
        return f"{v:.0f}" if v is not None else "failed"

    print(f"{n:<14} {fmt(fr):>13} {fmt(mr):>13} {ratio(fr, mr):>6} "
          f"{fmt(fp):>14} {fmt(mp):>12} {ratio(fp, mp):>9} {lost:>11}"
          f"{spread((f[0], m[0]) for f, m in rows)}{spread((f[1], m[1]) for f, m in rows)}")

# CPU per delivered message (`--broker-pid`): far steadier than throughput
# on a shared machine, and it says which broker does less work for the
# same messages, whether or not it was the bottleneck.
cpu_rows = []
for n in names:
    if "idle" in n:
        continue
    runs = [(load(n, "fulmar", r), load(n, "mosquitto", r)) for r in range(1, rounds + 1)]

    def cpu(r, who):
        c = r and r.get(f"{who}_cpu")
        return c and c.get("us_per_msg")

    def share(r, who):
        c = r and r.get(f"{who}_cpu")
        if not c or c["user_s"] + c["system_s"] <= 0:
            return None
        return 100 * c["system_s"] / (c["user_s"] + c["system_s"])

    def lost(r):
        return bool(r) and sum(q["lost"] for q in r["qos"]) > 0

    per = [(cpu(f, "broker"), cpu(m, "broker")) for f, m in runs]
    fc, mc = median(a for a, _ in per), median(b for _, b in per)
    if fc is None and mc is None:
        continue
    fs, ms = median(share(f, "broker") for f, _ in runs), median(share(m, "broker") for _, m in runs)
    gen = median(cpu(f, "bench") for f, _ in runs)
    marks = ("*" if any(lost(f) for f, _ in runs) else "", "*" if any(lost(m) for _, m in runs) else "")
    cpu_rows.append((n, fc, mc, per, fs, ms, gen, marks))
if cpu_rows:
    print()
    print(f"{'broker CPU':<14} {'fulmar us/msg':>13} {'mosq us/msg':>13} {'ratio':>6} "
          f"{'fulmar sys %':>12} {'mosq sys %':>10} {'generator us/msg':>16}")

    def num(v, f="{:.1f}"):
        return f.format(v) if v is not None else "-"

    for n, fc, mc, per, fs, ms, gen, (fm, mm) in cpu_rows:
        print(f"{n:<14} {num(fc) + fm:>13} {num(mc) + mm:>13} {ratio(mc, fc):>6} "
              f"{num(fs, '{:.0f}'):>12} {num(ms, '{:.0f}'):>10} {num(gen):>16}"
              f"{spread((b, a) for a, b in per)}")
print()
print("msg/s: messages received per second by all subscribers together; p99: end-to-end latency;")
print("lost: acknowledged QoS 1/2 messages (or QoS 0 messages sent) a subscriber never received,")
print("summed over the rounds; failed: the bench failed or its report counted errors (see *.err,")
print("*.failed). With several rounds, the brackets give the range of the per-round")
print("throughput ratio, then of the per-round p99 ratio. broker CPU: user + system time the")
print("broker was charged from the first message to the last delivery, per message received;")
print("ratio = mosquitto / fulmar (above 1: fulmar spent less); sys %: its share in the kernel;")
print("generator: the load generator's own CPU per message in the fulmar runs. *: that broker")
print("lost messages in the scenario, so its CPU is spread over fewer deliveries than were sent.")
EOF
echo "reports: $OUT" >&2
