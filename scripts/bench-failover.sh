#!/usr/bin/env bash
# VRRP failover benchmark (not a timed test): runs the lab scenario vrrp-failover (a
# keepalived pair of pens, the master's pen killed under a paced load of one request every
# 50 ms, each with a 500 ms timeout) RUNS times with pen-rs and RUNS times with C Pen as the
# pair, and prints the median of each figure side by side:
#   failover   longest client-seen outage when the master's pen dies (ms) and requests lost
#   link down  the same when the master's link goes down (keepalived's advert timeout)
#   give-back  the same when the master's pen returns and it takes the VIP back
# The outage is measured by the client, to within one pacing interval (50 ms): from the first
# failed request to the next one that succeeded. Needs root (namespaces) and keepalived.
#
# Usage: scripts/bench-failover.sh [RUNS]     (default 5)
#        PEN_RS=path/to/pen CPEN=path/to/C/pen scripts/bench-failover.sh
set -euo pipefail

RUNS=${1:-5}
cd "$(dirname "$0")/.."
cargo build -q -p pen -p pen-lab
LAB=target/debug/pen-lab
PEN_RS=${PEN_RS:-target/debug/pen}
CPEN=${CPEN:-$(command -v /usr/sbin/pen || command -v /usr/bin/pen || true)}
if [[ -z "$CPEN" ]]; then
    echo "C Pen not found: apt-get install -y pen" >&2
    exit 1
fi
if ! command -v keepalived >/dev/null; then
    echo "keepalived not found: scripts/install-deps.sh" >&2
    exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# One run: the three measured steps of report.json as "outage_ms lost" triples on one line.
measure() {
    local bin=$1 out=$2
    PEN_BIN=$bin "$LAB" run vrrp-failover --json >"$out" 2>"$out.log" || {
        echo "vrrp-failover failed with $bin:" >&2
        grep -v "^    log:" "$out.log" | grep -E "FAIL|why|error|rule" >&2 || true
        return 1
    }
    python3 - "$out" <<'PY'
import json, re, sys
rep = json.load(open(sys.argv[1]))
steps = {s["label"]: s["detail"] for s in rep["scenarios"][0]["steps"]}
vals = []
for label in ("failover measured", "link-down measured", "give-back measured"):
    d = steps[label]
    outage = re.search(r"longest outage (\d+) ms", d).group(1)
    lost = re.search(r"(\d+) failed in", d).group(1)
    vals += [outage, lost]
print(" ".join(vals))
PY
}

for impl in pen-rs cpen; do
    bin=$PEN_RS
    [[ $impl == cpen ]] && bin=$CPEN
    : >"$WORK/$impl.txt"
    : >"$WORK/$impl.failed"
    for i in $(seq 1 "$RUNS"); do
        echo "run $i/$RUNS with $impl ($bin)" >&2
        # A failed run is reported (and counted below), not measured.
        measure "$bin" "$WORK/$impl-$i.json" >>"$WORK/$impl.txt" || echo "$i" >>"$WORK/$impl.failed"
    done
done

python3 - "$WORK" "$RUNS" <<'PY'
import statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def med(impl):
    rows = [list(map(int, l.split())) for l in open(f"{work}/{impl}.txt") if l.strip()]
    if not rows:
        sys.exit(f"no successful run with {impl}")
    return [statistics.median(c) for c in zip(*rows)], rows
rs, rs_rows = med("pen-rs")
cp, cp_rows = med("cpen")
print(f"vrrp-failover, median of {runs} runs (paced load: 1 request / 50 ms, 500 ms timeout)")
print()
print("| event | pen-rs outage | pen-rs lost | C Pen outage | C Pen lost |")
print("|---|---|---|---|---|")
for k, name in enumerate(("master's pen killed", "master's link down", "give-back")):
    print(f"| {name} | {rs[2*k]:.0f} ms | {rs[2*k+1]:.0f} | {cp[2*k]:.0f} ms | {cp[2*k+1]:.0f} |")
print()
print("runs (outage ms, lost) x3 per line:")
for impl, rows in (("pen-rs", rs_rows), ("C Pen", cp_rows)):
    for r in rows:
        print(f"  {impl}: {' '.join(map(str, r))}")
for impl in ("pen-rs", "cpen"):
    failed = open(f"{work}/{impl}.failed").read().split()
    if failed:
        print(f"{impl}: {len(failed)} of {runs} runs FAILED (not in the medians): runs {', '.join(failed)}")
PY
