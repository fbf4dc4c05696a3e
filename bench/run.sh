#!/usr/bin/env bash
# Reproduce the whole Socle-vs-Helios benchmark with one command:
#   bench/run.sh
# It builds `socle` (release) and the load generator, then for each data size and each server
# (Socle on SQLite, Socle on PostgreSQL if SOCLE_BENCH_DATABASE_URL is set, Helios on SQLite if its
# binary is found) starts the server on 127.0.0.1 with a fresh data directory / database, runs the
# workloads, samples its RSS, stops it, and finally writes bench/RESULTS.md.
# Socle runs with --insecure-local here: these workloads measure the FHIR engine and its storage (the figures
# before authentication existed are comparable); the cost of token checks is measured by bench/auth.sh.
#
# Knobs (environment):
#   SOCLE_BENCH_SIZES         resource counts, space-separated        (default "10000 100000")
#   SOCLE_BENCH_SERVERS       which servers: socle-sqlite socle-pg helios (default all three)
#   SOCLE_BENCH_DATABASE_URL  PostgreSQL admin URL (postgres://user@127.0.0.1:5432/postgres); a fresh
#                             database socle_bench_* is created and dropped on it for each size
#   HFS_BIN                   Helios `hfs` binary (default: /work/scratch/hfs/bin/hfs, then `hfs` on PATH)
#   HELIOS_R4_PACKAGE         unpacked hl7.fhir.r4.examples@4.0.1 `package/` dir (default
#                             the repo's .cache/fhir/package, fetched by scripts/fetch-fhir-package.sh)
#   SOCLE_BENCH_OUT           output directory (default bench/out/<timestamp>)
#   SOCLE_BENCH_PG_ANALYZE=0  do not run ANALYZE on the PostgreSQL database after the ingest
#   SOCLE_BENCH_SQLITE_ANALYZE=1  what-if: run `sqlite3 socle.db ANALYZE` after the ingest (Socle never does)
#   SOCLE_BENCH_SKIP_BUILD=1  reuse existing binaries
#   CREATE_COUNT READ_COUNT SEARCH_COUNT PAGED_COUNT SUMMARY_COUNT  requests per workload
#   SEARCH_CONCURRENCY (4) READ_CONCURRENCY (16) CREATE_CONCURRENCY (16) INGEST_CONCURRENCY (4)
#   READ_LATENCY_CONCURRENCY (1; empty to skip)  a second read pass below saturation (16 clients saturate the two
#                             cores the load generator shares, and their p99 is mostly waiting for a core);
#                             READ_LATENCY_COUNT requests (default 10000)
#   PHASE_SECONDS             time cap of each measured workload (default 180)
#   INGEST_SECONDS            time cap of the ingest (default 3600)
#   CARGO_TARGET_DIR          honoured for the socle build (the load generator builds in bench/target)
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
SIZES="${SOCLE_BENCH_SIZES:-10000 100000}"
SERVERS="${SOCLE_BENCH_SERVERS:-socle-sqlite socle-pg helios}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/$(date -u +%Y%m%dT%H%M%SZ)}"
CREATE_COUNT="${CREATE_COUNT:-5000}"
READ_COUNT="${READ_COUNT:-20000}"
SEARCH_COUNT="${SEARCH_COUNT:-2000}"
PAGED_COUNT="${PAGED_COUNT:-300}"
SUMMARY_COUNT="${SUMMARY_COUNT:-100}"
SEARCH_CONCURRENCY="${SEARCH_CONCURRENCY:-4}"
READ_CONCURRENCY="${READ_CONCURRENCY:-16}"
READ_LATENCY_CONCURRENCY="${READ_LATENCY_CONCURRENCY-1}"
READ_LATENCY_COUNT="${READ_LATENCY_COUNT:-10000}"
CREATE_CONCURRENCY="${CREATE_CONCURRENCY:-16}"
INGEST_CONCURRENCY="${INGEST_CONCURRENCY:-4}"
PHASE_SECONDS="${PHASE_SECONDS:-180}"
INGEST_SECONDS="${INGEST_SECONDS:-3600}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
jline() { python3 -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' "$@" >>"$RESULTS"; }

# ------------------------------------------------------------------ builds
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH_TARGET="$BENCH/target"
if [[ "${SOCLE_BENCH_SKIP_BUILD:-}" != 1 ]]; then
  log "build: cargo build --release -p socle (in $ROOT)"
  (cd "$ROOT" && cargo build --release -p socle)
  log "build: cargo build --release (in $BENCH)"
  (cd "$BENCH" && CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --release)
fi
SOCLE="$TARGET/release/socle"
LOADGEN="$BENCH_TARGET/release/socle-bench"
[[ -x "$SOCLE" ]] || { echo "no $SOCLE" >&2; exit 2; }
[[ -x "$LOADGEN" ]] || { echo "no $LOADGEN" >&2; exit 2; }
# The machine's own latency noise, before and after the run (see `socle-bench jitter`).
machine_jitter() {
  "$LOADGEN" --out "$RESULTS" jitter --phase "$1" >/dev/null 2>>"$OUT/run.log" || log "jitter probe ($1) failed"
}

HFS="${HFS_BIN:-}"
if [[ -z "$HFS" ]]; then
  if [[ -x /work/scratch/hfs/bin/hfs ]]; then HFS=/work/scratch/hfs/bin/hfs; else HFS="$(command -v hfs || true)"; fi
fi

# Helios search-parameter / compartment bundles.
HELIOS_DATA="$OUT/helios-data"
if [[ " $SERVERS " == *" helios "* && -n "$HFS" ]]; then
  PKG="${HELIOS_R4_PACKAGE:-$("$ROOT/scripts/fetch-fhir-package.sh")}"
  python3 "$BENCH/helios-data.py" "$PKG" "$HELIOS_DATA/data" | tee -a "$OUT/run.log"
fi

# ------------------------------------------------------------------ metadata
python3 - "$OUT/meta.json" "$ROOT" "$SOCLE" "$HFS" "$SIZES" <<'EOF'
import json, os, platform, subprocess, sys, datetime
out, root, socle, hfs, sizes = sys.argv[1:]
def sh(*a):
    try: return subprocess.run(a, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e: return f"({e})"
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
meta = {
  "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
  "nproc": sh("nproc"), "mem_total_kb": int(mem), "cpu": cpu, "kernel": platform.release(),
  "loadavg_start": open("/proc/loadavg").read().strip(),
  "git_commit": sh("git", "-C", root, "rev-parse", "HEAD") or "(none: no commit yet)",
  "git_dirty_files": len([l for l in sh("git", "-C", root, "status", "--porcelain").splitlines() if l.strip()]),
  "rustc": sh("rustc", "--version"), "socle_bin": socle, "hfs_bin": hfs or "(not found)",
  "hfs_version": sh(hfs, "--version") if hfs else "", "sizes": sizes.split(),
  "socle_bin_mtime_utc": datetime.datetime.fromtimestamp(os.path.getmtime(socle), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
  "git_status": sh("git", "-C", root, "status", "--porcelain").splitlines(),
  "env": {k: v for k, v in os.environ.items() if k.endswith("_COUNT") or k.endswith("_CONCURRENCY") or k in ("PHASE_SECONDS", "INGEST_SECONDS") or (k.startswith("SOCLE_BENCH_") and k != "SOCLE_BENCH_DATABASE_URL")},
}
json.dump(meta, open(out, "w"), indent=1)
EOF

# ------------------------------------------------------------------ helpers
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
SERVER_PID=""
stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
PG_DB=""
drop_pg() {
  if [[ -n "$PG_DB" ]]; then
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    PG_DB=""
  fi
}
cleanup() { stop_server; drop_pg; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_health() { # url seconds
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    sleep 0.3
  done
  return 1
}

lg() { # label base args… : run the load generator (bounded by `timeout`)
  local label="$1" base="$2"; shift 2
  local t=$((PHASE_SECONDS + 300)); [[ "$1" == ingest ]] && t=$((INGEST_SECONDS + 300))
  timeout --signal=TERM "$t" "$LOADGEN" --base "$base" --label "$label" --out "$RESULTS" "$@" \
    >>"$OUT/loadgen.log" 2>&1 || log "  load generator exited with $? ($*)"
  # RSS right after the phase (VmHWM is the peak since the server started).
  local phase="$1"; [[ "$1" == search ]] && phase="search-$3"
  jline label="$label" workload=rss-phase phase="$phase" rss_kb="$(status_kb "$SERVER_PID" VmRSS)" hwm_kb="$(status_kb "$SERVER_PID" VmHWM)"
}

bench_server() { # name size
  local name="$1" size="$2" port base health dir label="$1/$2" cmd url=""
  port="$(free_port)"
  dir="$OUT/data/$name-$size"
  rm -rf "$dir"; mkdir -p "$dir"
  case "$name" in
    socle-sqlite)
      cmd=("$SOCLE" serve --data "$dir" --listen "127.0.0.1:$port" --insecure-local)
      base="http://127.0.0.1:$port/fhir"; health="http://127.0.0.1:$port/health"
      SOCLE_LOG=warn "${cmd[@]}" >"$OUT/server-$name-$size.log" 2>&1 &
      ;;
    socle-pg)
      PG_DB="socle_bench_${size}_$$"
      psql "$SOCLE_BENCH_DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
      url="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$PG_DB")"
      cmd=("$SOCLE" serve --data "$dir" --database "$url" --listen "127.0.0.1:$port" --insecure-local)
      base="http://127.0.0.1:$port/fhir"; health="http://127.0.0.1:$port/health"
      SOCLE_LOG=warn "${cmd[@]}" >"$OUT/server-$name-$size.log" 2>&1 &
      ;;
    helios)
      cp -r "$HELIOS_DATA/data" "$dir/data"
      cmd=("$HFS" --host 127.0.0.1 --port "$port" --database-url "$dir/fhir.db")
      base="http://127.0.0.1:$port"; health="http://127.0.0.1:$port/health"
      (cd "$dir" && HFS_BASE_URL="$base" HFS_LOG_LEVEL=warn HFS_UI_ENABLED=false exec "${cmd[@]}") \
        >"$OUT/server-$name-$size.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  local envs="SOCLE_LOG=warn"
  [[ "$name" == helios ]] && envs="cd $dir && HFS_BASE_URL=$base HFS_LOG_LEVEL=warn HFS_UI_ENABLED=false"
  jline label="$label" workload=server command="$envs $(printf '%q ' "${cmd[@]}")" pid="$SERVER_PID"
  if ! wait_health "$health" 180; then
    log "  $name did not become healthy; see server-$name-$size.log"
    stop_server; drop_pg; return 0
  fi
  sleep 3
  local idle; idle="$(status_kb "$SERVER_PID" VmRSS)"
  log "  $name up (pid $SERVER_PID, idle RSS ${idle} kB), ingest $size"
  local state="$OUT/state-$name-$size.json"
  lg "$label" "$base" ingest --resources "$size" --concurrency "$INGEST_CONCURRENCY" --state "$state" --max-seconds "$INGEST_SECONDS"
  local hwm_ingest; hwm_ingest="$(status_kb "$SERVER_PID" VmHWM)"
  if [[ "$name" == socle-sqlite && "${SOCLE_BENCH_SQLITE_ANALYZE:-0}" == 1 ]]; then
    # What-if: Socle itself never runs ANALYZE on SQLite (off by default: measure what users get).
    sqlite3 "$dir/socle.db" ANALYZE && jline label="$label" workload=note note="ANALYZE run with sqlite3 on socle.db after the ingest (what-if)"
  fi
  if [[ "$name" == socle-pg && "${SOCLE_BENCH_PG_ANALYZE:-1}" == 1 ]]; then
    # Fresh tables have no planner statistics until autovacuum gets to them (~1 min): measure the steady state.
    psql "$url" -q -c ANALYZE && jline label="$label" workload=note note="ANALYZE run on the PostgreSQL database after the ingest"
  fi
  if [[ ! -s "$state" ]]; then log "  no state after ingest"; stop_server; drop_pg; return 0; fi
  "$LOADGEN" --base "$base" check --state "$state" >"$OUT/check-$name-$size.txt" 2>&1 \
    && log "  search probes OK" || log "  search probes FAILED: $(grep -c FAIL "$OUT/check-$name-$size.txt") (see check-$name-$size.txt)"
  local P=(--max-seconds "$PHASE_SECONDS")
  lg "$label" "$base" read --count "$READ_COUNT" --concurrency "$READ_CONCURRENCY" --state "$state" "${P[@]}"
  if [[ -n "$READ_LATENCY_CONCURRENCY" ]]; then
    lg "$label" "$base" read --count "$READ_LATENCY_COUNT" --concurrency "$READ_LATENCY_CONCURRENCY" --state "$state" "${P[@]}"
  fi
  lg "$label" "$base" search --query patient-code --count "$SEARCH_COUNT" --concurrency "$SEARCH_CONCURRENCY" --state "$state" "${P[@]}"
  lg "$label" "$base" search --query family-birthdate --count "$SEARCH_COUNT" --concurrency "$SEARCH_CONCURRENCY" --state "$state" "${P[@]}"
  lg "$label" "$base" search --query code-paged --count "$PAGED_COUNT" --concurrency "$SEARCH_CONCURRENCY" --state "$state" --warmup 10 "${P[@]}"
  lg "$label" "$base" search --query summary-count --count "$SUMMARY_COUNT" --concurrency "$SEARCH_CONCURRENCY" --state "$state" --warmup 5 "${P[@]}"
  # Creates last: they add Observations, which would shift the search figures.
  lg "$label" "$base" create --count "$CREATE_COUNT" --concurrency "$CREATE_CONCURRENCY" --state "$state" "${P[@]}"
  local hwm rss_end disk
  hwm="$(status_kb "$SERVER_PID" VmHWM)"; rss_end="$(status_kb "$SERVER_PID" VmRSS)"
  stop_server
  disk="$(du -sb "$dir" | cut -f1)"
  local pgdisk=""
  if [[ -n "$PG_DB" ]]; then
    pgdisk="$(psql "$SOCLE_BENCH_DATABASE_URL" -At -c "SELECT pg_database_size('$PG_DB')" 2>/dev/null || true)"
  fi
  drop_pg
  jline label="$label" workload=rss idle_kb="$idle" hwm_after_ingest_kb="$hwm_ingest" hwm_kb="$hwm" rss_end_kb="$rss_end" \
    disk_bytes="$disk" pg_db_bytes="$pgdisk"
  log "  $name/$size done: peak RSS ${hwm} kB, disk ${disk} B ${pgdisk:+(pg $pgdisk B)}"
}

# ------------------------------------------------------------------ run
log "output: $OUT"
machine_jitter before
for size in $SIZES; do
  for name in $SERVERS; do
    case "$name" in
      socle-pg) [[ -n "${SOCLE_BENCH_DATABASE_URL:-}" ]] || { log "skip socle-pg (SOCLE_BENCH_DATABASE_URL unset)"; continue; } ;;
      helios) [[ -n "$HFS" && -x "$HFS" ]] || { log "skip helios (no hfs binary)"; continue; } ;;
    esac
    log "== $name, $size resources"
    bench_server "$name" "$size"
  done
done
machine_jitter after
python3 - "$OUT/meta.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["loadavg_end"] = open("/proc/loadavg").read().strip()
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$BENCH/report.py" "$OUT" >"$OUT/RESULTS.md" && cp "$OUT/RESULTS.md" "$BENCH/RESULTS.md"
log "wrote $BENCH/RESULTS.md (raw: $RESULTS)"
