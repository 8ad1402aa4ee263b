#!/usr/bin/env bash
# Runs every benchmark script in bench/ (this one excepted), one after the other, each with
# its default arguments (crash.sh: 5000 kills), and writes everything they print, under a
# header describing the machine and the tools compared against (date, kernel, cores, memory,
# certbot, lego, pebble, nginx, etcd versions), to a results file as well as to the terminal.
# A script that fails is reported with its exit status and the others still run; the exit
# status is 1 when any failed. Takes a long time (check.sh over 10,000 certificates, the
# idle daemons, the crash harness).
#
# Usage: bench/all.sh [RESULTS_FILE]   (default: bench-results-<date>.txt in the current dir)
set -uo pipefail
out=${1:-bench-results-$(date +%Y-%m-%d).txt}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$(dirname "$0")/.."

# The first line a tool prints about its version (some print it on stderr).
version() {
  command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || { echo "not installed"; return; }
  PATH=$PATH:/usr/sbin "$@" 2>&1 | head -n 1
}
package() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"; }

{
  echo "certkeeper benchmarks, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
  else
    commit="? (not a git checkout)"
  fi
  echo "commit:  $commit"
  echo "system:  $(uname -srm), $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory"
  echo "certbot: $(version certbot --version)"
  echo "lego:    $(version lego --version) (package $(package lego))"
  echo "pebble:  package $(package pebble)"
  echo "nginx:   $(version nginx -v)"
  echo "etcd:    $(version etcd --version)"
  echo "rustc:   $(version rustc --version)"
  echo "CARGO_TARGET_DIR: ${CARGO_TARGET_DIR:-target (unset)}"
} | tee "$out"

failed=()
for script in bench/*.sh; do
  [ "$script" = bench/all.sh ] && continue
  {
    echo
    echo "=== $script ($(date -u '+%H:%M:%S UTC'))"
  } | tee -a "$out"
  start=$(date +%s)
  status=0
  if [ -x "$script" ]; then
    "$script" 2>&1 | tee -a "$out" || status=$?
  else
    bash "$script" 2>&1 | tee -a "$out" || status=$?
  fi
  echo "=== $script: exit $status after $(($(date +%s) - start)) s" | tee -a "$out"
  [ "$status" -eq 0 ] || failed+=("$script")
done

echo | tee -a "$out"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" | tee -a "$out"
  echo "results in $out"
  exit 1
fi
echo "all benchmarks ran; results in $out ($(nproc) cores)" | tee -a "$out"
