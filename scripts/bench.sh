#!/usr/bin/env bash
# Runs the full side-by-side benchmark (docs/benchmarks.md) and writes the report:
#   results/report.md   markdown table: median (min-max), ratio to direct and to C Pen
#   results/chart.svg   ratio-to-direct bar chart (median bars, min-max whiskers, goal marks)
#   results/samples.tsv every raw sample
# Needs root (network namespaces). Installs the peers (nginx-light, haproxy, wrk, dnsperf,
# apache2-utils, pen) first, builds release binaries, then runs `pen-lab bench`.
#
# Usage: scripts/bench.sh [--quick] [--out DIR]     (default: the full run into results/;
#        --quick without --out writes into target/bench-quick/, never over results/)
# Takes about 10 minutes on 2 cores; run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: needs root (network namespaces, veths)" >&2
  exit 2
fi
bash scripts/install-deps.sh
cargo build --release --workspace --bins
exec target/release/pen-lab bench "$@"
