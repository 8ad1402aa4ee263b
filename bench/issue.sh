#!/usr/bin/env bash
# Benchmark (not a test): wall time of issuing 1 certificate, then 10 at once on one account,
# from a real Pebble + pebble-challtestsrv (Debian package `pebble`), through the same harness
# as the ACME tests: DNS-01 via challtestsrv, propagation checked, chain downloaded.
#
# Pebble runs with PEBBLE_VA_NOSLEEP=1 and its random badNonce rejection on, so the numbers
# include the retries a real client makes. Times are printed per run; RUNS=3 by default.
#
# Usage: bench/issue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || {
  echo "pebble and pebble-challtestsrv are needed: apt-get install -y pebble" >&2
  exit 1
}
cargo test --release --test tests --no-run --quiet
for i in $(seq "$runs"); do
  echo "run $i:"
  cargo test --release --quiet --test tests acme::bench_issue -- --ignored --nocapture --exact 2>/dev/null \
    | grep '^bench' | sed 's/^/  /'
done
echo "($(nproc) cores)"
