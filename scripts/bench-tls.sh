#!/usr/bin/env bash
# TLS termination benchmark (not a timed test), pen-rs and C Pen side by side in one run:
#   pen-rs   target/release/pen -E cert -K key LISTEN BACKEND
#   C Pen    /usr/bin/pen (Debian package `pen`, OpenSSL) -E cert -K key LISTEN BACKEND
# Measured for each, against the same backends, one after the other:
#   handshakes/s  `ab -n N -c C` over https with no keep-alive: every request is a new TCP
#                 connection + full TLS handshake + one tiny HTTP request (backend: C Pen's
#                 built-in `dummy` web server, about 10k plain requests/s here)
#   sequential    `openssl s_time -new`: full handshakes one at a time (latency bound)
#   bulk          `curl` downloading BULK_MB MiB over one TLS connection (backend: a Python
#                 sender writing from memory); the plain backend alone is shown for scale
# Ratios are pen-rs / C Pen (higher is better for pen-rs). Everything runs on 127.0.0.1; every
# process started here is killed by PID on exit; every load is bounded (request counts, time).
#
# Usage: scripts/bench-tls.sh [ROUNDS]     env: KEY=rsa|ec (default rsa, 2048 bit), N=4000
#        requests per ab run, C=16 concurrent, SECS=5 for s_time, BULK_MB=1024
set -euo pipefail

ROUNDS=${1:-1}
KEY=${KEY:-rsa}
N=${N:-4000}
C=${C:-16}
SECS=${SECS:-5}
BULK_MB=${BULK_MB:-1024}
cd "$(dirname "$0")/.."

PIDS=()
WORK=$(mktemp -d)
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in ab openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found: run scripts/install-deps.sh" >&2; exit 1; }
done
CPEN=$(command -v /usr/sbin/pen || command -v /usr/bin/pen || true)
if [[ -z "$CPEN" ]]; then
    echo "C Pen not found: apt-get install -y pen" >&2
    exit 1
fi

echo "building target/release/pen..." >&2
cargo build --release -q -p pen --bin pen
PEN_RS=target/release/pen

# A certificate for localhost / 127.0.0.1.
case "$KEY" in
    rsa) NEWKEY=(-newkey rsa:2048) ;;
    ec) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) echo "KEY must be rsa or ec, got $KEY" >&2; exit 1 ;;
esac
openssl req -x509 "${NEWKEY[@]}" -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port: wait (bounded) until something listens
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

DUMMY=$(free_port); BULK=$(free_port); P_RS=$(free_port); P_C=$(free_port)
B_RS=$(free_port); B_C=$(free_port)

# Backends: C Pen's dummy web server (tiny replies), and a bulk sender.
"$CPEN" -f -O dummy "127.0.0.1:$DUMMY" 127.0.0.1:9 2>/dev/null & PIDS+=($!)
cat > "$WORK/bulk.py" <<'PY'
import socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2]) * 1024 * 1024
chunk = b"x" * (1024 * 1024)
def serve(c):
    try:
        c.settimeout(120)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        left = size
        while left > 0:
            n = min(left, len(chunk))
            c.sendall(chunk[:n])
            left -= n
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
python3 "$WORK/bulk.py" "$BULK" "$BULK_MB" & PIDS+=($!)

CERT=(-E "$WORK/cert.pem" -K "$WORK/key.pem")
"$PEN_RS" -f "${CERT[@]}" "127.0.0.1:$P_RS" "127.0.0.1:$DUMMY" 2>"$WORK/pen-rs.log" & PIDS+=($!)
"$CPEN" -f "${CERT[@]}" "127.0.0.1:$P_C" "127.0.0.1:$DUMMY" 2>"$WORK/cpen.log" & PIDS+=($!)
"$PEN_RS" -f "${CERT[@]}" "127.0.0.1:$B_RS" "127.0.0.1:$BULK" 2>>"$WORK/pen-rs.log" & PIDS+=($!)
"$CPEN" -f "${CERT[@]}" "127.0.0.1:$B_C" "127.0.0.1:$BULK" 2>>"$WORK/cpen.log" & PIDS+=($!)
for p in "$DUMMY" "$BULK" "$P_RS" "$P_C" "$B_RS" "$B_C"; do wait_port "$p"; done

for p in "$P_RS" "$P_C"; do
    if ! curl -sk --max-time 5 "https://127.0.0.1:$p/" | grep -q "Ulric was here"; then
        echo "no TLS reply through port $p; logs:" >&2
        cat "$WORK/pen-rs.log" "$WORK/cpen.log" >&2
        exit 1
    fi
done

handshakes() { # port -> requests/s, each on a new TLS connection
    # ab counts "Length" failures when a reply's head and body arrive in separate TLS
    # records (C Pen does that); only connect, receive and exception failures are real.
    ab -q -n "$N" -c "$C" "https://127.0.0.1:$1/" 2>/dev/null |
        awk '/Requests per second/ {rps=$4}
             /\(Connect:/ {gsub(/[(),]/, ""); bad=$2 + $4 + $8}
             END {printf "%.0f", rps; if (bad) printf " (%d failed)", bad}'
}

sequential() { # port -> full handshakes/s, one at a time
    timeout $((SECS + 10)) openssl s_time -connect "127.0.0.1:$1" -new -time "$SECS" 2>/dev/null |
        awk '/real seconds/ && !f {printf "%.0f", $1 / $4; f=1} END {if (!f) printf "n/a"}'
}

bulk() { # url -> MiB/s for one download of BULK_MB MiB
    curl -sk --max-time 120 -o /dev/null -w '%{speed_download}' "$1" |
        awk '{printf "%.0f", $1 / 1048576}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "key: $KEY; ab -n $N -c $C; s_time ${SECS}s; bulk ${BULK_MB} MiB; $(nproc) cores; $(date -u +%FT%TZ)"
printf '%-7s %-28s %12s %12s %8s\n' round measurement pen-rs "C Pen" ratio
for r in $(seq 1 "$ROUNDS"); do
    a=$(handshakes "$P_RS"); b=$(handshakes "$P_C")
    printf '%-7s %-28s %12s %12s %8s\n' "$r" "handshakes+request/s (ab)" "$a" "$b" "$(ratio "${a%% *}" "${b%% *}")"
    a=$(sequential "$P_RS"); b=$(sequential "$P_C")
    printf '%-7s %-28s %12s %12s %8s\n' "$r" "sequential handshakes/s" "$a" "$b" "$(ratio "$a" "$b")"
    a=$(bulk "https://127.0.0.1:$B_RS/"); b=$(bulk "https://127.0.0.1:$B_C/")
    printf '%-7s %-28s %12s %12s %8s\n' "$r" "bulk download MiB/s" "$a" "$b" "$(ratio "$a" "$b")"
done
printf '%-7s %-28s %12s\n' "-" "plain backend MiB/s (scale)" "$(bulk "http://127.0.0.1:$BULK/")"
