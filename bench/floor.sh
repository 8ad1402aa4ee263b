#!/usr/bin/env bash
# Benchmark (not a test): the floor of one ACME issuance next to certkeeper's, from the same
# Pebble + pebble-challtestsrv (Debian package `pebble`), in the same run:
#   floor       examples/acme_floor.rs: instant-acme and nothing else (new account, new order
#               for one name, TXT record set in challtestsrv over its HTTP API, challenge
#               ready, poll every 10 ms and more, finalize with an rcgen CSR, download the
#               chain, remove the record); no config, state, propagation check or deploy
#   certkeeper  `certkeeper renew` issuing the same kind of certificate (one name, DNS-01
#               through an exec hook calling curl, propagation checked at challtestsrv's DNS
#               server, chain verified, deployed) with a fresh state_dir each run, so its
#               time also includes creating the account
# Both are timed as whole processes. Pebble keeps its random badNonce rejection on (both
# clients retry); certkeeper's issuer has max_concurrent_requests: 1 (Pebble 2.x deadlocks
# under concurrent requests). The two alternate within each run; medians are printed with
# the ratio certkeeper/floor (1 would be no overhead over the floor).
#
# Usage: bench/floor.sh   (RUNS=5 repetitions, median kept)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
for tool in pebble pebble-challtestsrv curl openssl python3; do
  command -v "$tool" >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y pebble curl openssl python3 >/dev/null
done
cargo build --release --quiet --bin certkeeper --example acme_floor
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/certkeeper
floor=$target/release/examples/acme_floor
source bench/lib/pebble.sh

work=$(mktemp -d)
cleanup() { pebble_stop; rm -rf "$work"; }
trap cleanup EXIT
pebble_start "$work/pebble"

# timed LABEL CMD...: runs CMD, output to $work/out; sets $t (wall seconds); fails unless it
# exits 0.
timed() {
  local label=$1 t0 t1 rc=0
  shift
  t0=$(date +%s.%N)
  "$@" >"$work/out" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  t=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  if [ "$rc" -ne 0 ]; then
    echo "FAIL: $label exited $rc:" >&2
    tail -n 20 "$work/out" >&2
    exit 1
  fi
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }

floor_times=() ck_times=()
for i in $(seq "$runs"); do
  timed floor "$floor" "$PEBBLE_DIRECTORY" "$PEBBLE_HTTPS_CA" "$CHALLTESTSRV" "f$i.floor.example.com" "$work/floor-$i.pem"
  floor_times+=("$t")
  grep -q '^floor: ' "$work/out" || { echo "FAIL: floor said: $(cat "$work/out")" >&2; exit 1; }

  dir=$work/certkeeper-$i
  mkdir -p "$dir"
  cat >"$dir/config.yaml" <<EOF
state_dir: state
issuers:
  pebble:
    type: acme
    directory: $PEBBLE_DIRECTORY
    contact: ["mailto:ops@example.com"]
    trust_roots: $PEBBLE_TRUST
    max_concurrent_requests: 1
dns_providers:
  hook: { type: exec, command: ["$DNS_HOOK"], timeout: 20s }
dns: { resolvers: ["$PEBBLE_DNS"], propagation_timeout: 20s, poll_interval: 1s }
certificates:
  - name: k$i
    domains: [k$i.floor.example.com]
    issuer: pebble
    dns_provider: hook
    fullchain: live/k$i/fullchain.pem
    privkey: live/k$i/privkey.pem
EOF
  timed certkeeper "$bin" --config "$dir/config.yaml" renew
  ck_times+=("$t")
  grep -q "^k$i: renewed from pebble" "$work/out" || { echo "FAIL: certkeeper said: $(cat "$work/out")" >&2; exit 1; }
done

f=$(median "${floor_times[@]}")
c=$(median "${ck_times[@]}")
echo "one ACME issuance from Pebble, whole process (median of $runs runs):"
printf '  %-40s %8s s   runs: %s\n' "floor (instant-acme alone)" "$f" "${floor_times[*]}"
printf '  %-40s %8s s   runs: %s\n' "certkeeper renew (fresh state_dir)" "$c" "${ck_times[*]}"
awk -v c="$c" -v f="$f" 'BEGIN {printf "  certkeeper/floor %.2fx (certkeeper spends %.3f s more)\n", c / f, c - f}'
echo "($(nproc) cores)"
