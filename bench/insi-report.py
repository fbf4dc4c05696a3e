#!/usr/bin/env python3
"""Renders the INSi benchmark (bench/insi.sh results.jsonl) into its section of RESULTS.md, between the
`<!-- insi:begin -->` and `<!-- insi:end -->` markers (report.py keeps that section when it rewrites the file)."""
import json
import sys

BEGIN, END = "<!-- insi:begin -->", "<!-- insi:end -->"
TARGETS = "Targets (issue 3): verify p99 < 2 ms, retrieve p99 < 10 ms, 10 M identities generated and loaded in < 10 min."


def fmt(x, nd=2):
    return f"{x:,.{nd}f}".replace(",", " ")


def render(rows):
    meta = next((r for r in rows if r.get("workload") == "meta"), {})
    out = [BEGIN, "## INSi: reference registry and teleservice", ""]
    out.append(f"Run of `bench/insi.sh` on {meta.get('date', '?')}, commit `{meta.get('commit', '?')[:12]}` "
               f"({meta.get('dirty', '?')} uncommitted paths), `nproc` = {meta.get('nproc', '?')}. {TARGETS}")
    out.append("Each identity is drawn from a sample spread over the whole registry (the load generator re-runs the "
               "generator with the same seed); verify sends the matricule and the five traits, retrieve the five traits. "
               f"{'Concurrency 4.'}")
    out.append("")
    out.append("| backend / identities | generate + load | peak RSS (generate) | disk | verify req/s | verify p50 / p99 ms | retrieve req/s | retrieve p50 / p99 ms | errors | server peak RSS |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    labels = []
    for r in rows:
        if r.get("label") and r["label"] not in labels:
            labels.append(r["label"])
    for label in labels:
        rs = [r for r in rows if r.get("label") == label]
        get = lambda w: next((r for r in rs if r.get("workload") == w), None)
        load, v, t, rss, disk = get("insi-load"), get("insi-verify"), get("insi-retrieve"), get("insi-rss"), get("insi-disk")
        secs = float(load["seconds"]) if load else 0
        n = int(load["persons"]) if load else 0
        cells = [
            label,
            f"{fmt(secs, 1)} s ({fmt(n / secs, 0) if secs else '?'}/s)" if load else "—",
            f"{int(load['peak_rss_kb']) // 1024} MiB" if load else "—",
            f"{int(disk['bytes']) / 2**30:.2f} GiB" if disk else "—",
            fmt(v["throughput_rps"], 0) if v else "—",
            f"{v['p50_ms']} / {v['p99_ms']}" if v else "—",
            fmt(t["throughput_rps"], 0) if t else "—",
            f"{t['p50_ms']} / {t['p99_ms']}" if t else "—",
            str((v or {}).get("errors", 0) + (t or {}).get("errors", 0)),
            f"{int(rss['hwm_kb']) // 1024} MiB" if rss else "—",
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Commands: " + "; ".join(f"`{r['command']}`" for r in rows if r.get("workload") == "insi-load")
               + "; load generator `socle-bench insi --op verify|retrieve --persons N --count 20000 --concurrency 4`.")
    out.append(END)
    return "\n".join(out)


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    path = sys.argv[2]
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    section = render(rows)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
