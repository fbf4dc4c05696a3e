#!/usr/bin/env python3
"""Renders bench/dmp.sh results into the DMP section of RESULTS.md, between `<!-- dmp:begin -->` and
`<!-- dmp:end -->` (report.py keeps that section when it rewrites the file)."""
import json
import sys

import machine


def fmt(x, nd=0):
    return f"{float(x):,.{nd}f}".replace(",", " ")


def get(rows, label, workload=None):
    return next((r for r in rows if r.get("label") == label and (workload is None or r.get("workload") == workload)), None)


def lat(r, mb=False):
    if not r:
        return "—"
    s = f"{fmt(r['throughput_rps'])}/s, {r['p50_ms']} / {r['p99_ms']} ms"
    if mb and r.get("mb_per_s") is not None:
        s += f", {r['mb_per_s']} MB/s"
    if r.get("errors"):
        s += f", **{r['errors']} errors**"
    return s


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    meta = next((r for r in rows if r.get("workload") == "meta"), {})
    backends = []
    for r in rows:
        l = r.get("label", "")
        b = l.split("/")[0]
        if b and b not in backends and r.get("workload") != "meta":
            backends.append(b)
    out = ["## DMP: IHE MHD feeds, finds, retrievals (bench/dmp.sh)", "",
           f"Run of `bench/dmp.sh` on {meta.get('date', '?')}, commit `{meta.get('commit', '?')[:12]}` "
           f"({meta.get('dirty', '?')} uncommitted paths), `nproc` = {meta.get('nproc', '?')}, load generator on the "
           f"same cores (it also sends and receives every byte), concurrency {meta.get('concurrency', '?')} for feeds "
           f"and retrievals, 1 or 4 for finds. {fmt(meta.get('patients', 0))} qualified patients; "
           f"{fmt(meta.get('total', 0))} documents in all: {fmt(meta.get('feeds', 0))} CDA N1 wrapping a "
           f"{fmt(meta.get('pdf_bytes', 0))}-byte PDF, then {fmt(meta.get('per_patient', 0))} for one patient and the "
           "rest spread over every patient (1 KB PDFs). Each cell: throughput, p50 / p99 latency.", "",
           "Targets (issue 5): ≥ 1,000 ITI-65 feeds/s with a 100 KB PDF on 2 cores; ITI-67 p99 < 20 ms for a patient "
           "with 1,000 documents among 10 M.", ""]
    jitter = machine.jitter_note(rows)
    if jitter:
        out += [jitter, ""]
    out += ["| backend | ITI-65 feed, 100 KB PDF | ITI-68 retrieve | ITI-65 feed, 1 KB PDF | ITI-67, patient with 1,000 docs (page of 50), 1 client | same, 4 clients | ITI-67, any patient, 4 clients | documents | disk (database + blobs) | peak RSS |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for b in backends:
        disk = get(rows, b, "disk")
        rss = get(rows, b, "rss")
        small = get(rows, f"{b}/feed-small") or get(rows, f"{b}/feed-one-patient")
        cells = [lat(get(rows, f"{b}/feed"), True), lat(get(rows, f"{b}/retrieve"), True), lat(small),
                 lat(get(rows, f"{b}/find-one-c1")), lat(get(rows, f"{b}/find-one")), lat(get(rows, f"{b}/find-any"))]
        d = f"{int(disk['bytes']) / 2**30:.2f} GiB ({int(disk['blob_bytes']) / 2**30:.2f} blobs)" if disk else "—"
        out.append(f"| {b} | " + " | ".join(cells) + f" | {fmt(disk['documents']) if disk else '—'} | {d} | "
                   f"{int(rss['hwm_kb']) // 1024 if rss else '—'} MiB |")
    one = [get(rows, f"{b}/find-one") for b in backends]
    hits = [r.get("hits_mean") for r in one if r]
    if hits:
        out += ["", f"Finds for the 1,000-document patient returned {hits[0]} matches per page on average (page of 50)."]
    cmds = sorted({r["command"] for r in rows if r.get("command") and "--op" in r.get("command", "")})
    out += ["", "Commands (ports picked at run time): " + "; ".join(f"`{c}`" for c in cmds[:6]) + "."]
    path = sys.argv[2]
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    begin, end = "<!-- dmp:begin -->", "<!-- dmp:end -->"
    section = "\n".join([begin] + out + [end])
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    elif "## Commands" in text:
        i = text.index("## Commands")
        text = text[:i] + section + "\n\n" + text[i:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
