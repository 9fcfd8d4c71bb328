#!/usr/bin/env bash
# The whole fulmar test suite, from a bare machine to a verdict.
#
#   ./scripts/test.sh
#
# Installs what the tests need when it is missing, then runs, in order:
# rustfmt, clippy (-D warnings, every target), rustdoc (-D warnings), the
# workspace tests (unit, integration, doc tests, fuzz-corpus replay, examples
# built), the benches built, and the fuzz crate checked. It ends with one line
# "N passed, N failed" summing every cargo test binary.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- install ---
need_root() { [ "$(id -u)" = 0 ] || { echo "run as root or install: $*" >&2; exit 1; }; }

ensure_rust_components() {
    for comp in rustfmt clippy; do
        if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            log "installing rust component $comp"
            rustup component add "$comp"
        fi
    done
}

# Whether python3 has paho-mqtt 2.x.
paho_2() {
    python3 -c 'import paho.mqtt, sys; sys.exit(0 if int(paho.mqtt.__version__.split(".")[0]) >= 2 else 1)' 2>/dev/null
}

# Real peers for the interop tests: mosquitto (broker and clients), paho-mqtt;
# nats-server (JetStream) for the fulmar-cluster tests; make for jemalloc.
ensure_peers() {
    local missing=()
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
    command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
    # jemalloc (the `fulmar` binary's allocator) is built from C with make.
    command -v make >/dev/null 2>&1 || missing+=(make)
    # openssl s_client checks the TLS versions a listener takes.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # paho-mqtt (the second client) runs on python3 and comes from pip,
    # which is needed only when paho-mqtt 2.x is missing.
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if ! paho_2 && ! python3 -m pip --version >/dev/null 2>&1; then
        missing+=(python3-pip)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        need_root "${missing[*]}"
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! paho_2; then
        log "installing paho-mqtt (2.x)"
        # Debian 12 and later mark the system Python as externally managed
        # (PEP 668): pip refuses, unless told to install beside Debian's own
        # packages (into /usr/local; Debian has no paho-mqtt 2.x package).
        python3 -m pip install -q 'paho-mqtt>=2,<3' 2>/dev/null \
            || python3 -m pip install -q --break-system-packages 'paho-mqtt>=2,<3' 2>&1 \
            | grep -v 'Running pip as the' || true
        python3 -c 'import paho.mqtt' || { echo "paho-mqtt did not install" >&2; exit 1; }
    fi
}

ensure_rust_components
ensure_peers
export PATH="$PATH:/usr/sbin"

# --------------------------------------------------------------------- run ---
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1
# A run starts from a fresh clone: incremental caches would only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
results=$(mktemp)
# Tests put their brokers' data, configs and certificates under the system
# temp dir: give them one of their own, removed at the end.
TMPDIR=$(mktemp -d -t fulmar-tests.XXXXXX)
export TMPDIR
trap 'rm -f "$results"; rm -rf "$TMPDIR"' EXIT

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

log "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked

log "cargo test --workspace (unit, integration, doc tests, fuzz corpus replay; examples built)"
cargo test --workspace --all-features --locked 2>&1 | tee -a "$results"

log "examples run (the self-contained ones; the client ones against a fulmar broker)"
for example in codec_roundtrip topic_routing embedded_broker custom_acl enhanced_auth custom_transport bridge sans_io_client \
    durable_consumer request_timeout publish_many work_queue; do
    echo "example $example"
    timeout 120 cargo run -q --locked -p fulmar-examples --example "$example" > "$TMPDIR/example.out" 2>&1 \
        || { cat "$TMPDIR/example.out"; echo "example $example failed" >&2; exit 1; }
done
example_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${CARGO_TARGET_DIR:-target}/debug/fulmar" broker --bind 127.0.0.1 -p "$example_port" --no-persistence \
    > "$TMPDIR/example-broker.log" 2>&1 &
example_broker=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$example_port") 2> /dev/null && break
    sleep 0.1
done
for example in publish request_response sans_io_client; do
    echo "example $example 127.0.0.1:$example_port"
    timeout 120 cargo run -q --locked -p fulmar-examples --example "$example" "127.0.0.1:$example_port" \
        > "$TMPDIR/example.out" 2>&1 \
        || { cat "$TMPDIR/example.out" "$TMPDIR/example-broker.log"; kill "$example_broker"; echo "example $example failed" >&2; exit 1; }
done
kill "$example_broker"
wait "$example_broker" 2> /dev/null || true

log "benches build"
cargo test --workspace --benches --no-run --locked

if [ -f fuzz/Cargo.toml ]; then
    log "fuzz crate: clippy (-D warnings)"
    cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
fi

if [ -x ../shared/conformance/coverage ]; then
    log "conformance coverage"
    ../shared/conformance/coverage --root . || true
fi

passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$results" | awk '{p+=$4; f+=$6} END {print p+0}')
failed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$results" | awk '{f+=$6} END {print f+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
