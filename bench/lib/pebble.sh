# Sourced by the bench scripts that need an ACME server (bench/noop.sh, bench/floor.sh); not a
# benchmark itself. Starts Pebble and pebble-challtestsrv (Debian package `pebble`) on free
# 127.0.0.1 ports, as the tests do (tests/util/pebble.rs): a TLS certificate generated here
# with openssl (a small CA and a leaf for localhost/127.0.0.1), PEBBLE_VA_NOSLEEP=1, Pebble's
# random badNonce rejection left on, DNS-01 validated against challtestsrv's DNS server.
#
# pebble_start DIR   starts both under DIR (config, TLS files, logs) and sets:
#   PEBBLE_DIRECTORY  https://127.0.0.1:PORT/dir
#   CHALLTESTSRV      http://127.0.0.1:PORT (management API: set-txt, clear-txt)
#   PEBBLE_DNS        127.0.0.1:PORT (challtestsrv's DNS server, UDP and TCP)
#   PEBBLE_HTTPS_CA   the CA of Pebble's HTTPS certificate (PEM)
#   PEBBLE_TRUST      that CA + Pebble's issuing root: what an issuer's trust_roots must hold
#   PEBBLE_LOG        Pebble's log (one line per request it handles)
#   DNS_HOOK          DIR/dns-hook: `present|cleanup FQDN VALUE` through challtestsrv with
#                     curl, each call appended to DIR/dns-hook.log
# pebble_stop        stops both (call it from the caller's EXIT trap).

pebble_pids=()

# Three free TCP ports and one free for both UDP and TCP (a DNS server needs both), distinct.
pebble_free_ports() {
  python3 - <<'PY'
import socket
held, ports = [], []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s); ports.append(s.getsockname()[1])
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", u.getsockname()[1]))
    except OSError:
        continue
    held += [u, t]; ports.append(u.getsockname()[1]); break
print(*ports)
PY
}

pebble_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pebble_stop() {
  local p
  for p in "${pebble_pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pebble_pids=()
}

# One attempt on fresh ports; returns 1 (servers stopped) when something does not come up.
pebble_try_start() {
  local dir=$1 acme mgmt chall dns port _
  read -r acme mgmt chall dns < <(pebble_free_ports)
  mkdir -p "$dir/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.pem" -subj "/CN=bench HTTPS CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/tls/key.pem" -out "$dir/tls/leaf.csr" -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/tls/leaf.ext"
  openssl x509 -req -in "$dir/tls/leaf.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/tls/ca.key" \
    -CAcreateserial -days 30 -extfile "$dir/tls/leaf.ext" -out "$dir/tls/cert.pem" 2>/dev/null
  cat >"$dir/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme", "managementListenAddress": "127.0.0.1:$mgmt",
 "certificate": "$dir/tls/cert.pem", "privateKey": "$dir/tls/key.pem",
 "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
  pebble-challtestsrv -dns01 "127.0.0.1:$dns" -management "127.0.0.1:$chall" \
    -http01 "" -https01 "" -tlsalpn01 "" </dev/null >"$dir/challtestsrv.log" 2>&1 &
  pebble_pids+=($!)
  env -u PEBBLE_WFE_NONCEREJECT PEBBLE_VA_NOSLEEP=1 \
    pebble -config "$dir/pebble.json" -dnsserver "127.0.0.1:$dns" </dev/null >"$dir/pebble.log" 2>&1 &
  pebble_pids+=($!)
  for port in "$chall" "$acme" "$mgmt"; do
    for _ in $(seq 400); do
      pebble_listening "$port" && break
      sleep 0.05
    done
    pebble_listening "$port" || { pebble_stop; return 1; }
  done
  PEBBLE_DIRECTORY=https://127.0.0.1:$acme/dir
  CHALLTESTSRV=http://127.0.0.1:$chall
  PEBBLE_DNS=127.0.0.1:$dns
  PEBBLE_HTTPS_CA=$dir/tls/ca.pem
  PEBBLE_TRUST=$dir/trust-roots.pem
  PEBBLE_LOG=$dir/pebble.log
  # Pebble's issuing root, from its management interface, over the HTTPS CA above.
  curl -sSf --cacert "$PEBBLE_HTTPS_CA" "https://127.0.0.1:$mgmt/roots/0" >"$dir/root.pem" ||
    { pebble_stop; return 1; }
  grep -q 'BEGIN CERTIFICATE' "$dir/root.pem" || { pebble_stop; return 1; }
  cat "$PEBBLE_HTTPS_CA" "$dir/root.pem" >"$PEBBLE_TRUST"
}

pebble_start() {
  local dir=$1 _
  for _ in 1 2 3; do
    if pebble_try_start "$dir"; then
      DNS_HOOK=$dir/dns-hook
      cat >"$DNS_HOOK" <<HOOK
#!/bin/sh
# present|cleanup FQDN VALUE: a TXT record in pebble-challtestsrv.
set -e
echo "\$1 \$2" >>'$dir/dns-hook.log'
if [ "\$1" = present ]; then
  curl -sf -X POST -d "{\"host\":\"\$2\",\"value\":\"\$3\"}" '$CHALLTESTSRV/set-txt' >/dev/null
else
  curl -sf -X POST -d "{\"host\":\"\$2\"}" '$CHALLTESTSRV/clear-txt' >/dev/null
fi
HOOK
      chmod 755 "$DNS_HOOK"
      : >"$dir/dns-hook.log"
      return 0
    fi
  done
  echo "Pebble did not start; its logs:" >&2
  cat "$dir/pebble.log" "$dir/challtestsrv.log" >&2 || true
  return 1
}
