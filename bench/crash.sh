#!/bin/sh
# The crash harness at full length: a child deploys pairs in a loop and is SIGKILLed at
# random moments; after each kill and recovery the live pair must be whole, every
# snapshot must verify and nothing may be left over. Prints kills, mismatches and leaks.
# Usage: bench/crash.sh [KILLS [SEED]]   (default 5000 kills, seed from the clock)
set -eu
cd "$(dirname "$0")/.."
CERTKEEPER_CRASH_KILLS="${1:-5000}" CERTKEEPER_CRASH_SEED="${2:-$(date +%s)}" exec \
    cargo test --release --test tests -- --exact store::crash_harness_kill_9_during_swaps --nocapture
