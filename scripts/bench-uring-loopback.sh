#!/usr/bin/env bash
# Side-by-side loopback measurement of the two TCP data paths (README, "io_uring data path,
# side by side"): pen-rs (io_uring), pen-rs (tokio, -O epoll), C Pen (/usr/bin/pen) and
# HAProxy, each in front of one nginx on 127.0.0.1:18081 serving a 100 B page (started here,
# stopped at the end). Per target and repetition: ab -k and ab (req/s and the balancer's CPU
# per request from /proc/PID/stat), wrk, and RSS growth per idle connection over 2000.
# Prints one TSV line per target, repetition and figure. Needs root only for ulimit -n 20000.
# PEN_BASE=other/pen adds a row `uring-base` (that binary on its default path), to compare a
# change with the build before it in the same run.
# NGINX_PORT (18081) and PORT_BASE (18100: the balancers listen above it) move the ports when
# those are taken. COUNTERS=1 adds, per target and repetition, the kernel's io_uring tracepoint
# counts during wrk (`perf stat`, needs root): completions and submissions per
# io_uring_enter, -ENOBUFS receives (the provided buffers ran dry) and context switches per
# request; the figures that tell a ring starving for buffers or a loop waking per event.
# The `ab` line also gives nginx's CPU per request and the inter-processor interrupts per
# request of the whole machine (`RES` reschedule and `CAL` function-call IPIs from
# /proc/interrupts: a cross-CPU wake-up of a sleeping task costs one), the figures that show
# how a balancer's sleeping and waking load its neighbours.
# Usage: PEN=target/release/pen REPS=3 scripts/bench-uring-loopback.sh > samples.tsv
set -u
NGINX_PORT=${NGINX_PORT:-18081}
PORT_BASE=${PORT_BASE:-18100}
COUNTERS=${COUNTERS:-0}
PEN=${PEN:-target/release/pen}
PEN_BASE=${PEN_BASE:-}
TARGETS="uring tokio cpen haproxy"
[ -n "$PEN_BASE" ] && TARGETS="uring-base $TARGETS"
ngx=$(mktemp -d)
# nginx's workers run as nobody: the page must be readable to them (else every answer is 403).
chmod 755 "$ngx"
mkdir -p "$ngx/html" "$ngx/logs" "$ngx/tmp"
head -c 100 /dev/zero | tr '\0' 'x' > "$ngx/html/index.html"
cat > "$ngx/nginx.conf" <<NGX
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $ngx/tmp; proxy_temp_path $ngx/tmp; fastcgi_temp_path $ngx/tmp;
  uwsgi_temp_path $ngx/tmp; scgi_temp_path $ngx/tmp;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NGINX_PORT; root $ngx/html; }
}
NGX
nginx -c "$ngx/nginx.conf" -p "$ngx"
trap 'kill "$(cat "$ngx/nginx.pid")"; rm -rf "$ngx"' EXIT
sleep 0.5
REPS=${REPS:-3}
ulimit -n 20000
cpu() { awk '{print $14+$15}' /proc/$1/stat; }   # clock ticks (utime+stime)
ipis() { # RES and CAL interrupts so far, summed over the CPUs
  awk '$1=="RES:"||$1=="CAL:" {n=0; for (i=2; i<=NF && $i ~ /^[0-9]+$/; i++) n+=$i; v[$1]=n}
       END {print v["RES:"]+0, v["CAL:"]+0}' /proc/interrupts
}
tck=$(getconf CLK_TCK)
start() { # name port -> pid
  case $1 in
    uring-base) $PEN_BASE -f -r -x 10000 -c 10000 127.0.0.1:$2 127.0.0.1:$NGINX_PORT >/dev/null 2>&1 & echo $! ;;
    uring) $PEN -f -r -x 10000 -c 10000 127.0.0.1:$2 127.0.0.1:$NGINX_PORT >/dev/null 2>&1 & echo $! ;;
    tokio) $PEN -f -O epoll -r -x 10000 -c 10000 127.0.0.1:$2 127.0.0.1:$NGINX_PORT >/dev/null 2>&1 & echo $! ;;
    cpen) /usr/bin/pen -f -r -x 10000 -c 10000 127.0.0.1:$2 127.0.0.1:$NGINX_PORT >/dev/null 2>&1 & echo $! ;;
    haproxy) printf 'global\n  maxconn 9000\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten l\n  bind 127.0.0.1:%s\n  server s 127.0.0.1:%s\n' $2 $NGINX_PORT > $ngx/haproxy.cfg
       haproxy -f $ngx/haproxy.cfg -db >/dev/null 2>&1 & echo $! ;;
  esac
}
idle_mem() { # pid port: RSS growth per idle connection over 2000 connections
  local before after
  before=$(awk '/VmRSS/{print $2}' /proc/$1/status)
  python3 - "$2" <<'PY' &
import socket, sys, time
cs = []
for i in range(2000):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); cs.append(s)
time.sleep(3)
PY
  local py=$!
  sleep 2
  after=$(awk '/VmRSS/{print $2}' /proc/$1/status)
  wait $py
  echo $(( (after - before) * 1024 / 2000 ))
}
port=$PORT_BASE
for rep in $(seq 1 $REPS); do
  for t in $TARGETS; do
    port=$((port+1))
    pid=$(start $t $port); sleep 0.5
    ab -k -c 20 -n 2000 http://127.0.0.1:$port/ >/dev/null 2>&1  # warm-up
    c0=$(cpu $pid)
    r=$(ab -k -c 20 -n 20000 http://127.0.0.1:$port/ 2>/dev/null | awk '/Requests per second/{print $4}')
    c1=$(cpu $pid)
    echo -e "$t\t$rep\tab-k req/s\t$r\tcpu us/req\t$(echo "($c1-$c0)*1000000/$tck/20000" | bc -l | cut -c1-6)"
    nw=$(pgrep -P "$(cat "$ngx/nginx.pid")" | head -1)
    c0=$(cpu $pid); n0=$(cpu $nw); read -r res0 cal0 < <(ipis)
    r=$(ab -c 20 -n 10000 http://127.0.0.1:$port/ 2>/dev/null | awk '/Requests per second/{print $4}')
    c1=$(cpu $pid); n1=$(cpu $nw); read -r res1 cal1 < <(ipis)
    echo -e "$t\t$rep\tab req/s\t$r\tcpu us/req\t$(echo "($c1-$c0)*1000000/$tck/10000" | bc -l | cut -c1-6)\tnginx cpu us/req\t$(echo "($n1-$n0)*1000000/$tck/10000" | bc -l | cut -c1-6)\tRES/req\t$(echo "($res1-$res0)/10000" | bc -l | cut -c1-4)\tCAL/req\t$(echo "($cal1-$cal0)/10000" | bc -l | cut -c1-4)"
    if [ "$COUNTERS" = 1 ]; then
      perf stat -x, -o $ngx/perf.txt -p $pid -e context-switches \
        -e syscalls:sys_enter_io_uring_enter -e io_uring:io_uring_complete \
        -e io_uring:io_uring_submit_req -e io_uring:io_uring_complete --filter 'res == -105' &
      sp=$!; sleep 0.3
    fi
    out=$(wrk -t2 -c50 -d5s http://127.0.0.1:$port/ 2>/dev/null)
    r=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    echo -e "$t\t$rep\twrk req/s\t$r"
    if [ "$COUNTERS" = 1 ]; then
      kill -INT $sp; wait $sp
      n=$(echo "$out" | awk '/requests in/{print $1}')
      awk -F, -v t=$t -v rep=$rep -v n=$n '
        /context-switches/{cs=$1} /io_uring_enter/{en=$1} /io_uring_submit_req/{sq=$1}
        /io_uring_complete/{k++; if (k==1) cq=$1; else nobufs=$1}
        END {
          printf "%s\t%d\twrk counters\tcs/req\t%.2f\tenter/req\t%.2f", t, rep, cs/n, en/n
          if (en > 0) printf "\tcqe/enter\t%.1f\tsqe/enter\t%.1f\tENOBUFS\t%d", cq/en, sq/en, nobufs
          printf "\n"
        }' $ngx/perf.txt
    fi
    echo -e "$t\t$rep\tidle B/conn\t$(idle_mem $pid $port)"
    kill $pid; wait $pid 2>/dev/null
  done
done
exit 0
