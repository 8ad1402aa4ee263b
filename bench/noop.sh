#!/usr/bin/env bash
# Benchmark (not a test): wall time of a timer pass that renews nothing, over N certificates
# that are all far from due, side by side, measured in the same run on the same machine:
#   certbot renew         N lineages: ONE real certificate from Pebble (`certbot certonly`,
#                         manual DNS hooks publishing in challtestsrv), its lineage cloned N
#                         times (archive/, relative live/ links, renewal/*.conf) so that
#                         `certbot renew` considers N lineages and renews none
#   certkeeper (ACME)     `certkeeper renew` over N certificates first issued by the same
#                         Pebble (ACME issuer, max_concurrent_requests: 1, DNS-01 through an
#                         exec hook); the issuing pass is setup, timed but not compared
#   certkeeper (local CA) the same over N certificates of the built-in local CA (no network)
# Pebble issues 5-year certificates, so nothing is due with before_expiry 30d (checked: every
# pass must say "not due" / "(skipped)" N times and renew nothing). Also counted: the requests
# Pebble logged during the timed no-op passes (pass by pass for certkeeper) and certkeeper's
# DNS hook calls; and for one more, untimed no-op pass of each tool, the paths whose mtime
# moved (find -newer; certkeeper: under state_dir, certbot: its config, work and logs dirs)
# and, when strace is installed, the successful file-system calls that write (opens for
# writing, renames, fsyncs with the time spent in them, unlinks, mkdirs, links).
#
# Usage: bench/noop.sh [N]   (default N=1000; RUNS=5 repetitions, median kept)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
runs=${RUNS:-5}
for tool in pebble pebble-challtestsrv certbot curl openssl python3; do
  command -v "$tool" >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y pebble certbot curl openssl python3 >/dev/null
done
cargo build --release --quiet --bin certkeeper
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/certkeeper
source bench/lib/pebble.sh

work=$(mktemp -d)
cleanup() { pebble_stop; rm -rf "$work"; }
trap cleanup EXIT
pebble_start "$work/pebble"
export REQUESTS_CA_BUNDLE=$PEBBLE_TRUST
requests() { grep -c ' -> calling handler()' "$PEBBLE_LOG" || true; }
hook_calls() { wc -l <"$work/pebble/dns-hook.log"; }

# timed CMD...: runs CMD, output to $work/out; sets $t (wall seconds) and $rc (exit status).
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  rc=0
  "$@" >"$work/out" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  t=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
fail() { echo "FAIL: $*" >&2; tail -n 20 "$work/out" >&2; exit 1; }
count() { grep -c -- "$1" "$work/out" || true; }

# Pebble's request lines after line $1 of its log, as "COUNT METHOD PATH" (ids as N).
requests_since() {
  grep ' -> calling handler()' "$PEBBLE_LOG" | tail -n +"$(($1 + 1))" |
    awk '{print $4, $5}' | sed 's|/[A-Za-z0-9_-]\{8,\}|/N|g' | sort | uniq -c |
    awk '{printf "%s%s %s x%d", (NR > 1 ? ", " : ""), $2, $3, $1}'
}

