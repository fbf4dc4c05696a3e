#!/usr/bin/env bash
# Benchmarks of the identity registries, on SQLite and, when SOCLE_BENCH_DATABASE_URL is set (an admin URL
# allowed to CREATE/DROP DATABASE), on PostgreSQL:
#   - INSi: `socle generate --persons N` fills the reference registry (timed, peak RSS), then the load generator
#     calls $ins-verify and $ins-retrieve over HTTP (p50/p99, throughput);
#   - Annuaire: `socle generate --structures S --professionals P` fills the FHIR store (timed), then the load
#     generator runs the directory searches an integrator uses.
# Results: out/registries-<timestamp>/results.jsonl, rendered into the INSi and Annuaire sections of RESULTS.md
# by registries-report.py.
#
#   SOCLE_BENCH_INSI_PERSONS="1000000 10000000" SOCLE_BENCH_ANNUAIRE="100000:1000000" bench/registries.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PERSONS="${SOCLE_BENCH_INSI_PERSONS-1000000 10000000}"
# structures:professionals pairs
ANNUAIRE="${SOCLE_BENCH_ANNUAIRE-10000:100000 100000:1000000}"
COUNT="${BENCH_COUNT:-20000}"
SEARCH_COUNT="${BENCH_SEARCH_COUNT:-2000}"
CONCURRENCY="${BENCH_CONCURRENCY:-4}"
# A second pass at this concurrency measures latency below saturation: at 4 the two cores are saturated (the load
# generator shares them) and p99 is mostly time spent waiting for a core. Empty to skip.
LATENCY_CONCURRENCY="${BENCH_LATENCY_CONCURRENCY-1}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/registries-$(date -u +%Y%m%dT%H%M%SZ)}"
source "$BENCH/lib.sh"
bench_meta persons="$PERSONS" annuaire="$ANNUAIRE" concurrency="$CONCURRENCY" latency_concurrency="$LATENCY_CONCURRENCY"
machine_jitter before

# run_backend KIND BACKEND SIZE: KIND is insi (SIZE = persons) or annuaire (SIZE = structures:professionals).
run_backend() {
  local kind="$1" backend="$2" size="$3" dir db="" url="" port pid label="$2/$1-$3"
  dir="$(mktemp -d "${TMPDIR:-/tmp}/socle-reg.XXXXXX")"
  local store=(--data "$dir")
  if [[ "$backend" == postgresql ]]; then
    db="socle_reg_${kind}_$$_${RANDOM}"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "CREATE DATABASE $db"
    url="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$db")"
    store+=(--database "$url")
  fi
  local gen=(generate --seed 1)
  if [[ "$kind" == insi ]]; then gen+=(--persons "$size"); else gen+=(--structures "${size%%:*}" --professionals "${size##*:}"); fi
  log "$label: ${gen[*]}"
  /usr/bin/time -f '%e %M' -o "$OUT/time-$backend-$kind-$size.txt" \
    env SOCLE_LOG=warn "$SOCLE" "${gen[@]}" "${store[@]}" >>"$OUT/run.log" 2>"$OUT/generate-$backend-$kind-$size.err"
  read -r secs kb <"$OUT/time-$backend-$kind-$size.txt"
  jline label="$label" kind="$kind" workload=load size="$size" seconds="$secs" peak_rss_kb="$kb" \
    command="socle ${gen[*]} ${store[*]}"
  if [[ "$backend" == postgresql ]]; then psql "$url" -q -c "ANALYZE"; fi
  port="$(free_port)"
  SOCLE_LOG=warn "$SOCLE" serve --insecure-local --listen "127.0.0.1:$port" "${store[@]}" >"$OUT/server-$backend-$kind-$size.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
  local lg=("$LOADGEN" --base "http://127.0.0.1:$port/fhir" --label "$label" --out "$RESULTS")
  if [[ "$kind" == insi ]]; then
    for c in "$CONCURRENCY" $LATENCY_CONCURRENCY; do
      for op in verify retrieve; do
        "${lg[@]}" insi --op "$op" --persons "$size" --count "$COUNT" --concurrency "$c" >>"$OUT/loadgen.log" 2>&1 \
          || log "  loadgen insi $op (concurrency $c) exited with $?"
      done
    done
  else
    for c in "$CONCURRENCY" $LATENCY_CONCURRENCY; do
      for q in rpps name mailbox role-specialty postal-revinclude name-contains; do
        "${lg[@]}" annuaire --query "$q" --structures "${size%%:*}" --professionals "${size##*:}" \
          --count "$SEARCH_COUNT" --concurrency "$c" >>"$OUT/loadgen.log" 2>&1 \
          || log "  loadgen annuaire $q (concurrency $c) exited with $?"
      done
    done
  fi
  jline label="$label" kind="$kind" workload=rss hwm_kb="$(awk '/VmHWM/{print $2}' /proc/$pid/status)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local disk; disk="$(du -sb "$dir" | cut -f1)"
  if [[ -n "$db" ]]; then
    disk="$(psql "$SOCLE_BENCH_DATABASE_URL" -At -c "SELECT pg_database_size('$db')")"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE $db"
  fi
  jline label="$label" kind="$kind" workload=disk bytes="$disk"
  rm -rf "$dir"
}

backends=(sqlite)
if [[ -n "${SOCLE_BENCH_DATABASE_URL:-}" ]]; then backends+=(postgresql); fi
for size in $PERSONS; do for b in "${backends[@]}"; do run_backend insi "$b" "$size"; done; done
for size in $ANNUAIRE; do for b in "${backends[@]}"; do run_backend annuaire "$b" "$size"; done; done
machine_jitter after
python3 "$BENCH/registries-report.py" "$RESULTS" "$BENCH/RESULTS.md"
log "registries sections of $BENCH/RESULTS.md updated (raw: $RESULTS)"
