#!/usr/bin/env bash
# The issue's scale check for live replay: a 10 000-flow DNS trace (4200 clients, more than
# pen's -c 2048 client table) replayed through pen -U at twice its pace, bounded by the
# replay's timeout_ms (60 s) and the scenario's timeout (120 s), compared by shares with the
# simulation. Root (network namespaces). Everything it makes is under a temporary directory.
#   scripts/replay-scale.sh            # prints the replay's summary and the wall-clock time
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
cargo build --quiet --workspace
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/scenarios"
target/debug/pen-sim gen dns --clients 4200 --secs 20 --seed 7 "$dir/dns10k.pcap"
target/debug/pen-sim trace --server udp:53 "$dir/dns10k.pcap"
cat > "$dir/scenarios/replay-scale.toml" <<TOML
name = "replay-scale"
description = "10 000 DNS flows from 4200 clients replayed live through pen -U at twice their pace"
timeout = 120

[[switch]]
name = "lan"
[[host]]
name = "client"
addresses = ["10.79.0.10/24"]
[[host]]
name = "pen"
addresses = ["10.79.0.2/24"]
routes = [{ to = "10.200.0.0/16", via = "10.79.0.10" }]
[[host]]
name = "dns1"
addresses = ["10.79.0.3/24"]
[[host]]
name = "dns2"
addresses = ["10.79.0.4/24"]
[[link]]
ends = ["client", "lan"]
[[link]]
ends = ["pen", "lan"]
[[link]]
ends = ["dns1", "lan"]
[[link]]
ends = ["dns2", "lan"]
[[process]]
host = "dns1"
name = "dns1"
backend = { kind = "dns", answer = "192.0.2.3", listen = ["10.79.0.3:53"] }
[[process]]
host = "dns2"
name = "dns2"
backend = { kind = "dns", answer = "192.0.2.4", listen = ["10.79.0.4:53"] }
[[process]]
host = "pen"
name = "pen"
pen = ["-f", "-U", "-u", "root", "10.79.0.2:53", "10.79.0.3:53", "10.79.0.4:53"]
ready = { udp = "10.79.0.2:53" }

[[step]]
name = "replay 10 000 flows"
replay = { host = "client", to = "10.79.0.2:53", trace = "$dir/dns10k.pcap", server = ["udp:53"], pen = ["-U", "10.79.0.2:53", "10.79.0.3:53", "10.79.0.4:53"], backends = ["192.0.2.3", "192.0.2.4"], speed = 2.0, max_flows = 10000, agree = "shares", tolerance = 0.05, timeout_ms = 60000 }
TOML
start=$(date +%s.%N)
PENLAB_OUT="$dir/runs" timeout 150 target/debug/pen-lab run "$dir/scenarios/replay-scale.toml"
echo "wall clock: $(echo "$(date +%s.%N) - $start" | bc) s"
