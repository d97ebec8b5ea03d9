#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, loopback integration tests and (as root) the
# lab scenarios in real network namespaces. Installs what it needs first (idempotent).
# The last line is "N passed, N failed" over every test binary of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets
# Leftovers of an interrupted earlier run would only add noise; the lab removes its own.
if [ "$(id -u)" = 0 ]; then target/debug/pen-lab clean >/dev/null 2>&1 || true; fi

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Plain TCP runs on the io_uring loop by default; the TCP test files run once more on the
# tokio path (tests/common adds `-O epoll` when PEN_TEST_TCP_ENGINE says so).
echo "== TCP integration tests again on the tokio path (PEN_TEST_TCP_ENGINE=epoll)"
PEN_TEST_TCP_ENGINE=epoll cargo test --no-fail-fast --test proxy_loopback --test tcp_engine \
  --test control --test resources --test signals --test transparent --test config_file \
  2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
set -e
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi   # a build or harness failure

# Benchmark smoke run (root only: namespaces): checks that the bench runs and reports, not the
# figures. A bench that cannot run counts as one failed test.
if [ "$(id -u)" = 0 ]; then
  echo "== pen-lab bench --quick"
  rm -rf target/bench-quick
  if target/debug/pen-lab bench --quick --out target/bench-quick \
      && [ -s target/bench-quick/report.md ] && [ -s target/bench-quick/chart.svg ]; then
    passed=$((passed + 1))
  else
    echo "FAILED: pen-lab bench --quick could not run or did not write its report (see above)" >&2
    failed=$((failed + 1)); status=1
  fi
fi
# The Debian package: built (debug profile) and checked in a scratch root; counts as one test.
echo "== scripts/check-deb.sh"
if bash scripts/check-deb.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
echo "$passed passed, $failed failed"
[ "$status" = 0 ]
