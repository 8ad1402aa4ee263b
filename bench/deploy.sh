#!/usr/bin/env bash
# Benchmark (not a test): for 1 and 50 certificates served by one real nginx and sharing its
# reload command, the time a `certkeeper renew --force` pass spends in reload + verify (one
# reload, then every served leaf checked over TLS), the whole pass, and the time of one
# `nginx -s reload` per certificate, as per-certificate deploy hooks (certbot, lego) run it,
# with no verification, measured in the same run. ratio = per-certificate reloads / certkeeper's
# reload + verify (above 1: certkeeper's grouped reload with verification is faster).
#
# Usage: bench/deploy.sh   (RUNS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null
cargo build --release --quiet --bin certkeeper
cargo test --release --test tests --no-run --quiet
for i in $(seq "$runs"); do
  echo "run $i:"
  cargo test --release --quiet --test tests deploy::bench_reload_and_verify \
    -- --ignored --nocapture --exact 2>/dev/null | grep '^bench' | sed 's/^bench /  /'
done
echo "($(nproc) cores)"
