#!/usr/bin/env bash
# Benchmark (not a test): fleet mode at scale. CERTS shared certificates (`fleet: true`) on 3
# hosts, each host a directory of its own (config, state_dir, live files, seal key), all on
# one 3-member etcd on 127.0.0.1 (free ports, flags as the tests' cluster; Debian's
# etcd-server and etcd-client). The issuer is the built-in local CA, so that nothing but
# certkeeper and etcd is measured. The CA is shared the way an operator shares a local CA
# across a pool: host h1's first pass creates it under h1's state_dir/ca/internal/, and that
# directory is copied (mode kept) into the other hosts' state_dirs before their first pass;
# every host then issues from, and trusts, the same root, whichever host leads.
#
# Setup: h1 `renew` issues generation 1 of every certificate; h2 and h3 `renew` deploy it.
# Then, measured:
#   noop    a no-op pass (`renew`, nothing due, every host serves the current generation)
#           on a fleet host, against a single host with the same CERTS certificates not
#           shared (no fleet section, its own local CA); RUNS runs each, alternated (the
#           fleet host cycles h1, h2, h3), medians of wall and CPU (user + system) time.
#           Target: the fleet pass under 2x the single host's, wall and CPU.
#   idle    `certkeeper run` on the 3 hosts (yearly schedule, no jitter), each watching the
#           CERTS `current` keys; once each has logged its watches and its first pass, IDLE
#           seconds idle: context switches summed over all threads (/proc/PID/task/*/status),
#           CPU time (/proc/PID/stat) and "Pass done" lines logged, and the etcd members'
#           RSS before the daemons start and with their watches open. Target: no wake-ups;
#           a pass while idle, or more than one context switch per 20 idle seconds (the
#           watches' link sends no HTTP/2 pings, see BENCHMARKS.md), fails the run.
#   rollout with the 3 daemons running, `renew --force` on h1 (the leader: it issues
#           generation 2 of every certificate, publishes each, deploys them as the canary);
#           the watches of h2 and h3 get each generation as pending, then good, and deploy.
#           Polls the live files (sha256 of every fullchain, every 0.2 s) until the 3 x CERTS
#           host deploys are done: the time each host was done, and the total. Every host
#           must then serve the same pair as h1, and no host ordered anything.
#   latency the same for one certificate (k1), LAT_RUNS times: `renew --force k1` on h1, with
#           `etcdctl watch` on k1's `current` key timestamping the publish (first put) and
#           the good verdict (second put), and the live files polled every 20 ms: publish to
#           served by all, medians.
#   etcd    for the setup (generation 1) and the rollout (generation 2), before and after,
#           per generation: etcd's revision (one per write transaction); from member m0's
#           /metrics (each member applies every write) etcd_mvcc_put_total, _delete_total,
#           _txn_total and _db_total_size_in_use_in_bytes; _range_total summed over the
#           members (each read is served by one). For the no-op passes: the transactions and
#           ranges of all members. At the end, what etcd holds (etcdctl get --prefix): keys
#           and value bytes by kind.
#
# Usage: bench/fleet.sh   (CERTS=1000, RUNS=5, IDLE=60, LAT_RUNS=5 by default, about 5 minutes;
# CERTS=50 IDLE=10 is a quick run). Exits 1 when a check fails, the no-op target is missed,
# a daemon runs a pass while idle or does not exit 0 on SIGTERM.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
n=${CERTS:-1000}
runs=${RUNS:-5}
idle=${IDLE:-60}
lat_runs=${LAT_RUNS:-5}
hz=$(getconf CLK_TCK)
for tool in etcd etcdctl curl python3; do
  command -v "$tool" >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client curl python3 >/dev/null
done
cargo build --release --quiet --bin certkeeper
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/certkeeper

