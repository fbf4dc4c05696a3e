#!/usr/bin/env bash
# DMP benchmarks (IHE MHD), on SQLite and, when SOCLE_BENCH_DATABASE_URL is set (an admin URL allowed to
# CREATE/DROP DATABASE), on PostgreSQL. Per backend, on a fresh store:
#   - the INS registry (`socle generate --persons P`) and P qualified patients (`socle-bench dmp --op setup`);
#   - ITI-65 feeds: one CDA N1 document wrapping a PDF of PDF_BYTES (100 KB) per submission;
#   - ITI-68 retrievals of those documents (MB/s);
#   - a patient with DOCS_PER_PATIENT (1,000) documents, then the rest of TOTAL documents (small PDFs) spread
#     over every patient, then ITI-67 finds: that patient's documents, and any patient's.
# Results: out/dmp-<timestamp>/results.jsonl, rendered into the DMP section of RESULTS.md by dmp-report.py.
#
#   SOCLE_BENCH_DMP_DOCS=100000 SOCLE_BENCH_DMP_PATIENTS=10000 bench/dmp.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PATIENTS="${SOCLE_BENCH_DMP_PATIENTS:-10000}"
TOTAL="${SOCLE_BENCH_DMP_DOCS:-100000}"
FEEDS="${SOCLE_BENCH_DMP_FEEDS:-3000}"
PDF_BYTES="${SOCLE_BENCH_DMP_PDF_BYTES:-100000}"
PER_PATIENT="${SOCLE_BENCH_DMP_PER_PATIENT:-1000}"
CONCURRENCY="${BENCH_CONCURRENCY:-8}"
FIND_COUNT="${BENCH_SEARCH_COUNT:-2000}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/dmp-$(date -u +%Y%m%dT%H%M%SZ)}"
source "$BENCH/lib.sh"
bench_meta patients="$PATIENTS" total="$TOTAL" feeds="$FEEDS" pdf_bytes="$PDF_BYTES" per_patient="$PER_PATIENT" concurrency="$CONCURRENCY"
machine_jitter before

run_backend() {
  local backend="$1" dir db="" url="" port pid label="$1"
  dir="$(mktemp -d "${TMPDIR:-/tmp}/socle-dmp.XXXXXX")"
  local store=(--data "$dir")
  if [[ "$backend" == postgresql ]]; then
    db="socle_dmp_$$_${RANDOM}"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "CREATE DATABASE $db"
    url="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$db")"
    store+=(--database "$url")
  fi
  log "$label: registry of $PATIENTS persons"
  SOCLE_LOG=warn "$SOCLE" generate --persons "$PATIENTS" --seed 1 "${store[@]}" >>"$OUT/run.log" 2>&1
  port="$(free_port)"
  SOCLE_LOG=warn "$SOCLE" serve --insecure-local --listen "127.0.0.1:$port" "${store[@]}" >"$OUT/server-$backend.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
  local lg=("$LOADGEN" --base "http://127.0.0.1:$port/fhir" --out "$RESULTS")
  local common=(--patients "$PATIENTS" --concurrency "$CONCURRENCY")
  "${lg[@]}" --label "$label/setup" dmp --op setup "${common[@]}" >>"$OUT/loadgen.log" 2>&1
  log "$label: $FEEDS feeds of $PDF_BYTES-byte PDFs"
  "${lg[@]}" --label "$label/feed" dmp --op feed "${common[@]}" --count "$FEEDS" --pdf-bytes "$PDF_BYTES" \
    --feed-patients 200 --run big >>"$OUT/loadgen.log" 2>&1 || log "  feed exited with $?"
  "${lg[@]}" --label "$label/retrieve" dmp --op retrieve "${common[@]}" --count "$FEEDS" --feed-patients 200 \
    >>"$OUT/loadgen.log" 2>&1 || log "  retrieve exited with $?"
  log "$label: $PER_PATIENT documents for one patient, then the rest of $TOTAL"
  "${lg[@]}" --label "$label/feed-one-patient" dmp --op feed "${common[@]}" --count "$PER_PATIENT" --pdf-bytes 1000 \
    --feed-patients 1 --run one --warmup 0 >>"$OUT/loadgen.log" 2>&1 || log "  feed exited with $?"
  local rest=$(( TOTAL - FEEDS - PER_PATIENT ))
  if (( rest > 0 )); then
    # Past 200,000 documents the submissions are built as they are sent: prepared in advance they would take
    # 6.4 KB each of the machine's memory (8 GB at 1 M) and push the database out of the page cache before the finds.
    local stream=()
    if (( rest > 200000 )); then stream=(--stream); fi
    "${lg[@]}" --label "$label/feed-small" dmp --op feed "${common[@]}" --count "$rest" --pdf-bytes 1000 \
      --run bulk --warmup 0 --max-seconds 7200 "${stream[@]}" >>"$OUT/loadgen.log" 2>&1 || log "  feed exited with $?"
  fi
  # Steady state: the load just ended, and autovacuum would otherwise run during the finds.
  if [[ "$backend" == postgresql ]]; then psql "$url" -q -c "VACUUM ANALYZE"; fi
  "${lg[@]}" --label "$label/find-one-c1" dmp --op find --patients 1 --concurrency 1 --count "$FIND_COUNT" \
    >>"$OUT/loadgen.log" 2>&1 || log "  find exited with $?"
  "${lg[@]}" --label "$label/find-one" dmp --op find --patients 1 --concurrency 4 --count "$FIND_COUNT" \
    >>"$OUT/loadgen.log" 2>&1 || log "  find exited with $?"
  "${lg[@]}" --label "$label/find-any" dmp --op find --patients "$PATIENTS" --concurrency 4 --count "$FIND_COUNT" \
    >>"$OUT/loadgen.log" 2>&1 || log "  find exited with $?"
  jline label="$label" workload=rss hwm_kb="$(awk '/VmHWM/{print $2}' /proc/$pid/status)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local disk blobs; blobs="$(du -sb "$dir/blobs" | cut -f1)"; disk="$(du -sb "$dir" | cut -f1)"
  if [[ -n "$db" ]]; then
    disk="$(( $(psql "$SOCLE_BENCH_DATABASE_URL" -At -c "SELECT pg_database_size('$db')") + disk ))"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE $db"
  fi
  jline label="$label" workload=disk bytes="$disk" blob_bytes="$blobs" documents="$TOTAL"
  # Removed at the end, so that no backend's feeds run while the previous store's 100,000 files are deleted.
  # On ext4 without a journal, creating files within minutes of a mass deletion costs more (findings, session 25);
  # session 24's re-run with this change gave PostgreSQL 307 and 313 feeds/s (100 KB and 1 KB PDFs) against 243
  # and 385 before — inside the run-to-run spread.
  stores+=("$dir")
}

stores=()
backends=(sqlite)
if [[ -n "${SOCLE_BENCH_DATABASE_URL:-}" ]]; then backends+=(postgresql); fi
for b in "${backends[@]}"; do run_backend "$b"; done
rm -rf "${stores[@]}"
machine_jitter after
python3 "$BENCH/dmp-report.py" "$RESULTS" "$BENCH/RESULTS.md"
log "DMP section of $BENCH/RESULTS.md updated (raw: $RESULTS)"
