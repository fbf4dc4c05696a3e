#!/usr/bin/env bash
# Benchmarks of authentication, on SQLite and, when SOCLE_BENCH_DATABASE_URL is set, on PostgreSQL:
#   - tokens issued per second: client-credentials requests to /auth/pro/token (a confidential client with a
#     secret, HTTP Basic), concurrency 8;
#   - introspection (RFC 7662) p50/p99 on one access token;
#   - tokens over HTTPS: the same client with its secret, then a client authenticating with its certificate
#     (RFC 8705 tls_client_auth: chain verified at each request, certificate-bound tokens);
#   - the cost of the access check on a FHIR read: the same data read by id with a bearer token (authentication
#     on: signature, claims, revocation list, scopes) and with the server restarted in --insecure-local;
#   - the policy engine's overhead on a read by id (a professional's reads, each decided from the stored rules,
#     against a client's reads that no rule concerns), at concurrency 1 and 16, with the care relationships only
#     and then with each count of POLICY_RULES (default "10000 100000 1000000") synthetic rules stored.
# Results: out/auth-<timestamp>/results.jsonl, rendered into the "Authentication" section of RESULTS.md
# (between <!-- auth:begin --> and <!-- auth:end -->; report.py keeps it) by auth-report.py.
#
#   bench/auth.sh   (knobs: AUTH_COUNT, READ_COUNT, INGEST_RESOURCES, POLICY_RULES, SOCLE_BENCH_SKIP_BUILD=1)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
AUTH_COUNT="${AUTH_COUNT:-20000}"
READ_COUNT="${READ_COUNT:-20000}"
INGEST_RESOURCES="${INGEST_RESOURCES:-10000}"
POLICY_RULES="${POLICY_RULES:-10000 100000 1000000}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/auth-$(date -u +%Y%m%dT%H%M%SZ)}"
source "$BENCH/lib.sh"
bench_meta
machine_jitter before

start() { # start PORT ARGS… ; sets $pid
  local port="$1"; shift
  SOCLE_LOG=warn "$SOCLE" serve --listen "127.0.0.1:$port" "$@" >>"$OUT/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return; sleep 0.2; done
  log "server on $port did not start"; exit 1
}

# HTTPS with client certificates (RFC 8705): an authority, the server's certificate for 127.0.0.1 and a client's,
# made with openssl (ECDSA P-256).
PKI="$OUT/pki"
make_pki() {
  mkdir -p "$PKI"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2 -subj "/CN=Bench CA/O=Socle/C=FR" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  local who
  for who in server client; do
    local subj="/CN=127.0.0.1" ext="subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    if [[ "$who" == client ]]; then subj="/CN=bench-client/O=Socle/C=FR"; ext="extendedKeyUsage=clientAuth"; fi
    openssl req "${ec[@]}" -keyout "$PKI/$who.key" -out "$PKI/$who.csr" -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$PKI/$who.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 \
      -out "$PKI/$who.pem" -extfile <(printf "$ext\n") 2>/dev/null
  done
}
make_pki

start_tls() { # start_tls PORT ARGS… ; sets $pid
  local port="$1"; shift
  SOCLE_LOG=warn "$SOCLE" serve --listen "127.0.0.1:$port" --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" \
    --tls-client-ca "$PKI/ca.pem" "$@" >>"$OUT/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf --cacert "$PKI/ca.pem" "https://127.0.0.1:$port/health" >/dev/null && return; sleep 0.2; done
  log "server (https) on $port did not start"; exit 1
}

