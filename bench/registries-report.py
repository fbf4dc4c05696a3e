#!/usr/bin/env python3
"""Renders bench/registries.sh results into the INSi and Annuaire sections of RESULTS.md, between
`<!-- insi:begin -->`/`<!-- insi:end -->` and `<!-- annuaire:begin -->`/`<!-- annuaire:end -->` (report.py keeps
those sections when it rewrites the file). A section is replaced only when the run measured that kind."""
import json
import sys

import machine


def fmt(x, nd=0):
    return f"{float(x):,.{nd}f}".replace(",", " ")


def header(meta, title, targets, jitter=None):
    conc, low = meta.get("concurrency", "4"), meta.get("latency_concurrency", "")
    passes = f"concurrency {conc}" + (
        f" (the two cores saturated), then {low} (latency below saturation)" if low else "")
    return [f"## {title}", "",
            f"Run of `bench/registries.sh` on {meta.get('date', '?')}, commit `{meta.get('commit', '?')[:12]}` "
            f"({meta.get('dirty', '?')} uncommitted paths), `nproc` = {meta.get('nproc', '?')}, load generator on the "
            f"same cores, {passes}. {targets}", ""] + ([jitter, ""] if jitter else [])


def labels(rows, kind):
    out = []
    for r in rows:
        if r.get("kind") == kind and r.get("label") not in out:
            out.append(r["label"])
    return out


def get(rows, label, workload, concurrency=None):
    """The first row of `label` and `workload`; with `concurrency`, the first measured at that concurrency."""
    return next((r for r in rows if r.get("label") == label and r.get("workload") == workload
                 and (concurrency is None or str(r.get("params", {}).get("concurrency")) == str(concurrency))), None)


def concurrencies(meta):
    """The saturating pass's concurrency, and the latency pass's (None when the run had none)."""
    low = meta.get("latency_concurrency") or None
    return meta.get("concurrency", "4"), low


def short(r):
    return f"{r['p50_ms']} / {r['p99_ms']} ms" if r else "—"


def lat(r):
    return f"{fmt(r['throughput_rps'])} req/s, {r['p50_ms']} / {r['p99_ms']} ms" + (f", {r['errors']} errors" if r.get("errors") else "") if r else "—"


def insi(rows, meta):
    out = header(meta, "INSi: reference registry and teleservice",
                 "Targets (issue 3): verify p99 < 2 ms, retrieve p99 < 10 ms, 10 M identities generated and loaded in "
                 "< 10 min. Queries are drawn from identities spread over the whole registry (the load generator "
                 "re-runs the generator with the same seed); verify sends the matricule and the five traits, retrieve "
                 "the five traits.", machine.jitter_note(rows))
    conc, low = concurrencies(meta)
    extra = f" verify p50 / p99, concurrency {low} | retrieve p50 / p99, concurrency {low} |" if low else ""
    out.append(f"| backend / identities | generate + load | peak RSS (generate) | disk | verify: throughput, p50 / p99 | retrieve: throughput, p50 / p99 |{extra} server peak RSS |")
    out.append("|---|---|---|---|---|---|---|" + ("---|---|" if low else ""))
    for l in labels(rows, "insi"):
        load, rss, disk = get(rows, l, "load"), get(rows, l, "rss"), get(rows, l, "disk")
        secs, n = float(load["seconds"]), int(load["size"])
        cells = f" {short(get(rows, l, 'insi-verify', low))} | {short(get(rows, l, 'insi-retrieve', low))} |" if low else ""
        out.append(f"| {l} | {fmt(secs, 1)} s ({fmt(n / secs)}/s) | {int(load['peak_rss_kb']) // 1024} MiB | "
                   f"{int(disk['bytes']) / 2**30:.2f} GiB | {lat(get(rows, l, 'insi-verify', conc))} | "
                   f"{lat(get(rows, l, 'insi-retrieve', conc))} |{cells} {int(rss['hwm_kb']) // 1024} MiB |")
    return out


QUERIES = [("annuaire-rpps", "RPPS identifier"), ("annuaire-name", "family + given"),
           ("annuaire-mailbox", "mailbox-mss + _include organization"), ("annuaire-rolespecialty", "role + specialty"),
           ("annuaire-postalrevinclude", "postal code + _revinclude roles"), ("annuaire-namecontains", "name:contains")]


def annuaire(rows, meta):
    out = header(meta, "Annuaire Santé: directory searches",
                 "Target (issue 3): directory search p99 < 20 ms with 1 M professionals. Each cell: throughput, "
                 "p50 / p99.", machine.jitter_note(rows))
    conc, low = concurrencies(meta)
    out.append("| backend / structures:professionals | generate + load | disk | " + " | ".join(q[1] for q in QUERIES) + " |")
    out.append("|---|---|---|" + "---|" * len(QUERIES))
    for l in labels(rows, "annuaire"):
        load, disk = get(rows, l, "load"), get(rows, l, "disk")
        cells = [lat(get(rows, l, q[0], conc)) for q in QUERIES]
        out.append(f"| {l} | {fmt(float(load['seconds']), 1)} s | {int(disk['bytes']) / 2**30:.2f} GiB | " + " | ".join(cells) + " |")
        if low:
            cells = [short(get(rows, l, q[0], low)) for q in QUERIES]
            out.append(f"| {l}, concurrency {low}: p50 / p99 | | | " + " | ".join(cells) + " |")
    return out


def replace(text, name, lines):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = "\n".join([begin] + lines + [end])
    if begin in text and end in text:
        return text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    meta = next((r for r in rows if r.get("workload") == "meta"), {})
    path = sys.argv[2]
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    commands = [f"`{r['command']}`" for r in rows if r.get("workload") == "load"]
    for kind, render in [("insi", insi), ("annuaire", annuaire)]:
        if labels(rows, kind):
            lines = render(rows, meta)
            lines += ["", "Commands: " + "; ".join(c for c in commands if ("--persons" in c) == (kind == "insi")) + "."]
            text = replace(text, kind, lines)
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
