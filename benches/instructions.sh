#!/usr/bin/env bash
# Counts the instructions a `fulmar broker` executes per delivered message,
# under callgrind, for a fixed number of messages: a measure of the broker's
# work that the noise of a shared machine does not move (throughput does).
# Compare two builds of the broker in one run:
#
#   benches/instructions.sh OLD_BINARY NEW_BINARY            # fan-out, 1 x 50, QoS 1
#   ARGS="-P 10 -S 1 -q 1 -n 4000" benches/instructions.sh A B   # fan-in
#
# ARGS are `fulmar bench` options (default: 1 publisher, 50 subscribers,
# QoS 1, 4000 messages, 200 000 deliveries). The load generator is the
# `fulmar` of this tree (release build). The count includes the broker's
# start and end, a few million instructions: use enough messages that they
# do not matter. Needs valgrind.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: benches/instructions.sh BROKER_BINARY [BROKER_BINARY...]" >&2
    exit 2
fi
if ! command -v valgrind > /dev/null; then
    echo "instructions.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 1
fi
ARGS=${ARGS:--P 1 -S 50 -q 1 -n 4000}
PORT=${PORT:-28861}
OUT=${OUT:-$(mktemp -d /tmp/fulmar-instructions.XXXXXX)}
mkdir -p "$OUT"
cargo build --release -q -p fulmar
BENCH=target/release/fulmar
printf '[[listener]]\nprotocol = "tcp"\nbind = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n' "$PORT" \
    > "$OUT/fulmar.toml"

i=0
for broker in "$@"; do
    i=$((i + 1))
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$i.cg" \
        "$broker" broker -c "$OUT/fulmar.toml" --no-persistence 2> "$OUT/$i.valgrind" &
    pid=$!
    for _ in $(seq 300); do
        (exec 3<> "/dev/tcp/127.0.0.1/$PORT") 2> /dev/null && break
        sleep 0.2
    done
    # shellcheck disable=SC2086 # ARGS are several options
    "$BENCH" bench -p "$PORT" --json --warmup 0 -d 600 --drain-timeout 120 $ARGS \
        > "$OUT/$i.json" 2> "$OUT/$i.err"
    # valgrind passes the signal on; the broker shuts down and callgrind writes its counts.
    kill -INT "$pid"
    wait "$pid" || true
    python3 - "$OUT/$i.json" "$OUT/$i.cg" "$broker" <<'EOF'
import json, sys
report, counts, broker = sys.argv[1:4]
received = json.load(open(report))["received"]
total = next(int(line.split()[1]) for line in open(counts) if line.startswith("summary:"))
print(f"{broker}: {received} messages received, {total} instructions, "
      f"{total / max(received, 1):.0f} per message")
EOF
done
echo "callgrind files in $OUT" >&2
