#!/bin/sh
# The crash harnesses at full length: a child deploys pairs in a loop (plain swaps, then the
# whole deploy pipeline with a real reload command and a health check that refuses one pair)
# and is SIGKILLed at random moments; after each kill and recovery the live pair must be
# whole and be the pair before or after the deploy in flight (never a refused one), every
# snapshot must verify and nothing may be left over. Prints kills, mismatches and leaks.
# Usage: bench/crash.sh [KILLS [SEED [PIPELINE_KILLS]]]   (default 5000 kills, seed from the
# clock, 1000 pipeline kills)
set -eu
cd "$(dirname "$0")/.."
CERTKEEPER_CRASH_KILLS="${1:-5000}" CERTKEEPER_PIPELINE_CRASH_KILLS="${3:-1000}" \
CERTKEEPER_CRASH_SEED="${2:-$(date +%s)}" exec \
    cargo test --release --test tests -- store::crash_harness --nocapture --test-threads=1
