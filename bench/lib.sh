# Shared by the benchmark scripts (sourced): the results file, logging, the builds, free ports. Expects BENCH, ROOT
# and OUT to be set.
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
jline() { python3 -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' "$@" >>"$RESULTS"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${SOCLE_BENCH_SKIP_BUILD:-}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p socle)
  (cd "$BENCH" && CARGO_TARGET_DIR="$BENCH/target" cargo build --release)
fi
SOCLE="$TARGET/release/socle"
LOADGEN="$BENCH/target/release/socle-bench"

# bench_meta KEY=VALUE…: the run's first line (date, commit, uncommitted paths, cores, and the script's settings).
bench_meta() {
  jline workload=meta date="$(date -u +%FT%TZ)" commit="$(git -C "$ROOT" rev-parse HEAD)" \
    dirty="$(git -C "$ROOT" status --porcelain | wc -l)" nproc="$(nproc)" "$@"
}

# machine_jitter PHASE: the machine's own latency noise, before and after a run (see `socle-bench jitter`).
machine_jitter() {
  "$LOADGEN" --out "$RESULTS" jitter --phase "$1" >/dev/null 2>>"$OUT/run.log" || log "jitter probe ($1) failed"
}
