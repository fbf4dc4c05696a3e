#!/usr/bin/env python3
"""Generates the compact FHIR R4 definition extracts committed in crates/fhir/data/.

Usage: scripts/gen-fhir-defs.py PACKAGE_DIR [OUT_DIR]

PACKAGE_DIR is the unpacked hl7.fhir.r4.examples@4.0.1 package (see scripts/fetch-fhir-package.sh);
OUT_DIR defaults to crates/fhir/data next to this script's repository.

Outputs (minified JSON, deterministic order):
  search-parameters.json   every SearchParameter definition:
                           [{"id","code","type","base":[...],"expr"?,"target"?:[...],
                             "comp"?:[{"code","type","expr"}],"multipleOr"?,"multipleAnd"?}]
                           Skipped: the three SearchParameter *examples* (ids "example*", which duplicate or
                           contradict real definitions) and definitions without any base (XPath-only
                           extension parameters of CodeSystem/ValueSet, which cannot be attached to a type).
  resource-types.json      {"Type": "DomainResource"|"Resource"}: every concrete resource type
                           (StructureDefinition kind=resource, abstract=false, derivation=specialization) with
                           the abstract type it derives from, sorted by name.
  compartment-patient.json {"ResourceType": ["param", ...]} from CompartmentDefinition-patient, only the
                           types that are linked to the patient by at least one parameter.
  elements.json            {"elements": {"Owner": [[name, flags, "type|type…", binding], ...]},
                            "valueSets": {"url": ["code", ...]}}: the elements of every concrete resource type
                           and complex data type, from its StructureDefinition's snapshot, in definition order,
                           grouped by the object they sit in — the type (`Patient`, `HumanName`) or a backbone
                           element (`Patient.contact`); name as in the definition (`value[x]` for a choice);
                           flags: 1 summary, 2 modifier, 4 mandatory (min ≥ 1), 8 repeating (max ≠ 1); the type
                           codes as written there, or `@Path` for a backbone element (its own children, or those
                           a `contentReference` names); binding: the URL of the required value set of a `code`
                           element when the package enumerates it (no filter, complete code systems), whose codes
                           are listed under "valueSets", else "".
Two known errata of the R4 definitions are fixed (see ERRATA below).
Standard library only (Python 3.11).
"""

from __future__ import annotations