declare -A r
# count_writes KEY ROOT CMD...: one more pass of CMD (untimed), and what it wrote: the paths
# under ROOT whose mtime moved (find -newer), and with strace the successful file-system calls
# that write and the paths most opened for writing (relative to ROOT, digits as N).
count_writes() {
  local key=$1 root=$2
  shift 2
  touch "$work/marker"
  sleep 0.05
  if command -v strace >/dev/null; then
    strace -f -qq -z -T -o "$work/trace" -e trace=openat,open,creat,rename,renameat,renameat2,fsync,fdatasync,syncfs,unlink,unlinkat,mkdir,mkdirat,symlink,symlinkat,link,linkat \
      "$@" >"$work/out" 2>&1 || fail "counted pass of $key"
    r[$key,syscalls]=$(awk '
      /openat\(|open\(|creat\(/ { if ($0 ~ /O_WRONLY|O_RDWR|O_CREAT|creat\(/ && $0 !~ /"\/(dev|proc)\//) w++; next }
      /renameat2?\(|rename\(/ { mv++; next }
      /fsync\(|fdatasync\(|syncfs\(/ { s++; if (match($0, /<[0-9.]+>$/)) st += substr($0, RSTART + 1, RLENGTH - 2); next }
      /unlinkat\(|unlink\(/ { rm++; next }
      /mkdirat\(|mkdir\(/ { md++; next }
      /symlinkat\(|symlink\(|linkat\(|link\(/ { ln++; next }
      END { printf "%d opens for writing, %d renames, %d fsyncs (%.2f s in them, summed over threads), %d unlinks, %d mkdirs, %d links", w, mv, s, st, rm, md, ln }
    ' "$work/trace")
    r[$key,written]=$(awk '/O_WRONLY|O_RDWR|O_CREAT/ {match($0, /"[^"]*"/); print substr($0, RSTART + 1, RLENGTH - 2)}' "$work/trace" |
      { grep -v '^/dev/\|^/proc/' || true; } | sed "s|^$root/||; s|[0-9][0-9]*|N|g" | sort | uniq -c | sort -rn | head -n 5 |
      awk '{printf "%s%s x%d", (NR > 1 ? ", " : ""), $2, $1}')
  else
    "$@" >"$work/out" 2>&1 || fail "counted pass of $key"
    r[$key,syscalls]="(strace not installed)"
    r[$key,written]=""
  fi
  r[$key,newer]=$(find "$root" -newer "$work/marker" | wc -l)
}

# --- certbot: one real lineage, cloned to N ---------------------------------------------------
cb=$work/certbot
mkdir -p "$cb"
for action in auth:present cleanup:cleanup; do
  printf '#!/bin/sh\nexec "%s" %s "_acme-challenge.$CERTBOT_DOMAIN." "$CERTBOT_VALIDATION"\n' \
    "$DNS_HOOK" "${action#*:}" >"$cb/${action%%:*}"
  chmod 755 "$cb/${action%%:*}"
done
cbdirs=(--config-dir "$cb/config" --work-dir "$cb/work" --logs-dir "$cb/logs")
# Up to three tries: certbot 2.1 on Python 3.11+ crashes ("AttributeError: can't set
# attribute", certbot issue #9539) on some ACME errors, such as the badNonce that Pebble
# sends at random to 5% of requests.
for try in 1 2 3; do
  certbot certonly --non-interactive --agree-tos -m ops@example.com --server "$PEBBLE_DIRECTORY" \
    --manual --preferred-challenges dns --manual-auth-hook "$cb/auth" \
    --manual-cleanup-hook "$cb/cleanup" -d b1.noop.example.com --cert-name b1 "${cbdirs[@]}" \
    >"$work/out" 2>&1 && break
  [ "$try" -lt 3 ] || fail "certbot certonly, three times"
  echo "certbot certonly failed (try $try): $(grep -m1 -i error "$work/out" || true); again" >&2
done
# Clone lineage b1 to b2..bN as certbot lays lineages out: archive/<name>/ with the files,
# live/<name>/ with links relative into archive, renewal/<name>.conf naming them.
python3 - "$cb/config" "$n" <<'PY'
import os, shutil, sys
config, n = sys.argv[1], int(sys.argv[2])
conf = open(os.path.join(config, "renewal", "b1.conf")).read()
live = os.path.join(config, "live", "b1")
links = {f: os.readlink(os.path.join(live, f)) for f in os.listdir(live) if os.path.islink(os.path.join(live, f))}
for i in range(2, n + 1):
    name = f"b{i}"
    shutil.copytree(os.path.join(config, "archive", "b1"), os.path.join(config, "archive", name))
    os.makedirs(os.path.join(config, "live", name))
    shutil.copy(os.path.join(live, "README"), os.path.join(config, "live", name, "README"))
    for f, target in links.items():
        os.symlink(target.replace("/archive/b1/", f"/archive/{name}/"), os.path.join(config, "live", name, f))
    text = conf.replace("/archive/b1\n", f"/archive/{name}\n").replace("/live/b1/", f"/live/{name}/")
    open(os.path.join(config, "renewal", f"{name}.conf"), "w").write(text)
PY
cb_times=()
cb_before=$(requests)
for _ in $(seq "$runs"); do
  timed certbot renew --non-interactive --no-random-sleep-on-renew "${cbdirs[@]}"
  cb_times+=("$t")
  [ "$rc" -eq 0 ] || fail "certbot renew exited $rc"
  [ "$(count '(skipped)')" -eq "$n" ] || fail "certbot renew skipped $(count '(skipped)') of $n lineages"
  [ "$(count 'Processing ')" -eq "$n" ] || fail "certbot renew processed $(count 'Processing ') of $n"
  grep -q 'No renewals were attempted' "$work/out" || fail "certbot renew attempted a renewal"
done
r[certbot,requests]=$(($(requests) - cb_before))
r[certbot,request_kinds]=$(requests_since "$cb_before")
count_writes certbot "$cb" certbot renew --non-interactive --no-random-sleep-on-renew "${cbdirs[@]}"

# --- certkeeper ---------------------------------------------------------------------------
# config DIR ISSUER ISSUER-YAML [DNS-PROVIDER]: N certificates k1..kN in DIR/config.yaml.
config() {
  local dir=$1 issuer=$2 issuer_yaml=$3 provider=${4:-} i
  mkdir -p "$dir"
  {
    echo 'state_dir: state'
    echo 'issuers:'
    echo "$issuer_yaml"
    if [ -n "$provider" ]; then
      echo 'dns_providers:'
      echo "  $provider: { type: exec, command: [\"$DNS_HOOK\"], timeout: 20s }"
      echo "dns: { resolvers: [\"$PEBBLE_DNS\"], propagation_timeout: 20s, poll_interval: 1s }"
    fi
    echo 'renewal: { before_expiry: 30d, concurrency: 10 }'
    echo 'certificates:'
    for i in $(seq "$n"); do
      echo "  - name: k$i"
      echo "    domains: [k$i.noop.example.com]"
      echo "    issuer: $issuer"
      [ -z "$provider" ] || echo "    dns_provider: $provider"
      echo "    fullchain: live/k$i/fullchain.pem"
      echo "    privkey: live/k$i/privkey.pem"
    done
  } >"$dir/config.yaml"
}
acme_issuer="  pebble:
    type: acme
    directory: $PEBBLE_DIRECTORY
    contact: [\"mailto:ops@example.com\"]
    trust_roots: $PEBBLE_TRUST
    max_concurrent_requests: 1"
config "$work/acme" pebble "$acme_issuer" hook
config "$work/local" internal "  internal: { type: local-ca, validity: 90d }"

# bench_certkeeper KEY DIR ISSUER: the issuing pass, then RUNS no-op passes, then one counted.
bench_certkeeper() {
  local key=$1 dir=$2 issuer=$3 times=() before hooks
  timed "$bin" --config "$dir/config.yaml" renew
  r[$key,setup]=$t
  [ "$rc" -eq 0 ] || fail "certkeeper ($key) first pass exited $rc"
  [ "$(count ": renewed from $issuer")" -eq "$n" ] ||
    fail "certkeeper ($key) first pass renewed $(count ": renewed from $issuer") of $n"
  before=$(requests)
  hooks=$(hook_calls)
  r[$key,per_pass]=
  for _ in $(seq "$runs"); do
    local pass_before
    pass_before=$(requests)
    timed "$bin" --config "$dir/config.yaml" renew
    times+=("$t")
    r[$key,per_pass]+="${r[$key,per_pass]:+, }$(($(requests) - pass_before))"
    [ "$rc" -eq 0 ] || fail "certkeeper ($key) no-op pass exited $rc"
    [ "$(count ': not due')" -eq "$n" ] || fail "certkeeper ($key) said not due for $(count ': not due') of $n"
    [ "$(count ': renewed')" -eq 0 ] || fail "certkeeper ($key) renewed something in a no-op pass"
  done
  r[$key,median]=$(median "${times[@]}")
  r[$key,runs]="${times[*]}"
  r[$key,requests]=$(($(requests) - before))
  r[$key,hooks]=$(($(hook_calls) - hooks))

  r[$key,request_kinds]=$(requests_since "$before")
  count_writes "$key" "$dir/state" "$bin" --config "$dir/config.yaml" renew
}
bench_certkeeper acme "$work/acme" pebble
bench_certkeeper local "$work/local" internal

cb_med=$(median "${cb_times[@]}")
ratio() { awk -v a="$cb_med" -v b="$1" 'BEGIN {printf "%.2fx", a / b}'; }
echo "no-op pass over $n certificates, none due (median of $runs runs):"
printf '  %-32s %9s s                           runs: %s\n' "certbot renew ($n lineages)" "$cb_med" "${cb_times[*]}"
printf '  %-32s %9s s   certbot/certkeeper %6s   runs: %s\n' "certkeeper renew (ACME, Pebble)" "${r[acme,median]}" "$(ratio "${r[acme,median]}")" "${r[acme,runs]}"
printf '  %-32s %9s s   certbot/certkeeper %6s   runs: %s\n' "certkeeper renew (local CA)" "${r[local,median]}" "$(ratio "${r[local,median]}")" "${r[local,runs]}"
echo "setup (issuing pass, not compared): certkeeper ACME ${r[acme,setup]} s, local CA ${r[local,setup]} s"
echo "requests Pebble logged during the $runs timed no-op passes:"
echo "  certbot ${r[certbot,requests]}${r[certbot,request_kinds]:+ (${r[certbot,request_kinds]})}"
echo "  certkeeper ACME ${r[acme,requests]}${r[acme,request_kinds]:+ (${r[acme,request_kinds]})}, pass by pass: ${r[acme,per_pass]}; DNS hook calls: ${r[acme,hooks]}"
echo "what one more no-op pass wrote:"
for row in "certbot:certbot (under its config, work and logs dirs)" "acme:certkeeper ACME (under state_dir)" "local:certkeeper local CA (under state_dir)"; do
  key=${row%%:*}
  echo "  ${row#*:}: ${r[$key,newer]} paths with a newer mtime; ${r[$key,syscalls]}"
  [ -z "${r[$key,written]}" ] || echo "    most opened for writing: ${r[$key,written]}"
done
echo "($(nproc) cores; ratio above 1 means certkeeper is faster)"