work=$(mktemp -d)
etcd_pids=()
daemon_pids=()
watch_pid=
cleanup() {
  local p
  for p in "${daemon_pids[@]}" $watch_pid "${etcd_pids[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail=0
die() { echo "FAIL: $*" >&2; exit 1; }
miss() { echo "TARGET MISSED: $*" >&2; fail=1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }

# --- etcd: 3 members on free loopback ports ------------------------------------------------
mapfile -t ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
for s in socks: print(s.getsockname()[1])
')
initial=
for i in 0 1 2; do initial+="${initial:+,}m$i=http://127.0.0.1:${ports[$((2 * i + 1))]}"; done
endpoints=()
for i in 0 1 2; do
  client=127.0.0.1:${ports[$((2 * i))]}
  peer=127.0.0.1:${ports[$((2 * i + 1))]}
  endpoints+=("http://$client")
  etcd --name "m$i" --data-dir "$work/etcd/m$i" \
    --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --initial-cluster-token "certkeeper-bench-$$" \
    --heartbeat-interval 100 --election-timeout 1000 \
    --logger zap --log-outputs stderr >"$work/etcd-m$i.log" 2>&1 &
  etcd_pids+=($!)
done
eps=$(IFS=,; echo "${endpoints[*]}")
export ETCDCTL_API=3
ctl() { etcdctl --endpoints "$eps" --command-timeout 30s "$@"; }
for _ in $(seq 300); do
  ctl endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
ctl endpoint health >/dev/null 2>&1 || { tail -n 20 "$work"/etcd-m*.log >&2; die "etcd did not become healthy"; }
metrics_url=${endpoints[0]}/metrics
fleet=bench
prefix=/certkeeper/$fleet/

# --- hosts ----------------------------------------------------------------------------------
"$bin" fleet keygen --out "$work/fleet.key" >/dev/null
# config DIR [HOST]: CERTS certificates k1..kN; shared, in fleet HOST's config, when given.
config() {
  local dir=$1 host=${2:-} i
  mkdir -p "$dir"
  {
    echo 'state_dir: state'
    echo 'issuers:'
    echo '  internal: { type: local-ca, validity: 90d }'
    echo 'renewal: { before_expiry: 30d, schedule: "0 0 0 1 1 *", jitter: 0s }'
    if [ -n "$host" ]; then
      echo 'fleet:'
      echo "  name: $fleet"
      echo "  host: $host"
      echo "  etcd: { endpoints: [$(printf '"%s",' "${endpoints[@]}" | sed 's/,$//')] }"
      echo '  seal_key_file: fleet.key'
    fi
    echo 'certificates:'
    for i in $(seq "$n"); do
      echo "  - name: k$i"
      echo "    domains: [k$i.fleet.example.test]"
      echo '    issuer: internal'
      [ -z "$host" ] || echo '    fleet: true'
      echo "    fullchain: live/k$i/fullchain.pem"
      echo "    privkey: live/k$i/privkey.pem"
    done
  } >"$dir/config.yaml"
  if [ -n "$host" ]; then
    install -m 0600 "$work/fleet.key" "$dir/fleet.key"
  fi
}
hosts=(h1 h2 h3)
for h in "${hosts[@]}"; do config "$work/$h" "$h"; done
config "$work/single"

# ck DIR ARGS...: certkeeper with DIR's config, output in $work/out; $t wall, $cpu user+sys
# (the shell's own timing, in milliseconds).
ck() {
  local dir=$1 TIMEFORMAT='%3R %3U %3S' times u sy
  shift
  rc=0
  times=$({ time "$bin" --config "$dir/config.yaml" "$@" >"$work/out" 2>&1 || rc=$?; } 2>&1)
  read -r t u sy <<<"$times"
  cpu=$(awk -v u="$u" -v s="$sy" 'BEGIN {printf "%.3f", u + s}')
}
count() { grep -c -- "$1" "$work/out" || true; }
expect_count() {
  local what=$1 pattern=$2 got
  got=$(count "$pattern")
  [ "$got" -eq "$n" ] || { tail -n 20 "$work/out" >&2; die "$what: '$pattern' $got times of $n"; }
}

# One scrape of the metrics: "REVISION PUTS DELETES TXNS RANGES DB_IN_USE". Writes are
# applied by every member: m0's counts; reads are served by the member asked: summed.
etcd_counters() {
  local rev ranges
  rev=$(ctl get "${prefix}none" -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
  ranges=$(for e in "${endpoints[@]}"; do curl -s "$e/metrics"; done |
    awk '$1 == "etcd_mvcc_range_total" {r += $2} $1 == "etcd_mvcc_txn_total" {x += $2} END {printf "%d %d", r, x}')
  curl -s "$metrics_url" | awk -v rev="$rev" -v r="${ranges% *}" -v xs="${ranges#* }" '
    $1 == "etcd_mvcc_put_total" {p = $2}
    $1 == "etcd_mvcc_delete_total" {d = $2}
    $1 == "etcd_mvcc_txn_total" {x = $2}
    $1 == "etcd_mvcc_db_total_size_in_use_in_bytes" {b = $2}
    END {printf "%d %d %d %d %d %d %d\n", rev, p, d, x, r, b, xs}'
}
# The resident memory of the 3 etcd members, MB.
etcd_rss() {
  local p
  for p in "${etcd_pids[@]}"; do awk '$1 == "VmRSS:" {print $2}' /proc/"$p"/status; done |
    awk '{s += $1} END {printf "%.0f", s / 1024}'
}
declare -A r
# etcd_delta KEY BEFORE AFTER: per generation (of n certificates) figures into r[KEY,*].
etcd_delta() {
  local key=$1
  read -r -a b <<<"$2"
  read -r -a a <<<"$3"
  r[$key]=$(awk -v n="$n" -v r0="${b[0]}" -v r1="${a[0]}" -v p0="${b[1]}" -v p1="${a[1]}" \
    -v d0="${b[2]}" -v d1="${a[2]}" -v x0="${b[3]}" -v x1="${a[3]}" -v g0="${b[4]}" -v g1="${a[4]}" \
    -v s0="${b[5]}" -v s1="${a[5]}" 'BEGIN {
      printf "write txns (revisions) %d (%.2f per generation); puts %d (%.2f); deletes %d (%.2f); txn requests %d (%.2f); ranges %d (%.2f); db in use %+.1f KiB (%.0f bytes per generation)",
        r1 - r0, (r1 - r0) / n, p1 - p0, (p1 - p0) / n, d1 - d0, (d1 - d0) / n, x1 - x0, (x1 - x0) / n,
        g1 - g0, (g1 - g0) / n, (s1 - s0) / 1024, (s1 - s0) / n }')
}

# Fingerprints of every host's live fullchains, "HOST CERT SHA256" lines.
live_sums() {
  local h
  for h in "$@"; do
    (cd "$work/$h" && sha256sum live/*/fullchain.pem 2>/dev/null) | awk -v h="$h" '{split($2, p, "/"); print h, p[2], $1}'
  done
}

# --- setup: generation 1 ------------------------------------------------------------------
e0=$(etcd_counters)
ck "$work/h1" renew
[ "$rc" -eq 0 ] || { tail -n 20 "$work/out" >&2; die "h1 first pass exited $rc"; }
expect_count "h1 first pass" ": renewed from internal"
r[setup_h1]="$t s (CPU $cpu s)"
for h in h2 h3; do
  mkdir -p "$work/$h/state/ca"
  cp -a "$work/h1/state/ca/internal" "$work/$h/state/ca/"
  ck "$work/$h" renew
  [ "$rc" -eq 0 ] || { tail -n 20 "$work/out" >&2; die "$h first pass exited $rc"; }
  expect_count "$h first pass" ": renewed from fleet generation 1"
  r[setup_$h]="$t s (CPU $cpu s)"
done
sleep 1
e1=$(etcd_counters)
etcd_delta gen1 "$e0" "$e1"
ck "$work/single" renew
[ "$rc" -eq 0 ] || die "single host first pass exited $rc"
expect_count "single host first pass" ": renewed from internal"
r[setup_single]="$t s (CPU $cpu s)"

# --- no-op passes ---------------------------------------------------------------------------
fleet_t=() fleet_c=() single_t=() single_c=()
e_noop0=$(etcd_counters)
for i in $(seq "$runs"); do
  h=${hosts[$(((i - 1) % 3))]}
  ck "$work/single" renew
  [ "$rc" -eq 0 ] || die "single host no-op pass exited $rc"
  expect_count "single host no-op pass" ": not due"
  single_t+=("$t"); single_c+=("$cpu")
  ck "$work/$h" renew
  [ "$rc" -eq 0 ] || die "$h no-op pass exited $rc"
  expect_count "$h no-op pass" ": fleet: nothing to do here now (serves generation 1"
  fleet_t+=("$t"); fleet_c+=("$cpu")
done
e_noop1=$(etcd_counters)
read -r -a nb <<<"$e_noop0"
read -r -a na <<<"$e_noop1"
r[noop_etcd]="$(((na[0] - nb[0]) / runs)) write txns, $(((na[6] - nb[6]) / runs)) transactions holding $(((na[4] - nb[4]) / runs)) range reads per no-op pass"

# --- daemons: idle with the watches open ----------------------------------------------------
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'; }
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
passes() { grep -c 'Pass done:' "$work/$1.log" || true; }
rss_before=$(etcd_rss)
for h in "${hosts[@]}"; do
  "$bin" --config "$work/$h/config.yaml" run 2>"$work/$h.log" &
  daemon_pids+=($!)
done
for k in 0 1 2; do
  h=${hosts[$k]}
  for _ in $(seq 600); do
    grep -q 'watching etcd for new generations' "$work/$h.log" && grep -q 'Pass done:' "$work/$h.log" && break
    kill -0 "${daemon_pids[$k]}" 2>/dev/null || { cat "$work/$h.log" >&2; die "$h's daemon exited"; }
    sleep 0.5
  done
  grep -q 'watching etcd for new generations' "$work/$h.log" || die "$h's daemon does not watch etcd after 300 s"
  grep -q 'Pass done:' "$work/$h.log" || die "$h's daemon did no first pass in 300 s"
  if grep -q 'cannot watch' "$work/$h.log"; then die "$h: $(grep -m1 'cannot watch' "$work/$h.log")"; fi
done
sleep 2
declare -A sw0 t0 p0
for k in 0 1 2; do
  pid=${daemon_pids[$k]} h=${hosts[$k]}
  sw0[$h]=$(switches "$pid"); t0[$h]=$(ticks "$pid"); p0[$h]=$(passes "$h")
done
sleep "$idle"
rss_idle=$(etcd_rss)
for k in 0 1 2; do
  pid=${daemon_pids[$k]} h=${hosts[$k]}
  kill -0 "$pid" 2>/dev/null || die "$h's daemon died while idle"
  sw=$(($(switches "$pid") - sw0[$h]))
  r[idle_$h]=$(awk -v s="$sw" -v t="$idle" -v d="$(($(ticks "$pid") - t0[$h]))" -v hz="$hz" -v p="$(($(passes "$h") - p0[$h]))" \
    -v rss="$(awk '$1 == "VmRSS:" {print $2}' /proc/"$pid"/status)" -v th="$(ls /proc/"$pid"/task | wc -l)" \
    'BEGIN {printf "%d context switches (%.1f per minute), %.2f CPU s, %d passes, RSS %.1f MB, %d threads", s, s * 60 / t, d / hz, p, rss / 1024, th}')
  [ "$(($(passes "$h") - p0[$h]))" -eq 0 ] || miss "$h: a pass ran while idle"
  # No wake-ups: a stray context switch (a signal, the kernel's bookkeeping) is let pass,
  # a periodic one is not (HTTP/2 pings every 10 s on 3 links were 18 a minute).
  [ "$sw" -le "$((idle / 20 + 1))" ] || miss "$h: $sw context switches while idle"
done

# --- rollout: generation 2 of every certificate ---------------------------------------------
live_sums h1 h2 h3 | sort >"$work/gen1.sums"
[ "$(wc -l <"$work/gen1.sums")" -eq $((3 * n)) ] || die "not every host serves every certificate before the rollout"
e2=$(etcd_counters)
start=$(now)
"$bin" --config "$work/h1/config.yaml" renew --force >"$work/force.out" 2>&1 &
force_pid=$!
declare -A done_at
force_done=
while :; do
  live_sums h1 h2 h3 | sort >"$work/now.sums"
  # Per host: how many certificates serve another pair than generation 1's.
  while read -r h changed; do
    if [ "$changed" -eq "$n" ] && [ -z "${done_at[$h]:-}" ]; then done_at[$h]=$(secs "$start" "$(now)"); fi
  done < <(awk 'NR == FNR {a[$1 " " $2] = $3; next} a[$1 " " $2] != $3 {c[$1]++} END {for (h in c) print h, c[h]}' \
    "$work/gen1.sums" "$work/now.sums")
  if [ -z "$force_done" ] && ! kill -0 "$force_pid" 2>/dev/null; then
    force_done=$(secs "$start" "$(now)")
    wait "$force_pid" || die "h1 renew --force exited $?: $(tail -n 5 "$work/force.out")"
  fi
  [ -n "${done_at[h1]:-}" ] && [ -n "${done_at[h2]:-}" ] && [ -n "${done_at[h3]:-}" ] && break
  awk -v e="$(secs "$start" "$(now)")" 'BEGIN {exit !(e > 900)}' &&
    die "the rollout is not done after 900 s: $(for h in h1 h2 h3; do echo -n "$h ${done_at[$h]:-no} "; done)"
  sleep 0.2
done
total=$(secs "$start" "$(now)")
[ -n "$force_done" ] || { wait "$force_pid" || die "h1 renew --force exited $?"; force_done=$total; }
grep -c ': renewed from internal (fleet generation 2, canary host h1)' "$work/force.out" | grep -qx "$n" ||
  die "h1 renew --force: $(grep -c ': renewed from' "$work/force.out") renewed of $n: $(grep -v ': renewed from' "$work/force.out" | head -n 3)"
# Every host serves h1's pair.
live_sums h1 h2 h3 | awk '{k[$2] = k[$2] " " $3} END {for (c in k) {split(k[c], s, " "); if (s[1] != s[2] || s[1] != s[3]) bad++}; print bad + 0}' |
  grep -qx 0 || die "after the rollout some host serves another pair than h1"
for h in h2 h3; do
  if grep -q 'renewed from internal' "$work/$h.log"; then die "$h ordered from its CA during the rollout"; fi
done
sleep 3
e3=$(etcd_counters)
etcd_delta gen2 "$e2" "$e3"

# --- latency: one certificate ---------------------------------------------------------------
lat_pub=() lat_all=() lat_canary=() lat_good=()
for i in $(seq "$lat_runs"); do
  live_sums h1 h2 h3 | awk '$2 == "k1"' >"$work/k1.before"
  : >"$work/watch.out"
  rm -f "$work/watch.fifo"
  mkfifo "$work/watch.fifo"
  while read -r line; do
    [ "$line" = PUT ] && now >>"$work/watch.out"
  done <"$work/watch.fifo" &
  reader_pid=$!
  (exec etcdctl --endpoints "$eps" watch "${prefix}certs/k1/current" >"$work/watch.fifo" 2>/dev/null) &
  watch_pid=$!
  sleep 0.5
  started=$(now)
  ck "$work/h1" renew --force k1
  [ "$rc" -eq 0 ] || die "h1 renew --force k1 exited $rc"
  canary=
  while :; do
    live_sums h1 h2 h3 | awk '$2 == "k1"' >"$work/k1.now"
    changed=$(awk 'NR == FNR {a[$1] = $3; next} a[$1] != $3 {print $1}' "$work/k1.before" "$work/k1.now")
    if [ -z "$canary" ] && grep -qx h1 <<<"$changed"; then canary=$(now); fi
    [ "$(grep -c . <<<"$changed")" -eq 3 ] && break
    awk -v e="$(secs "$started" "$(now)")" 'BEGIN {exit !(e > 120)}' && die "k1 not served by every host 120 s after renew --force"
    sleep 0.02
  done
  all=$(now)
  sleep 0.3
  kill "$watch_pid" 2>/dev/null || true
  wait "$watch_pid" "$reader_pid" 2>/dev/null || true
  watch_pid=
  mapfile -t puts <"$work/watch.out"
  [ "${#puts[@]}" -ge 2 ] || die "etcdctl watch saw ${#puts[@]} puts of k1's current key (2 expected: publish, verdict)"
  lat_pub+=("$(secs "$started" "${puts[0]}")")
  lat_canary+=("$(secs "${puts[0]}" "$canary")")
  lat_good+=("$(secs "${puts[0]}" "${puts[1]}")")
  lat_all+=("$(secs "${puts[0]}" "$all")")
done

# --- the daemons stop -----------------------------------------------------------------------
for k in 0 1 2; do kill -TERM "${daemon_pids[$k]}"; done
for k in 0 1 2; do
  code=0
  wait "${daemon_pids[$k]}" || code=$?
  [ "$code" -eq 0 ] || miss "${hosts[$k]}'s daemon exited $code after SIGTERM"
done
daemon_pids=()

# --- what etcd holds ------------------------------------------------------------------------
ctl get --prefix "$prefix" -w json >"$work/dump.json"
held=$(python3 - "$work/dump.json" "$prefix" "$n" <<'PY'
import base64, json, sys, collections
dump, prefix, n = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
kinds = collections.OrderedDict()
for kv in dump.get("kvs", []):
    key = base64.b64decode(kv["key"]).decode()
    value = base64.b64decode(kv.get("value", ""))
    parts = key[len(prefix):].split("/")
    kind = parts[2] if len(parts) > 2 else parts[0]
    c = kinds.setdefault(kind, [0, 0, 0])
    c[0] += 1; c[1] += len(value); c[2] += len(key)
tk = sum(c[0] for c in kinds.values()); tv = sum(c[1] for c in kinds.values())
print(f"  {tk} keys, {tv / 1048576:.2f} MiB of values ({tk / n:.1f} keys and {tv / n:.0f} value bytes per certificate)")
for kind, (k, v, kb) in kinds.items():
    print(f"  {kind:<12} {k:>7} keys  {k / n:5.2f} per cert  values {v / max(k, 1):7.0f} bytes each  keys {kb / max(k, 1):4.0f} bytes each")
PY
)

# --- figures --------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
ft=$(median "${fleet_t[@]}"); fc=$(median "${fleet_c[@]}")
st=$(median "${single_t[@]}"); sc=$(median "${single_c[@]}")
wall_ratio=$(ratio "$ft" "$st"); cpu_ratio=$(ratio "$fc" "$sc")
echo "fleet of 3 hosts, $n shared certificates each (local CA), etcd $(etcd --version | awk 'NR == 1 {print $3}') 3 members on loopback, $(nproc) cores"
echo "setup, generation 1: h1 issues and publishes ${r[setup_h1]}; h2 deploys ${r[setup_h2]}; h3 ${r[setup_h3]}; single host issues ${r[setup_single]}"
echo "no-op pass, nothing due, $n certificates (median of $runs, alternated):"
printf '  %-34s wall %6s s  CPU %5s s   runs: %s / CPU %s\n' "single host (not shared)" "$st" "$sc" "${single_t[*]}" "${single_c[*]}"
printf '  %-34s wall %6s s  CPU %5s s   runs: %s / CPU %s\n' "fleet host (h1, h2, h3 in turn)" "$ft" "$fc" "${fleet_t[*]}" "${fleet_c[*]}"
echo "  fleet/single: wall ${wall_ratio}x, CPU ${cpu_ratio}x (target: under 2x); etcd: ${r[noop_etcd]}"
awk -v w="$wall_ratio" -v c="$cpu_ratio" 'BEGIN {exit !(w >= 2 || c >= 2)}' && miss "fleet no-op pass at ${wall_ratio}x wall, ${cpu_ratio}x CPU of the single host's"
echo "daemons idle with $n watches each, $idle s:"
for h in "${hosts[@]}"; do echo "  $h: ${r[idle_$h]}"; done
echo "  etcd's 3 members: RSS $rss_before MB before the daemons, $rss_idle MB with their $((3 * n)) watches open ($(awk -v a="$rss_before" -v b="$rss_idle" -v w="$((3 * n))" 'BEGIN {printf "%.1f", (b - a) * 1024 / w}') KB per watch)"
echo "rollout of generation 2 of $n certificates (renew --force on h1, daemons on h1, h2, h3):"
echo "  h1's renew --force ended after $force_done s"
for h in "${hosts[@]}"; do echo "  $h serves all $n new pairs after ${done_at[$h]} s"; done
echo "  all $((3 * n)) host deploys done after $total s: $(awk -v t="$total" -v n="$n" 'BEGIN {printf "%.1f ms per certificate, %.1f ms per host deploy", t * 1000 / n, t * 1000 / (3 * n)}')"
echo "one certificate (k1), renew --force k1 on h1, daemons running (median of $lat_runs):"
echo "  command start to publish $(median "${lat_pub[@]}") s; publish to the canary h1 serving it $(median "${lat_canary[@]}") s; to the good verdict $(median "${lat_good[@]}") s"
echo "  publish to served by all 3 hosts $(median "${lat_all[@]}") s   runs: ${lat_all[*]}"
echo "etcd (member m0), per generation of $n certificates:"
echo "  generation 1 (h1 issues, h2 and h3 deploy by renew): ${r[gen1]}"
echo "  generation 2 (renew --force on h1, daemons roll out): ${r[gen2]}"
echo "what etcd holds at the end ($((2 + lat_runs)) generations of k1 published, 2 of the others):"
echo "$held"
exit "$fail"
