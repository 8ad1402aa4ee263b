#!/usr/bin/env bash
# Benchmark (not a test): N local-CA certificates renewed in ONE pass (no network, no reload
# command). A first `certkeeper renew` issues and deploys all N (timed once, shown apart);
# then `certkeeper renew --force` renews all N again, RUNS times, median kept: "1,000
# local-CA renewals in one pass", target under 5 s. Every pass must exit 0 and say
# "renewed from internal" N times. Prints seconds, milliseconds per certificate, and, when
# strace is installed, the fsync/fdatasync/syncfs/sync_file_range calls of one more forced
# pass (untimed, strace -f -c -w: their count and the wall time spent in them, summed over the
# threads that made them). CPU is user + sys seconds of the process; wall well above it
# means waiting (mostly on fsync). renewal.concurrency is certkeeper's default (4) unless
# CONCURRENCY=K is given.
#
# Usage: bench/many.sh [N]   (default N=1000; RUNS=3 repetitions, median kept)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
runs=${RUNS:-3}
cargo build --release --quiet --bin certkeeper
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/certkeeper
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

{
  echo 'state_dir: state'
  echo 'issuers:'
  echo '  internal: { type: local-ca, validity: 90d }'
  [ -z "${CONCURRENCY:-}" ] || echo "renewal: { concurrency: $CONCURRENCY }"
  echo 'certificates:'
  for i in $(seq "$n"); do
    echo "  - name: c$i"
    echo "    domains: [c$i.many.example.test]"
    echo '    issuer: internal'
    echo "    fullchain: live/c$i/fullchain.pem"
    echo "    privkey: live/c$i/privkey.pem"
  done
} >"$work/config.yaml"

# timed CMD...: runs CMD, output to $work/out; sets $t (wall seconds) and $cpu (user + sys
# seconds); fails unless it exits 0 and renewed all N.
timed() {
  local rc=0 renewed wall user sys
  local TIMEFORMAT='%R %U %S'
  { time "$@" >"$work/out" 2>&1 || rc=$?; } 2>"$work/time"
  read -r wall user sys <"$work/time"
  t=$wall
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
  renewed=$(grep -c ': renewed from internal' "$work/out" || true)
  if [ "$rc" -ne 0 ] || [ "$renewed" -ne "$n" ]; then
    echo "FAIL: $* exited $rc and renewed $renewed of $n:" >&2
    tail -n 20 "$work/out" >&2
    exit 1
  fi
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
per_cert() { awk -v s="$1" -v n="$n" 'BEGIN {printf "%.2f", s * 1000 / n}'; }

timed "$bin" --config "$work/config.yaml" renew
first=$t first_cpu=$cpu
times=() cpus=()
for _ in $(seq "$runs"); do
  timed "$bin" --config "$work/config.yaml" renew --force
  times+=("$t")
  cpus+=("$cpu")
done
med=$(median "${times[@]}")
med_cpu=$(median "${cpus[@]}" | awk '{printf "%.2f", $1}')

if command -v strace >/dev/null; then
  strace -f -c -w -o "$work/strace" -e trace=fsync,fdatasync,syncfs,sync_file_range \
    "$bin" --config "$work/config.yaml" renew --force >"$work/out" 2>&1
  syncs=$(awk '$NF ~ /^(fsync|fdatasync|syncfs|sync_file_range)$/ {
    printf "%s%s %d calls, %.2f s in them summed over threads", sep, $NF, $4, $2; sep = "; "}' "$work/strace")
  syncs="${syncs:-none}"
else
  syncs="(strace not installed)"
fi

printf '%-44s %9s s %9s ms/cert   CPU %s s\n' "first pass: issue + deploy $n (local CA)" "$first" "$(per_cert "$first")" "$first_cpu"
printf '%-44s %9s s %9s ms/cert   CPU %s s   (median of %d, target < 5 s; runs: %s)\n' \
  "renew --force: $n renewals in one pass" "$med" "$(per_cert "$med")" "$med_cpu" "$runs" "${times[*]}"
echo "sync calls in one forced pass: $syncs"
echo "($(nproc) cores)"
