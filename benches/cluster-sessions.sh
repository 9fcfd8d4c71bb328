#!/usr/bin/env bash
# Durable QoS 1 to persistent sessions: one `fulmar broker` with its default
# on-disk store (redb) against one `fulmar broker --cluster` node whose
# sessions live in JetStream (the default with --cluster), alternating, two
# rounds. Needs nats-server and python3.
#
#   cargo build --release -p fulmar
#   benches/cluster-sessions.sh          # D=10 seconds per run
set -u
cd "$(dirname "$0")/.."
BIN=${FULMAR:-target/release/fulmar}
command -v nats-server >/dev/null || { echo "cluster-sessions.sh: nats-server is needed" >&2; exit 1; }
D=${D:-10}
OUT=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NP=$(free_port)
nats-server -js -a 127.0.0.1 -p $NP -sd $OUT/nats >/dev/null 2>&1 &
NATS=$!
sleep 1
run() { # topo scenario args...
  local topo=$1 name=$2; shift 2
  local port=$(free_port)
  rm -rf $OUT/data; mkdir -p $OUT/data
  if [ $topo = single ]; then
    $BIN broker -p $port --data-dir $OUT/data 2>$OUT/b.log &
  else
    $BIN broker -p $port --data-dir $OUT/data --cluster nats://127.0.0.1:$NP 2>$OUT/b.log &
  fi
  local pid=$!
  for i in $(seq 100); do grep -q listening $OUT/b.log && break; sleep 0.1; done
  local rc=0
  $BIN bench -p $port "$@" -d $D --json > $OUT/r.json 2>/dev/null || rc=$?
  kill $pid; wait $pid 2>/dev/null
  # Exit 0, or 2 (acknowledged QoS 1/2 messages lost: printed), and no
  # errors in the report; else the run failed.
  if ! { [ $rc -eq 0 ] || [ $rc -eq 2 ]; } ||
    ! python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("errors") != 0)' $OUT/r.json 2>/dev/null; then
    echo "$topo $name failed (exit $rc)"
    return
  fi
  python3 - "$topo" "$name" $OUT/r.json <<'PY'
import json,sys
t,n,f=sys.argv[1:4]
r=json.load(open(f))
def g(*ks):
    x=r
    for k in ks:
        x=x.get(k,{}) if isinstance(x,dict) else {}
    return x
q=r["qos"][0]
print(f"{t:8} {n:18} recv/s {r['received_msgs_per_s']:10.0f} p50 {r['latency']['p50_us']:7} p99 {r['latency']['p99_us']:8} lost {q['lost']} dup {q['duplicated']} acked {q['acked']}")
PY
}
for round in 1 2; do
  for topo in single cluster; do
    run $topo persist-fanin-q1 -P 10 -S 1 -q 1 --persistent -t 'bench/p/{i}' -f 'bench/p/#'
    run $topo persist-fanout-q1 -P 1 -S 10 -q 1 --persistent -t bench/p -f bench/p
  done
done
kill $NATS; wait $NATS 2>/dev/null; rm -rf $OUT
