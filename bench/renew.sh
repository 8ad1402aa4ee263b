#!/usr/bin/env bash
# Benchmark (not a test): wall time of getting 1 and 10 certificates (apex + wildcard each)
# from a real Pebble + pebble-challtestsrv, with `certkeeper renew` (one pass), `lego run`
# and `certbot certonly` (one command per certificate, as they are used), all publishing
# DNS-01 records through the same hook, measured in the same run; and 50 certificates with
# certkeeper alone (the others one by one would take many minutes). Pebble keeps its random
# badNonce rejection on, and certkeeper's issuer has max_concurrent_requests: 1 (Pebble 2.x
# deadlocks under concurrent requests). Prints seconds and each tool's ratio to certkeeper
# (above 1 means certkeeper is faster). lego runs with EXEC_SEQUENCE_INTERVAL=1 (its default
# pauses 60 s between the apex and wildcard records of one name).
#
# The hook is a sh script calling curl (four calls a certificate for every tool);
# BENCH_HOOK=python uses the tests' Python hook instead, whose interpreter start (about
# 0.3 s a call) then dominates every tool's time.
#
# Usage: bench/renew.sh   (RUNS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
for tool in pebble pebble-challtestsrv lego certbot curl; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y pebble lego certbot curl >/dev/null
done
cargo build --release --quiet --bin certkeeper
cargo test --release --test tests --no-run --quiet
for i in $(seq "$runs"); do
  echo "run $i:"
  cargo test --release --quiet --test tests renew_acme::bench_renew_against_lego_and_certbot \
    -- --ignored --nocapture --exact 2>/dev/null | grep '^bench' | sed 's/^bench /  /'
done
echo "($(nproc) cores)"
