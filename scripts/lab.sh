#!/usr/bin/env bash
# The main job: build pen and pen-lab, then run every lab scenario (scenarios/*.toml) against the
# bundled balancer in real network namespaces. Needs root. Extra arguments go to `pen-lab run`
# (e.g. `scripts/lab.sh proxy-tcp --json`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
bash scripts/install-deps.sh
cargo build --workspace --bins
if [ "$#" = 0 ]; then set -- all; fi
exec target/debug/pen-lab run "$@"
