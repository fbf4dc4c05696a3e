#!/usr/bin/env python3
"""Renders bench/auth.sh results into the "Authentication" section of RESULTS.md, between `<!-- auth:begin -->` and
`<!-- auth:end -->` (report.py keeps the section when it rewrites the file)."""
import json
import sys


def fmt(x, nd=0):
    return f"{float(x):,.{nd}f}".replace(",", " ")


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    meta = next((r for r in rows if r.get("workload") == "meta"), {})
    get = lambda label, w: next((r for r in rows if r.get("label") == label and r.get("workload") == w), None)
    out = ["<!-- auth:begin -->", "## Authentication", "",
           f"Run of `bench/auth.sh` on {meta.get('date', '?')}, commit `{meta.get('commit', '?')[:12]}` "
           f"({meta.get('dirty', '?')} uncommitted paths), `nproc` = {meta.get('nproc', '?')}, load generator on the same "
           "cores. Targets (issue 4): token issuance ≥ 2,000/s on 2 cores; policy overhead on a FHIR read < 0.5 ms p99 "
           "(measured here: the access check alone — token signature, claims, revocation list, scopes; the policy "
           "engine's rules come next). Tokens: client credentials with HTTP Basic, concurrency 8; reads: `GET /Patient/{id}`, "
           "concurrency 16, with a bearer token, then the same server restarted with `--insecure-local`.", "",
           "| backend | tokens issued: throughput, p50 / p99 | introspection: throughput, p50 / p99 | read with token: throughput, p50 / p99 | read, no authentication: throughput, p50 / p99 | p50 / p99 difference |",
           "|---|---|---|---|---|---|"]
    for b in ["sqlite", "postgresql"]:
        t, i = get(b, "auth-token"), get(b, "auth-introspect")
        rt, rn = get(f"{b}/token", "read"), get(f"{b}/insecure-local", "read")
        if not t:
            continue
        cell = lambda r: f"{fmt(r['throughput_rps'])}/s, {r['p50_ms']} / {r['p99_ms']} ms" + (f", {r['errors']} errors" if r.get("errors") else "") if r else "—"
        diff = f"{rt['p50_ms'] - rn['p50_ms']:+.2f} / {rt['p99_ms'] - rn['p99_ms']:+.2f} ms" if rt and rn else "—"
        out.append(f"| {b} | {cell(t)} | {cell(i)} | {cell(rt)} | {cell(rn)} | {diff} |")
    pol = [r for r in rows if str(r.get("label", "")).count("/policy/") == 1 and r.get("workload") == "read"]
    if pol:
        out += ["", "Policy engine on reads by id (`GET /Patient/{id}`, concurrency 16): a professional with a care "
                "relationship to every patient (each read reads that patient's rules about them and decides) against a "
                "client acting on its own behalf (scopes only: no rule read), on the same server; then again after "
                "storing synthetic rules (`socle generate --policy-rules`).", "",
                "| backend | rules stored | professional (policy): throughput, p50 / p99 | client (no policy): throughput, p50 / p99 | policy overhead p50 / p99 |",
                "|---|---|---|---|---|"]
        for b in ["sqlite", "postgresql"]:
            for rules in ["care-only"] + sorted({r["label"].split("/")[2] for r in pol if r["label"].startswith(b + "/")} - {"care-only"}):
                p_ = get(f"{b}/policy/{rules}/professional", "read")
                c_ = get(f"{b}/policy/{rules}/client", "read")
                if not p_ or not c_:
                    continue
                load = get(f"{b}/policy", "rules-load") if rules != "care-only" else None
                label = "care relationships only" if rules == "care-only" else f"{fmt(rules)} synthetic + care" + (f" (loaded in {load['seconds']} s)" if load else "")
                cell = lambda r: f"{fmt(r['throughput_rps'])}/s, {r['p50_ms']} / {r['p99_ms']} ms" + (f", {r['errors']} errors" if r.get("errors") else "")
                out.append(f"| {b} | {label} | {cell(p_)} | {cell(c_)} | {p_['p50_ms'] - c_['p50_ms']:+.2f} / {p_['p99_ms'] - c_['p99_ms']:+.2f} ms |")
    out += ["", "Commands: `bench/auth.sh` (raw lines in its `out/auth-*/results.jsonl`).", "<!-- auth:end -->"]
    section = "\n".join(out)
    path = sys.argv[2]
    text = open(path, encoding="utf-8").read()
    if "<!-- auth:begin -->" in text:
        a, b = text.index("<!-- auth:begin -->"), text.index("<!-- auth:end -->") + len("<!-- auth:end -->")
        text = text[:a] + section + text[b:]
    elif "<!-- insi:begin -->" in text:
        a = text.index("<!-- insi:begin -->")
        text = text[:a] + section + "\n\n" + text[a:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    open(path, "w", encoding="utf-8").write(text)


main()
