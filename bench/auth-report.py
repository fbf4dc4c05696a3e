#!/usr/bin/env python3
"""Renders bench/auth.sh results into the "Authentication" section of RESULTS.md, between `<!-- auth:begin -->` and
`<!-- auth:end -->` (report.py keeps the section when it rewrites the file)."""
import json
import sys

import machine


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
           "(second table). Tokens: client credentials, concurrency 8 — with HTTP Basic over HTTP, then over HTTPS, then "
           "over HTTPS by a client authenticating with its certificate (RFC 8705 `tls_client_auth`: the chain is verified "
           "at each request and the token bound to the certificate; connections kept alive, as a client's would be). "
           "Reads: `GET /Patient/{id}`, concurrency 16, with a bearer token (the access check: signature, claims, "
           "revocation list, scopes), then the same server restarted with `--insecure-local`.", ""]
    jitter = machine.jitter_note(rows)
    if jitter:
        out += [jitter, ""]
    out += [
           "| backend | tokens issued: throughput, p50 / p99 | HTTPS, secret | HTTPS, client certificate | introspection: throughput, p50 / p99 | read with token: throughput, p50 / p99 | read, no authentication: throughput, p50 / p99 | p50 / p99 difference |",
           "|---|---|---|---|---|---|---|---|"]
    for b in ["sqlite", "postgresql"]:
        t, i = get(b, "auth-token"), get(b, "auth-introspect")
        rt, rn = get(f"{b}/token", "read"), get(f"{b}/insecure-local", "read")
        if not t:
            continue
        cell = lambda r: f"{fmt(r['throughput_rps'])}/s, {r['p50_ms']} / {r['p99_ms']} ms" + (f", {r['errors']} errors" if r.get("errors") else "") if r else "—"
        diff = f"{rt['p50_ms'] - rn['p50_ms']:+.2f} / {rt['p99_ms'] - rn['p99_ms']:+.2f} ms" if rt and rn else "—"
        out.append(f"| {b} | {cell(t)} | {cell(get(f'{b}/https', 'auth-token'))} | {cell(get(f'{b}/mtls', 'auth-token'))} "
                   f"| {cell(i)} | {cell(rt)} | {cell(rn)} | {diff} |")
    pol = [r for r in rows if "/policy/" in str(r.get("label", "")) and r.get("workload") == "read"]
    if pol:
        out += ["", "Policy engine on reads by id (`GET /Patient/{id}`): a professional with a care relationship to every "
                "patient (each read reads that patient's rules about them and decides) against a client acting on its own "
                "behalf (scopes only: no rule read), on the same server; with the care relationships only, then with more and "
                "more synthetic rules stored (`socle generate --policy-rules`, patients `syn-…`). At concurrency 1 the two "
                "principals' requests alternate in one run, each pair reading the same patient: the difference is the "
                "latency a decision adds to a request (the overhead), both sides under the same conditions. At "
                "concurrency 16 (one run each) the throughput, where p99 is mostly queueing on 2 cores shared with the "
                "load generator.", "",
                "| backend | rules stored | concurrency 1: professional p50 / p99 | client p50 / p99 | **policy overhead p50 / p99** | concurrency 16: professional throughput, p50 / p99 | client throughput, p50 / p99 |",
                "|---|---|---|---|---|---|---|"]
        for b in ["sqlite", "postgresql"]:
            counts = sorted({int(r["label"].split("/")[2]) for r in pol if r["label"].startswith(b + "/") and r["label"].split("/")[2].isdigit()})
            for rules in ["care-only"] + [str(n) for n in counts]:
                g = lambda who, c: get(f"{b}/policy/{rules}/{who}/c{c}", "read")
                p1, c1, p16, c16 = g("professional", 1), g("client", 1), g("professional", 16), g("client", 16)
                if not p1 or not c1:
                    continue
                load = next((r for r in rows if r.get("label") == f"{b}/policy" and r.get("workload") == "rules-load" and str(r.get("rules")) == rules), None)
                label = "care relationships only" if rules == "care-only" else f"{fmt(rules)} synthetic + care" + (f" (+{fmt(load['added'])} loaded in {load['seconds']} s)" if load else "")
                lat = lambda r: f"{r['p50_ms']} / {r['p99_ms']} ms" + (f", {r['errors']} errors" if r.get("errors") else "")
                thr = lambda r: f"{fmt(r['throughput_rps'])}/s, {r['p50_ms']} / {r['p99_ms']} ms" + (f", {r['errors']} errors" if r.get("errors") else "") if r else "—"
                out.append(f"| {b} | {label} | {lat(p1)} | {lat(c1)} | **{p1['p50_ms'] - c1['p50_ms']:+.2f} / {p1['p99_ms'] - c1['p99_ms']:+.2f} ms** | {thr(p16)} | {thr(c16)} |")
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
