#!/usr/bin/env bash
# Re-indexing benchmark (`socle reindex`, and the background pass of `socle serve` after an upgrade), on SQLite and,
# when SOCLE_BENCH_DATABASE_URL is set (an admin URL allowed to CREATE/DROP DATABASE), on PostgreSQL. Per backend,
# on a fresh store:
#   1. ingest RESOURCES resources (the core benchmark's transaction Bundles of 100: Patient, Encounter,
#      Observations, Conditions), server stopped;
#   2. a summary of every index table (rows, sum of rid, sum of n, per table), then every type's digest changed as
#      a store of an older release would have it, then `socle reindex` timed with /usr/bin/time (rate, peak RSS),
#      then the summary again: it must be identical (the same rows rebuilt);
#   3. digests changed again, `socle serve` started: reads by id (16 clients) while the background pass runs, then
#      after it ended (the log line `réindexation terminée` of the last type), to show what it costs the answers.
# Results: out/reindex-<timestamp>/results.jsonl and a summary on stdout (copied by hand into RESULTS.md).
#
#   SOCLE_BENCH_REINDEX_RESOURCES=100000 bench/reindex.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
RESOURCES="${SOCLE_BENCH_REINDEX_RESOURCES:-100000}"
READS="${SOCLE_BENCH_REINDEX_READS:-20000}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/reindex-$(date -u +%Y%m%dT%H%M%SZ)}"
source "$BENCH/lib.sh"
bench_meta resources="$RESOURCES" reads="$READS"

# The index tables' summary: one line per table (rows, sum of rid, sum of n).
summary() { # sql-runner…
  local t
  for t in idx_string idx_token idx_ref idx_date idx_number idx_quantity idx_uri idx_composite; do
    printf '%s ' "$t"; "$@" "SELECT count(*), coalesce(sum(rid),0), coalesce(sum(n),0) FROM $t"
  done
}
sqlite_q() {
  python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for row in c.execute(sys.argv[2]).fetchall():
    print(*row)
c.commit()' "$DB_FILE" "$1"
}
pg_q() { psql "$PG_URL" -At -F ' ' -c "$1"; }
age() { # sql-runner…
  "$@" "UPDATE socle_meta SET value = 0 WHERE name LIKE 'index:%'" >/dev/null
}

start_server() {
  PORT="$(free_port)"
  SOCLE_LOG=info "$SOCLE" serve --insecure-local --listen "127.0.0.1:$PORT" "${STORE[@]}" >"$1" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0; sleep 0.2; done
  log "server did not start (see $1)"; return 1
}
stop_server() { kill "$PID"; wait "$PID" 2>/dev/null || true; }

run_backend() {
  local backend="$1" dir db="" q
  dir="$(mktemp -d "${TMPDIR:-/tmp}/socle-reindex.XXXXXX")"
  STORE=(--data "$dir")
  DB_FILE="$dir/socle.db"
  if [[ "$backend" == postgresql ]]; then
    db="socle_reindex_$$_${RANDOM}"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "CREATE DATABASE $db"
    PG_URL="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$db")"
    STORE+=(--database "$PG_URL")
    q=(pg_q)
  else
    q=(sqlite_q)
  fi
  local lg=("$LOADGEN" --out "$RESULTS")
  start_server "$OUT/server-$backend-ingest.log"
  log "$backend: ingest of $RESOURCES resources"
  "${lg[@]}" --base "http://127.0.0.1:$PORT/fhir" --label "$backend/ingest" ingest --resources "$RESOURCES" \
    --concurrency 4 --state "$OUT/state-$backend.json" >>"$OUT/loadgen.log" 2>&1
  stop_server
  if [[ "$backend" == postgresql ]]; then psql "$PG_URL" -q -c "VACUUM ANALYZE"; fi

  summary "${q[@]}" >"$OUT/index-$backend-before.txt"
  age "${q[@]}"
  log "$backend: socle reindex"
  /usr/bin/time -f '%e %M' -o "$OUT/time-$backend.txt" \
    env SOCLE_LOG=warn "$SOCLE" reindex "${STORE[@]}" >"$OUT/reindex-$backend.txt" 2>&1
  summary "${q[@]}" >"$OUT/index-$backend-after.txt"
  local same=no; cmp -s "$OUT/index-$backend-before.txt" "$OUT/index-$backend-after.txt" && same=yes
  read -r secs rss_kb <"$OUT/time-$backend.txt"
  local n; n="$(grep -o '^[0-9]* ressources réindexées' "$OUT/reindex-$backend.txt" | cut -d' ' -f1)"
  jline label="$backend/reindex" workload=reindex resources="$n" seconds="$secs" peak_rss_kb="$rss_kb" same_rows="$same"
  log "$backend: $n resources in $secs s, peak RSS $rss_kb kB, rows identical: $same"

  age "${q[@]}"
  start_server "$OUT/server-$backend-background.log"
  log "$backend: reads while the background pass runs"
  "${lg[@]}" --base "http://127.0.0.1:$PORT/fhir" --label "$backend/read-during" read --count "$READS" \
    --concurrency 16 --state "$OUT/state-$backend.json" >>"$OUT/loadgen.log" 2>&1
  local waited=0
  until grep -q 'réindexation achevée\|réindexation interrompue' "$OUT/server-$backend-background.log"; do
    sleep 1; waited=$((waited + 1))
    if (( waited > 3600 )); then log "background pass not finished after an hour"; break; fi
  done
  local during_done; during_done="$(grep -c 'réindexation terminée' "$OUT/server-$backend-background.log")"
  jline label="$backend/background" workload=note note="background pass: $during_done types, finished $waited s after the reads ended"
  "${lg[@]}" --base "http://127.0.0.1:$PORT/fhir" --label "$backend/read-after" read --count "$READS" \
    --concurrency 16 --state "$OUT/state-$backend.json" >>"$OUT/loadgen.log" 2>&1
  grep 'réindexation terminée' "$OUT/server-$backend-background.log" | sed 's/\x1b\[[0-9;]*m//g' >>"$OUT/run.log" || true
  stop_server
  if [[ -n "$db" ]]; then psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE $db"; fi
  rm -rf "$dir"
}

backends=(sqlite)
if [[ -n "${SOCLE_BENCH_DATABASE_URL:-}" ]]; then backends+=(postgresql); fi
for b in "${backends[@]}"; do run_backend "$b"; done
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    w = r.get("workload")
    if w == "reindex":
        n, s = int(r["resources"] or 0), float(r["seconds"])
        print(f'{r["label"]}: {n} resources in {s:.1f} s = {n / s:,.0f}/s, peak RSS {int(r["peak_rss_kb"]) // 1024} MiB, '
              f'index rows identical: {r["same_rows"]}')
    elif w in ("ingest", "read"):
        keys = ("throughput_rps", "p50_ms", "p99_ms", "requests", "errors", "elapsed_s")
        print(r.get("label"), {k: r[k] for k in keys if k in r})
    elif w == "note":
        print(r.get("label"), r.get("note"))
PY
