#!/usr/bin/env bash
# Makes the committed traces under captures/traces/ (see captures/traces/README.md): synthetic,
# seeded, documentation addresses only, so the same command always writes the same bytes.
# `scripts/make-traces.sh --check` rebuilds them into a temporary directory and fails if they
# differ from the committed files.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin pen-sim
out=captures/traces
if [ "${1:-}" = "--check" ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
sim=target/debug/pen-sim
"$sim" gen dns  --clients 300 --secs 20 --seed 1 "$out/dns.pcap"
"$sim" gen http --clients 200 --secs 20 --seed 2 "$out/http.pcap"
"$sim" gen mix  --clients 200 --secs 20 --seed 3 "$out/mix.pcap"
if [ "${1:-}" = "--check" ]; then
    for f in dns http mix; do
        cmp "$out/$f.pcap" "captures/traces/$f.pcap"
    done
    echo "captures/traces: up to date"
fi
