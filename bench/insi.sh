#!/usr/bin/env bash
# INSi benchmark: `socle generate` fills the reference registry with N synthetic identities (timed, peak RSS),
# then the load generator calls $ins-verify and $ins-retrieve over HTTP (p50/p99, throughput), on SQLite and,
# when SOCLE_BENCH_DATABASE_URL is set (an admin URL allowed to CREATE/DROP DATABASE), on PostgreSQL.
# Results: out/insi-<timestamp>/results.jsonl, rendered into the INSi section of RESULTS.md by insi-report.py.
#
#   SOCLE_BENCH_INSI_PERSONS="1000000 10000000" bench/insi.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
SIZES="${SOCLE_BENCH_INSI_PERSONS:-1000000 10000000}"
COUNT="${INSI_COUNT:-20000}"
CONCURRENCY="${INSI_CONCURRENCY:-4}"
OUT="${SOCLE_BENCH_OUT:-$BENCH/out/insi-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
jline() { python3 -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' "$@" >>"$RESULTS"; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${SOCLE_BENCH_SKIP_BUILD:-}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p socle)
  (cd "$BENCH" && CARGO_TARGET_DIR="$BENCH/target" cargo build --release)
fi
SOCLE="$TARGET/release/socle"
LOADGEN="$BENCH/target/release/socle-bench"
jline workload=meta date="$(date -u +%FT%TZ)" commit="$(git -C "$ROOT" rev-parse HEAD)" \
  dirty="$(git -C "$ROOT" status --porcelain | wc -l)" nproc="$(nproc)" sizes="$SIZES"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_backend() { # backend size
  local backend="$1" size="$2" dir db="" url="" port pid label="$1/$2"
  dir="$(mktemp -d "${TMPDIR:-/tmp}/socle-insi.XXXXXX")"
  local store=(--data "$dir")
  if [[ "$backend" == postgresql ]]; then
    db="socle_insi_${size}_$$"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "CREATE DATABASE $db"
    url="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$SOCLE_BENCH_DATABASE_URL" "$db")"
    store+=(--database "$url")
  fi
  log "$label: generate and load"
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%e %M' -o "$OUT/time-$backend-$size.txt" \
    env SOCLE_LOG=warn "$SOCLE" generate --persons "$size" --seed 1 "${store[@]}" >>"$OUT/run.log" 2>"$OUT/generate-$backend-$size.err"
  t1=$(date +%s.%N)
  read -r secs kb <"$OUT/time-$backend-$size.txt"
  jline label="$label" workload=insi-load persons="$size" seconds="$secs" peak_rss_kb="$kb" \
    command="socle generate --persons $size --seed 1 ${store[*]}"
  if [[ "$backend" == postgresql ]]; then psql "$url" -q -c "ANALYZE ins_registry"; fi
  port="$(free_port)"
  SOCLE_LOG=warn "$SOCLE" serve --listen "127.0.0.1:$port" "${store[@]}" >"$OUT/server-$backend-$size.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
  for op in verify retrieve; do
    "$LOADGEN" --base "http://127.0.0.1:$port/fhir" --label "$label" --out "$RESULTS" \
      insi --op "$op" --persons "$size" --count "$COUNT" --concurrency "$CONCURRENCY" >>"$OUT/loadgen.log" 2>&1 \
      || log "  loadgen $op exited with $?"
  done
  jline label="$label" workload=insi-rss hwm_kb="$(awk '/VmHWM/{print $2}' /proc/$pid/status)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local disk; disk="$(du -sb "$dir" | cut -f1)"
  if [[ -n "$db" ]]; then
    disk="$(psql "$SOCLE_BENCH_DATABASE_URL" -At -c "SELECT pg_database_size('$db')")"
    psql "$SOCLE_BENCH_DATABASE_URL" -q -c "DROP DATABASE $db"
  fi
  jline label="$label" workload=insi-disk bytes="$disk"
  rm -rf "$dir"
}

for size in $SIZES; do
  run_backend sqlite "$size"
  if [[ -n "${SOCLE_BENCH_DATABASE_URL:-}" ]]; then run_backend postgresql "$size"; fi
done
python3 "$BENCH/insi-report.py" "$RESULTS" "$BENCH/RESULTS.md"
log "INSi section of $BENCH/RESULTS.md updated (raw: $RESULTS)"
