#!/usr/bin/env bash
# ITI-67 as the DMP grows (SQLite): one patient's documents fed by ITI-65, then the others loaded in steps and a
# pass of finds after each step.
#   - the INS registry (`socle generate --persons P`), P qualified patients (`socle-bench dmp --op setup`);
#   - dmp-0 gets PER_PATIENT (1,000) documents by ITI-65 (1 KB PDFs), then finds at that size;
#   - up to each size of SIZES (default "1000000 3000000 10000000"), DocumentReferences are loaded with
#     `socle import` in chunks of 1 M (NDJSON from dmp-bulk.py, copies of a DocumentReference the feed stored,
#     spread over dmp-1…dmp-<P-1>; no SubmissionSet, no Binary: a find reads neither), then the server is
#     started again and measured: dmp-0's first page with one client and with four, any patient's with four.
# Each import chunk's rate and the database's size go to out/dmp-scale-<timestamp>/results.jsonl; a table is
# printed at the end. 10 M documents take ~47 GB of database (4.7 KB each) and about an hour on 2 cores.
#
#   SOCLE_BENCH_DMP_SIZES="1000000 10000000" bench/dmp-scale.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PATIENTS="${SOCLE_BENCH_DMP_PATIENTS:-10000}"
PER_PATIENT="${SOCLE_BENCH_DMP_PER_PATIENT:-1000}"
SIZES="${SOCLE_BENCH_DMP_SIZES:-1000000 3000000 10000000}"
CHUNK="${SOCLE_BENCH_DMP_CHUNK:-1000000}"
FIND_COUNT="${BENCH_SEARCH_COUNT:-2000}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/dmp-scale-$(date -u +%Y%m%dT%H%M%SZ)}"
source "$BENCH/lib.sh"
bench_meta patients="$PATIENTS" per_patient="$PER_PATIENT" sizes="$SIZES" chunk="$CHUNK"
machine_jitter before

dir="$OUT/store"
mkdir -p "$dir"
port="$(free_port)"
pid=""
serve() {
  SOCLE_LOG=warn "$SOCLE" serve --insecure-local --listen "127.0.0.1:$port" --data "$dir" >>"$OUT/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return; sleep 0.2; done
  log "the server did not start (see $OUT/server.log)"; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
# (`|| true`: under `set -e` a failed kill of the already stopped server would make the script's status 1.)
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true' EXIT
lg() { "$LOADGEN" --base "http://127.0.0.1:$port/fhir" --out "$RESULTS" "$@" >>"$OUT/loadgen.log" 2>&1; }
finds() {
  local label="sqlite/$1"
  lg --label "$label/find-one-c1" dmp --op find --patients 1 --concurrency 1 --count "$FIND_COUNT" || log "  find exited with $?"
  lg --label "$label/find-one" dmp --op find --patients 1 --concurrency 4 --count "$FIND_COUNT" || log "  find exited with $?"
  lg --label "$label/find-any" dmp --op find --patients "$PATIENTS" --concurrency 4 --count "$FIND_COUNT" || log "  find exited with $?"
  jline label="$label" workload=rss hwm_kb="$(awk '/VmHWM/{print $2}' "/proc/$pid/status")"
}

log "registry of $PATIENTS persons, $PATIENTS patients, $PER_PATIENT documents fed to dmp-0"
SOCLE_LOG=warn "$SOCLE" generate --persons "$PATIENTS" --seed 1 --data "$dir" >>"$OUT/run.log" 2>&1
serve
lg dmp --op setup --patients "$PATIENTS" --concurrency 8
lg --label "sqlite/fed/feed-one-patient" dmp --op feed --patients "$PATIENTS" --concurrency 8 --count "$PER_PATIENT" \
  --pdf-bytes 1000 --feed-patients 1 --run one --warmup 0
curl -sf "http://127.0.0.1:$port/fhir/DocumentReference?patient=dmp-0&_count=1" >"$OUT/template.json"
finds "$PER_PATIENT"
stop

loaded=0
for size in $SIZES; do
  while (( loaded < size )); do
    n=$(( size - loaded < CHUNK ? size - loaded : CHUNK ))
    rm -f "$OUT/docs.ndjson"; mkfifo "$OUT/docs.ndjson"
    python3 "$BENCH/dmp-bulk.py" "$OUT/template.json" "$n" "$PATIENTS" "$loaded" >"$OUT/docs.ndjson" &
    t0=$(date +%s.%N)
    # The store's own lines (its planner statistics: how long they held the writer) go to import.log.
    SOCLE_LOG=warn,socle_store=info "$SOCLE" import --data "$dir" "$OUT/docs.ndjson" >>"$OUT/import.log" 2>&1
    t1=$(date +%s.%N)
    loaded=$(( loaded + n ))
    jline label=sqlite/import workload=import-chunk documents_after="$loaded" chunk="$n" \
      elapsed_s="$(python3 -c "print(round($t1 - $t0, 1))")" db_bytes="$(du -sb "$dir/socle.db" | cut -f1)"
    log "  $loaded documents loaded ($(tail -1 "$OUT/import.log"))"
  done
  serve
  finds "$(( size + PER_PATIENT ))"
  stop
done
rm -f "$OUT/docs.ndjson"
machine_jitter after
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| documents | find, dmp-0, 1 client: p50 / p99 | dmp-0, 4 clients | any patient, 4 clients | peak RSS |")
print("|---|---|---|---|---|")
by = {}
for r in rows:
    if "/" in r.get("label", "") and r["label"].count("/") >= 1:
        by.setdefault(r["label"].split("/")[1], {})[r["label"].split("/")[-1] if r.get("workload") != "rss" else "rss"] = r
for size, d in by.items():
    if not size.isdigit():
        continue
    cell = lambda k: (f'{d[k]["throughput_rps"]:.0f} req/s, {d[k]["p50_ms"]} / {d[k]["p99_ms"]} ms' if k in d else "–")
    rss = f'{int(d["rss"]["hwm_kb"]) / 1024:.0f} MiB' if "rss" in d else "–"
    print(f"| {int(size):,} | {cell('find-one-c1')} | {cell('find-one')} | {cell('find-any')} | {rss} |")
PY
log "raw results: $RESULTS"
