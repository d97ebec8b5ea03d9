#!/usr/bin/env bash
# UDP load balancing benchmark (not a timed test): DNS queries per second with 20 queries in
# flight, side by side in one run:
#   direct    the load generator → one DNS responder
#   pen-rs    → target/release/pen -U -r → two DNS responders
#   C Pen     → /usr/sbin/pen (Debian package `pen`) -U -r → the same two responders
# Load generator: dnsperf (Debian package) when installed, else the dns_responder example's
# bounded query loop (one socket). Everything runs on 127.0.0.1; every process started here is
# killed by PID on exit.
#
# Usage: scripts/bench-udp.sh [SECONDS] [ROUNDS]     (default 10 s per measurement, 1 round)
set -euo pipefail

SECS=${1:-10}
ROUNDS=${2:-1}
INFLIGHT=20
CLIENTS=10            # dnsperf sockets (source ports), so flows spread over both backends
cd "$(dirname "$0")/.."

PIDS=()
WORK=$(mktemp -d)
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building release binaries (pen, examples/dns_responder)..." >&2
cargo build --release -q -p pen --bin pen --example dns_responder
PEN_RS=target/release/pen
RESP=target/release/examples/dns_responder
CPEN=$(command -v /usr/sbin/pen || command -v /usr/bin/pen || true)
if [[ -z "$CPEN" ]]; then
    echo "C Pen not found: apt-get install -y pen" >&2
    exit 1
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

B1=$(free_port); B2=$(free_port); P_RS=$(free_port); P_C=$(free_port)
"$RESP" serve "127.0.0.1:$B1" 192.0.2.1 & PIDS+=($!)
"$RESP" serve "127.0.0.1:$B2" 192.0.2.2 & PIDS+=($!)
"$PEN_RS" -f -U -r "127.0.0.1:$P_RS" "127.0.0.1:$B1" "127.0.0.1:$B2" & PIDS+=($!)
"$CPEN" -f -U -r "127.0.0.1:$P_C" "127.0.0.1:$B1" "127.0.0.1:$B2" & PIDS+=($!)
sleep 1

for i in $(seq 1 200); do echo "bench$i.example A"; done > "$WORK/queries"

measure() { # port -> qps
    local port=$1
    if command -v dnsperf >/dev/null; then
        dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$SECS" -q "$INFLIGHT" \
            -c "$CLIENTS" -t 1 2>/dev/null | awk '/Queries per second/ {printf "%.0f", $4}'
    else
        "$RESP" qps "127.0.0.1:$port" "$SECS" "$INFLIGHT" | awk '{print $2}'
    fi
}

GEN=$(command -v dnsperf >/dev/null && echo "dnsperf -q $INFLIGHT -c $CLIENTS" || echo "dns_responder qps (1 socket, $INFLIGHT in flight)")
echo "load generator: $GEN; $SECS s per measurement; $(nproc) cores"
printf '%-6s %12s %12s %12s %14s %14s\n' round direct pen-rs "C Pen" "pen-rs/C Pen" "pen-rs/direct"
for r in $(seq 1 "$ROUNDS"); do
    D=$(measure "$B1")
    R=$(measure "$P_RS")
    C=$(measure "$P_C")
    awk -v r="$r" -v d="$D" -v p="$R" -v c="$C" 'BEGIN {
        printf "%-6s %12d %12d %12d %14.2f %14.2f\n", r, d, p, c, (c > 0 ? p / c : 0), (d > 0 ? p / d : 0) }'
done