import glob
import json
import os
import sys


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dump(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


# Known errata of the published R4 SearchParameters, fixed in the extract:
# - DocumentReference-relationship: the component expressions are swapped (the reference `relatesto` points to
#   `code`, the token `relation` to `target`); R4 search reads `relationship=<relatesto>$<relation>`.
# - `value.as(DateTime)` (Observation-code-value-date) names the FHIRPath System type instead of FHIR `dateTime`.
COMPONENT_EXPR_FIXES = {
    ("DocumentReference-relationship", "relatesto"): "target",
    ("DocumentReference-relationship", "relation"): "code",
}


def fix_expr(expr: str) -> str:
    return expr.replace(".as(DateTime)", ".as(dateTime)")


def search_parameters(pkg: str) -> list[dict]:
    defs = [load(p) for p in sorted(glob.glob(os.path.join(pkg, "SearchParameter-*.json")))]
    defs = [d for d in defs if d.get("resourceType") == "SearchParameter"]
    by_url = {d["url"]: d for d in defs if "url" in d}
    out = []
    for d in sorted(defs, key=lambda d: d["id"]):
        if d["id"].startswith("example") or not d.get("base"):
            continue
        e: dict = {"id": d["id"], "code": d["code"], "type": d["type"], "base": d["base"]}
        expr = (d.get("expression") or "").strip()
        if expr:
            e["expr"] = fix_expr(expr)
        if d.get("target"):
            e["target"] = d["target"]
        comps = []
        for c in d.get("component", []):
            ref = by_url.get(c.get("definition", ""))
            if ref is None:
                raise SystemExit(f"{d['id']}: unresolved component definition {c.get('definition')!r}")
            cexpr = COMPONENT_EXPR_FIXES.get((d["id"], ref["code"]), fix_expr(c.get("expression", "").strip()))
            comps.append({"code": ref["code"], "type": ref["type"], "expr": cexpr})
        if comps:
            e["comp"] = comps
        for k in ("multipleOr", "multipleAnd"):
            if k in d:
                e[k] = d[k]
        out.append(e)
    return out


def resource_types(pkg: str) -> dict[str, str]:
    types = {}
    for p in glob.glob(os.path.join(pkg, "StructureDefinition-*.json")):
        d = load(p)
        if (
            d.get("kind") == "resource"
            and not d.get("abstract", False)
            and d.get("derivation") == "specialization"
        ):
            types[d["type"]] = d["baseDefinition"].rsplit("/", 1)[-1]
    return dict(sorted(types.items()))


def patient_compartment(pkg: str) -> dict[str, list[str]]:
    d = load(os.path.join(pkg, "CompartmentDefinition-patient.json"))
    return {r["code"]: r["param"] for r in sorted(d["resource"], key=lambda r: r["code"]) if r.get("param")}


def type_codes(e: dict) -> list[str]:
    codes = []
    for ty in e.get("type", []):
        code = ty.get("code", "")
        # Primitive `id` and friends are written with their FHIRPath system URL in the snapshot.
        if code.startswith("http://hl7.org/fhirpath"):
            code = ty.get("extension", [{}])[0].get("valueUrl", code)
        codes.append(code)
    return codes


def value_sets(pkg: str):
    """An expander of the package's value sets: the set of codes, or None when not enumerable here (filters,
    exclusions, code systems not complete in the package)."""
    vs, cs = {}, {}
    for p in glob.glob(os.path.join(pkg, "ValueSet-*.json")):
        d = load(p)
        if d.get("resourceType") == "ValueSet" and "url" in d:
            vs[d["url"]] = d
    for p in glob.glob(os.path.join(pkg, "CodeSystem-*.json")):
        d = load(p)
        if d.get("resourceType") == "CodeSystem" and "url" in d:
            cs[d["url"]] = d

    def concepts(cl):
        for c in cl:
            yield c["code"]
            yield from concepts(c.get("concept", []))

    def expand(url, seen=()):
        url = url.split("|")[0]
        d = vs.get(url)
        if d is None or url in seen:
            return None
        comp = d.get("compose")
        if not comp or comp.get("exclude"):
            return None
        out = set()
        for inc in comp.get("include", []):
            if inc.get("filter"):
                return None
            for v in inc.get("valueSet", []):
                e = expand(v, seen + (url,))
                if e is None:
                    return None
                out |= e
            if "system" in inc:
                if inc.get("concept"):
                    out |= {c["code"] for c in inc["concept"]}
                else:
                    c = cs.get(inc["system"])
                    if c is None or c.get("content") != "complete":
                        return None
                    out |= set(concepts(c.get("concept", [])))
        return out

    return expand


def elements(pkg: str, types: dict) -> dict:
    """Every element of every concrete resource type and complex data type, grouped by the object they belong
    to: the type itself (`Patient`, `HumanName`) or a backbone element by its path (`Patient.contact`)."""
    expand = value_sets(pkg)
    sds = [load(os.path.join(pkg, f"StructureDefinition-{t}.json")) for t in sorted(types)]
    for p in sorted(glob.glob(os.path.join(pkg, "StructureDefinition-*.json"))):
        d = load(p)
        if d.get("kind") == "complex-type" and d.get("derivation") == "specialization" \
                and not d.get("abstract", False):
            sds.append(d)
    out: dict = {}
    vsets: dict = {}
    for sd in sds:
        snap = sd["snapshot"]["element"]
        parents = {e["path"].rsplit(".", 1)[0] for e in snap if "." in e["path"]}
        for e in snap:
            path = e["path"]
            if "." not in path:
                continue
            owner, name = path.rsplit(".", 1)
            flags = (1 if e.get("isSummary") else 0) | (2 if e.get("isModifier") else 0) \
                | (4 if e.get("min", 0) >= 1 else 0) | (8 if e.get("max", "1") != "1" else 0)
            if "contentReference" in e:
                codes = ["@" + e["contentReference"].lstrip("#")]
            elif path in parents:
                codes = ["@" + path]
            else:
                codes = type_codes(e)
            binding = ""
            b = e.get("binding", {})
            if b.get("strength") == "required" and codes == ["code"] and b.get("valueSet"):
                url = b["valueSet"].split("|")[0]
                codes_of = expand(url)
                if codes_of is not None:
                    vsets[url] = sorted(codes_of)
                    binding = url
            out.setdefault(owner, []).append([name, flags, "|".join(codes), binding])
    return {"elements": out, "valueSets": dict(sorted(vsets.items()))}


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    pkg = sys.argv[1]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.join(repo, "crates", "fhir", "data")
    os.makedirs(out_dir, exist_ok=True)

    sps = search_parameters(pkg)
    types = resource_types(pkg)
    comp = patient_compartment(pkg)
    unknown = sorted({b for s in sps for b in s["base"]} - set(types) - {"Resource", "DomainResource"})
    if unknown:
        raise SystemExit(f"search parameters on unknown types: {unknown}")

    dump(sps, os.path.join(out_dir, "search-parameters.json"))
    dump(types, os.path.join(out_dir, "resource-types.json"))
    dump(comp, os.path.join(out_dir, "compartment-patient.json"))
    dump(elements(pkg, types), os.path.join(out_dir, "elements.json"))
    print(
        f"{len(sps)} search parameters, {len(types)} resource types, "
        f"{len(comp)} types in the patient compartment -> {out_dir}"
    )


if __name__ == "__main__":
    main()
