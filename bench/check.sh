#!/usr/bin/env bash
# Benchmark (not a test): wall time of `certkeeper check` over 1,000 and 10,000 generated
# certificates in a tree, next to `lego list` and `certbot certificates` over the same
# certificates laid out their way, measured in the same run on the same machine.
#
# certkeeper does more per certificate than either (it verifies every signature up to a
# trusted root and checks validity and due dates); lego and certbot only parse and list.
#
# Usage: bench/check.sh [SIZES...]   (default: 1000 10000; RUNS=5 repetitions, median kept)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1000}")
[ $# -eq 0 ] && sizes=(1000 10000)
runs=${RUNS:-5}

if ! command -v lego >/dev/null || ! command -v certbot >/dev/null; then
  echo "installing lego and certbot to compare against" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y lego certbot >/dev/null
fi
cargo build --release --quiet --bin certkeeper --example gen_tree
bin=${CARGO_TARGET_DIR:-target}/release/certkeeper
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# median wall seconds of RUNS runs of a command (stdout discarded; exit status ignored,
# since check exits 1 when some generated certificates are due)
median() {
  local n=$1; shift
  local times=()
  for _ in $(seq "$n"); do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    times+=("$(python3 -c "print($t1 - $t0)")")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'
}

printf '%-8s %-22s %10s %12s\n' certs tool "median s" "vs certkeeper"
for n in "${sizes[@]}"; do
  dir="$work/$n"
  "${CARGO_TARGET_DIR:-target}"/release/examples/gen_tree "$dir" "$n"
  # Sanity: certkeeper must see every certificate, all chains complete.
  json=$("$bin" --config "$dir/config.yaml" check --json || true)
  count=$(python3 -c \
    'import json,sys; d=json.load(sys.stdin); assert all(e["status"]!="critical" for e in d), "critical entries"; print(len(d))' <<<"$json")
  [ "$count" -eq "$n" ] || { echo "certkeeper saw $count of $n certificates" >&2; exit 1; }
  # Warm the page cache once for everyone.
  "$bin" --config "$dir/config.yaml" check >/dev/null || true
  ck=$(median "$runs" "$bin" --config "$dir/config.yaml" check --json)
  lg=$(median "$runs" lego --path "$dir/lego" list)
  cb_runs=$runs; [ "$n" -gt 1000 ] && cb_runs=1
  cb=$(median "$cb_runs" certbot certificates --config-dir "$dir/certbot" \
        --work-dir "$dir/cb-work" --logs-dir "$dir/cb-logs")
  for row in "certkeeper check:$ck" "lego list:$lg" "certbot certificates:$cb"; do
    tool=${row%%:*}; t=${row##*:}
    printf '%-8s %-22s %10s %11.2fx\n' "$n" "$tool" "$t" "$(python3 -c "print($t / $ck)")"
  done
done
echo "($(nproc) cores; the ratio is each tool's time over certkeeper's: above 1 means certkeeper is faster)"
