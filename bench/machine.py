"""Shared by the report scripts: the machine's own latency noise, as measured by `socle-bench jitter` (a fixed CPU
task timed many times, no server involved) before and after a run — see bench/README.md."""


def jitter_note(rows):
    """A sentence for a report's header, or None when the run has no `machine-jitter` line."""
    probes = [r for r in rows if r.get("workload") == "machine-jitter" and r.get("p50_ms")]
    if not probes:
        return None
    parts = []
    for r in probes:
        p50, p99 = float(r["p50_ms"]), float(r["p99_ms"])
        phase = (r.get("params") or {}).get("phase") or "?"
        parts.append(f"{phase} {p50:.2f} / {p99:.2f} ms (×{p99 / p50:.1f})")
    n = (probes[0].get("params") or {}).get("count", "?")
    return (f"Machine noise at the time, no server running (`socle-bench jitter`: one fixed CPU task timed {n} times "
            f"on one thread), p50 / p99: " + "; ".join(parts) + ". The host alone puts the p99 of work that never varies "
            "at that multiple of its p50: read the p99s below with it.")
