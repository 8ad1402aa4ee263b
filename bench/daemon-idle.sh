#!/usr/bin/env bash
# Benchmark (not a test): what `certkeeper run` costs while idle. The daemon gets CERTS
# local-CA certificates (no network) and a yearly `renewal.schedule`; after its first pass it
# has nothing to do until the next tick or until a certificate becomes due (60 days away).
# Over an idle window of IDLE seconds it should use no CPU, wake up (almost) never and run
# no pass; its RSS should stay under 20 MB. Two daemons are measured, one after the other:
#   first start  empty state_dir, so the first pass issues and deploys every certificate;
#   restart      the same state_dir, so the first pass finds every certificate not due
#                (the usual case for a daemon that is restarted or reloaded).
#
# Measured over the window, from /proc: context switches summed over all the daemon's
# threads (voluntary + nonvoluntary, /proc/PID/task/*/status; a thread that exits during the
# window takes its count with it, so the thread count is shown at both ends), CPU time
# (utime + stime of /proc/PID/stat, which includes exited threads), and the "Pass done:"
# lines logged during the window (must be 0). At the end: VmRSS and VmHWM, the thread count,
# and the exit code after SIGTERM (must be 0, within 10 s). Exits 1 if a check fails.
#
# Usage: bench/daemon-idle.sh   (CERTS=100 certificates and IDLE=60 seconds by default)
set -euo pipefail
cd "$(dirname "$0")/.."
certs=${CERTS:-100}
idle=${IDLE:-60}
hz=$(getconf CLK_TCK)

cargo build --release --quiet --bin certkeeper
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/certkeeper
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

{
  echo 'state_dir: state'
  echo 'issuers:'
  echo '  internal: { type: local-ca, validity: 90d }'
  echo 'renewal: { before_expiry: 30d, schedule: "0 0 0 1 1 *", jitter: 0s }'
  echo 'certificates:'
  for i in $(seq "$certs"); do
    echo "  - name: c$i"
    echo "    domains: [c$i.example.test]"
    echo '    issuer: internal'
    echo "    fullchain: live/c$i/fullchain.pem"
    echo "    privkey: live/c$i/privkey.pem"
  done
} >"$work/config.yaml"

# Context switches summed over the threads alive now.
switches() {
  cat /proc/"$pid"/task/*/status 2>/dev/null |
    awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'
}
# utime + stime in clock ticks (fields 14 and 15; the command name, field 2, has no spaces).
ticks() { awk '{print $14 + $15}' /proc/"$pid"/stat; }
threads() { ls /proc/"$pid"/task | wc -l; }
passes() { grep -c 'Pass done:' "$log" || true; }
status_kb() { awk -v k="$1:" '$1 == k {print $2}' /proc/"$pid"/status; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

fail=0
declare -A r
# measure COLUMN EXPECTED: runs a daemon, waits for its first pass (whose summary must
# contain EXPECTED), lets it settle 2 s, measures the idle window, stops it; fills r[COLUMN,*].
measure() {
  local col=$1 expected=$2
  log=$work/daemon-$col.log
  "$bin" --config "$work/config.yaml" run 2>"$log" &
  pid=$!
  local _
  for _ in $(seq 600); do
    grep -q 'Pass done:' "$log" && break
    kill -0 "$pid" 2>/dev/null || { echo "the daemon exited before its first pass:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.5
  done
  grep -q 'Pass done:' "$log" || { echo "no first pass after 300 s:" >&2; cat "$log" >&2; exit 1; }
  local first
  first=$(grep 'Pass done:' "$log" | head -n 1 | sed 's/.*Pass done: \([^.]*\)\..*/\1/')
  [[ $first == *"$expected"* ]] || echo "warning ($col): first pass: $first (expected $expected)" >&2
  sleep 2

  local sw0 t0 th0 p0 sw1 t1 th1 p1 rss hwm
  sw0=$(switches); t0=$(ticks); th0=$(threads); p0=$(passes)
  sleep "$idle"
  kill -0 "$pid" 2>/dev/null || { echo "the daemon died while idle:" >&2; cat "$log" >&2; exit 1; }
  sw1=$(switches); t1=$(ticks); th1=$(threads); p1=$(passes)
  rss=$(status_kb VmRSS); hwm=$(status_kb VmHWM)

  kill -TERM "$pid"
  local code=timeout
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  else
    code=0; wait "$pid" || code=$?
  fi
  pid=

  local sw=$((sw1 - sw0))
  r[$col,first]=$first
  r[$col,sw]=$sw
  r[$col,swmin]=$(awk -v s="$sw" -v t="$idle" 'BEGIN {printf "%.1f", s * 60 / t}')
  r[$col,cpu]=$(awk -v d="$((t1 - t0))" -v hz="$hz" 'BEGIN {printf "%.2f", d / hz}')
  r[$col,passes]=$((p1 - p0))
  r[$col,rss]=$(mb "$rss")
  r[$col,hwm]=$(mb "$hwm")
  r[$col,threads]="$th0, $th1"
  r[$col,code]=$code
  [ "$((p1 - p0))" -eq 0 ] || { echo "FAIL ($col): a pass ran while idle" >&2; fail=1; }
  [ "$code" = 0 ] || { echo "FAIL ($col): exit after SIGTERM was $code (0 within 10 s expected)" >&2; fail=1; }
  [ "$rss" -lt $((20 * 1024)) ] || { echo "FAIL ($col): idle RSS $(mb "$rss") MB, 20 MB or more" >&2; fail=1; }
}

measure first "$certs renewed"
measure restart "$certs not due"

row() { printf '%-32s %16s %16s\n' "$1" "$2" "$3"; }
col() { row "$1" "${r[first,$2]}" "${r[restart,$2]}"; }
row "" "first start" "restart"
row certificates "$certs" "$certs"
col "first pass" first
row "idle seconds" "$idle" "$idle"
col "context switches while idle" sw
col "context switches per minute" swmin
col "CPU seconds while idle" cpu
col "passes while idle" passes
col "RSS MB" rss
col "peak RSS MB" hwm
col "threads (start, end of idle)" threads
col "exit code after SIGTERM" code
echo "($(nproc) cores; CPU time in 1/$hz s ticks)"
exit "$fail"