run_backend() {
  local backend="$1" dir db="" url="" port label
  dir="$(mktemp -d "${TMPDIR:-/tmp}/socle-auth.XXXXXX")"
  local store=(--data "$dir")
  if [[ "$backend" == postgresql ]]; then
    db="socle_auth_$$_${RANDOM}"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "CREATE DATABASE $db"
    url="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$db")"
    store+=(--database "$url")
  fi
  label="$backend"
  local reg; reg="$(SOCLE_LOG=warn "$SOCLE" clients register --realm pro --name bench --scope 'system/*.cruds' "${store[@]}")"
  local id secret mtls_id
  id="$(sed -n 's/^client_id: //p' <<<"$reg")"; secret="$(sed -n 's/^client_secret: //p' <<<"$reg")"
  mtls_id="$(SOCLE_LOG=warn "$SOCLE" clients register --realm pro --name bench-mtls --scope 'system/*.cruds' \
    --auth-method tls_client_auth --certificate "$PKI/client.pem" "${store[@]}" | sed -n 's/^client_id: //p')"
  port="$(free_port)"
  start "$port" "${store[@]}"
  local lg=("$LOADGEN" --base "http://127.0.0.1:$port/fhir" --label "$label" --out "$RESULTS")
  local iss="http://127.0.0.1:$port/auth/pro"
  log "$label: tokens, introspection"
  "${lg[@]}" auth --op token --issuer "$iss" --client-id="$id" --client-secret="$secret" --scope 'system/*.rs' \
    --count "$AUTH_COUNT" --concurrency 8 >>"$OUT/loadgen.log" 2>&1 || log "  loadgen token exited with $?"
  "${lg[@]}" auth --op introspect --issuer "$iss" --client-id="$id" --client-secret="$secret" --scope 'system/*.rs' \
    --count "$AUTH_COUNT" --concurrency 8 >>"$OUT/loadgen.log" 2>&1 || log "  loadgen introspect exited with $?"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  log "$label: tokens over HTTPS (secret, then client certificate)"
  start_tls "$port" "${store[@]}"
  local tls=(--issuer "https://127.0.0.1:$port/auth/pro" --ca "$PKI/ca.pem" --scope 'system/*.rs' --count "$AUTH_COUNT" --concurrency 8)
  "$LOADGEN" --base "https://127.0.0.1:$port/fhir" --label "$label/https" --out "$RESULTS" \
    auth --op token "${tls[@]}" --client-id="$id" --client-secret="$secret" >>"$OUT/loadgen.log" 2>&1 || log "  loadgen token (https) exited with $?"
  "$LOADGEN" --base "https://127.0.0.1:$port/fhir" --label "$label/mtls" --out "$RESULTS" \
    auth --op token "${tls[@]}" --client-id="$mtls_id" --client-cert "$PKI/client.pem" --client-key "$PKI/client.key" \
    >>"$OUT/loadgen.log" 2>&1 || log "  loadgen token (mtls) exited with $?"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  start "$port" "${store[@]}"
  local token
  token="$(curl -s -u "$id:$secret" -d grant_type=client_credentials --data-urlencode 'scope=system/*.cruds' "$iss/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  log "$label: ingest $INGEST_RESOURCES, reads with a token"
  SOCLE_BENCH_TOKEN="$token" "${lg[@]}" ingest --resources "$INGEST_RESOURCES" --state "$OUT/state-$backend.json" >>"$OUT/loadgen.log" 2>&1
  # Both read runs start from a freshly started server (no after-ingest work running, same cache state).
  kill "$pid"; wait "$pid" 2>/dev/null || true
  start "$port" "${store[@]}"
  SOCLE_BENCH_TOKEN="$token" "$LOADGEN" --base "http://127.0.0.1:$port/fhir" --label "$label/token" --out "$RESULTS" \
    read --count "$READ_COUNT" --state "$OUT/state-$backend.json" >>"$OUT/loadgen.log" 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  log "$label: the same reads, --insecure-local"
  start "$port" "${store[@]}" --insecure-local
  "$LOADGEN" --base "http://127.0.0.1:$port/fhir" --label "$label/insecure-local" --out "$RESULTS" \
    read --count "$READ_COUNT" --state "$OUT/state-$backend.json" >>"$OUT/loadgen.log" 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [[ -n "$db" ]]; then psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE $db"; fi
  rm -rf "$dir"
}

