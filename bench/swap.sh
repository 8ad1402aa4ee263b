#!/bin/sh
# Median time of one swap (snapshot, write, fsyncs, switch, read-back, prune) in a
# release build, on the file system of the system temp dir (TMPDIR to choose another).
# Usage: bench/swap.sh [SWAPS]   (default 1000)
set -eu
cd "$(dirname "$0")/.."
CERTKEEPER_BENCH_SWAPS="${1:-1000}" exec cargo test --release --test tests -- \
    --exact store::bench_swap_median --ignored --nocapture