# The policy engine on reads by id: a professional with a care relationship to every ingested patient reads
# them (each read decides: stored rules of that patient and professional, matrix), against the same reads by a
# client acting on its own behalf (scopes only, no rule read) — first with only those care relationships
# stored, then with each count of POLICY_RULES synthetic rules (`socle generate --policy-rules`, cumulative).
run_policy() {
  local backend="$1" dir db="" url="" port
  dir="$(mktemp -d "${TMPDIR:-/tmp}/socle-policy.XXXXXX")"
  local store=(--data "$dir")
  if [[ "$backend" == postgresql ]]; then
    db="socle_policy_$$_${RANDOM}"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "CREATE DATABASE $db"
    url="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$db")"
    store+=(--database "$url")
  fi
  SOCLE_LOG=warn "$SOCLE" generate --structures 5 --professionals 20 --seed 1 "${store[@]}" >>"$OUT/run.log"
  port="$(free_port)"
  local root="http://127.0.0.1:$port" net=(--establishment-networks 127.0.0.0/8)
  start "$port" "${store[@]}" "${net[@]}"
  local rpps pw="bench-mot-de-passe-2026" app reg id secret sys pro
  rpps="$(curl -s "$root/fhir/Practitioner?_count=1" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(next(i["value"] for i in b["entry"][0]["resource"]["identifier"] if i["system"]=="https://rpps.esante.gouv.fr"))')"
  printf '%s' "$pw" | SOCLE_LOG=warn "$SOCLE" accounts create-professional --rpps "$rpps" --password-stdin --no-totp "${store[@]}" >>"$OUT/run.log"
  app="$(SOCLE_LOG=warn "$SOCLE" clients register --realm pro --name app --redirect-uri http://127.0.0.1:9/cb --auth-method none "${store[@]}" | sed -n 's/^client_id: //p')"
  reg="$(SOCLE_LOG=warn "$SOCLE" clients register --realm pro --name sys --scope 'system/*.cruds' "${store[@]}")"
  id="$(sed -n 's/^client_id: //p' <<<"$reg")"; secret="$(sed -n 's/^client_secret: //p' <<<"$reg")"
  sys="$(curl -s -u "$id:$secret" -d grant_type=client_credentials --data-urlencode 'scope=system/*.cruds' "$root/auth/pro/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  log "$backend/policy: ingest $INGEST_RESOURCES, care relationships with every patient"
  SOCLE_BENCH_TOKEN="$sys" "$LOADGEN" --base "$root/fhir" --label "$backend/policy" --out "$RESULTS" \
    ingest --resources "$INGEST_RESOURCES" --state "$OUT/state-policy-$backend.json" >>"$OUT/loadgen.log" 2>&1
  python3 -c 'import json,sys; [print(p[0]) for p in json.load(open(sys.argv[1]))["patients"]]' "$OUT/state-policy-$backend.json" >"$OUT/patients-$backend.txt"
  SOCLE_LOG=warn "$SOCLE" policy add-rule --patients-file "$OUT/patients-$backend.txt" --kind care --professional "$rpps" \
    --detail equipe-de-soins "${store[@]}" >>"$OUT/run.log"
  pro="$(python3 "$BENCH/pro-token.py" "$root" "$app" http://127.0.0.1:9/cb "$rpps" "$pw")"
  local rules stored=0
  for rules in care-only $POLICY_RULES; do
    if [[ "$rules" != care-only ]]; then
      kill "$pid"; wait "$pid" 2>/dev/null || true
      log "$backend/policy: synthetic rules up to $rules"
      /usr/bin/time -f '%e %M' -o "$OUT/time-rules-$backend.txt" \
        env SOCLE_LOG=warn "$SOCLE" generate --policy-rules "$((rules - stored))" --seed 1 "${store[@]}" >>"$OUT/run.log" 2>&1
      read -r secs kb <"$OUT/time-rules-$backend.txt"
      jline label="$backend/policy" workload=rules-load rules="$rules" added="$((rules - stored))" seconds="$secs" peak_rss_kb="$kb"
      stored="$rules"
      if [[ -n "$db" ]]; then psql "$url" -q -c "VACUUM ANALYZE policy_rules"; fi
    fi
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    start "$port" "${store[@]}" "${net[@]}"
    # One client at a time, the professional's and the client's requests alternating in one run (each pair reads
    # the same patient): the latency a decision adds to a request, both sides under the same conditions. Then 16
    # clients, one run each: the throughput under load.
    log "$backend/policy ($rules, concurrency 1): the professional's and the system client's reads, alternating"
    SOCLE_BENCH_TOKEN="$pro" SOCLE_BENCH_TOKEN_B="$sys" "$LOADGEN" --base "$root/fhir" --out "$RESULTS" \
      --label "$backend/policy/$rules/professional/c1" read --alternate-label "$backend/policy/$rules/client/c1" \
      --count "$((2 * READ_COUNT))" --concurrency 1 --warmup 2000 --state "$OUT/state-policy-$backend.json" >>"$OUT/loadgen.log" 2>&1
    log "$backend/policy ($rules, concurrency 16): reads by the professional, then by the system client"
    SOCLE_BENCH_TOKEN="$pro" "$LOADGEN" --base "$root/fhir" --label "$backend/policy/$rules/professional/c16" --out "$RESULTS" \
      read --count "$READ_COUNT" --concurrency 16 --warmup 2000 --state "$OUT/state-policy-$backend.json" >>"$OUT/loadgen.log" 2>&1
    SOCLE_BENCH_TOKEN="$sys" "$LOADGEN" --base "$root/fhir" --label "$backend/policy/$rules/client/c16" --out "$RESULTS" \
      read --count "$READ_COUNT" --concurrency 16 --warmup 2000 --state "$OUT/state-policy-$backend.json" >>"$OUT/loadgen.log" 2>&1
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [[ -n "$db" ]]; then psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE $db"; fi
  rm -rf "$dir"
}

backends=(sqlite)
if [[ -n "${SOCLE_BENCH_DATABASE_URL:-}" ]]; then backends+=(postgresql); fi
for b in "${backends[@]}"; do run_backend "$b"; done
for b in "${backends[@]}"; do run_policy "$b"; done
machine_jitter after
python3 "$BENCH/auth-report.py" "$RESULTS" "$BENCH/RESULTS.md"
log "authentication section of $BENCH/RESULTS.md updated (raw: $RESULTS)"
