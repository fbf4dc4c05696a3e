#!/usr/bin/env python3
"""Build the R4 SearchParameter and CompartmentDefinition bundles that Helios FHIR Server
(`hfs`) reads from `data/` in its working directory (or HFS_DATA_DIR).

Source: the npm package hl7.fhir.r4.examples@4.0.1, unpacked (its `package/` folder holds
SearchParameter-*.json and CompartmentDefinition-*.json). Python standard library only.

Usage: helios-data.py PACKAGE_DIR OUT_DATA_DIR
Writes OUT_DATA_DIR/search-parameters-r4.json and OUT_DATA_DIR/compartment-definitions-r4.json,
two Bundles of type `collection`. CompartmentDefinition-example.json (a draft Device example,
not one of the five official compartments) is left out, as in Helios's own shipped bundle.
"""
import glob
import json
import os
import sys


def bundle(bid, resources):
    return {
        "resourceType": "Bundle",
        "id": bid,
        "type": "collection",
        "entry": [
            {"fullUrl": r.get("url") or f"{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }


def load(pattern, rtype, skip=()):
    out = []
    for path in sorted(glob.glob(pattern)):
        if os.path.basename(path) in skip:
            continue
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        if r.get("resourceType") == rtype:
            out.append(r)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pkg, out = sys.argv[1], sys.argv[2]
    sps = load(os.path.join(pkg, "SearchParameter-*.json"), "SearchParameter")
    cds = load(os.path.join(pkg, "CompartmentDefinition-*.json"), "CompartmentDefinition",
               skip=("CompartmentDefinition-example.json",))
    if not sps or not cds:
        sys.exit(f"no SearchParameter or CompartmentDefinition found under {pkg}")
    os.makedirs(out, exist_ok=True)
    for name, b in (("search-parameters-r4.json", bundle("searchParams", sps)),
                    ("compartment-definitions-r4.json", bundle("compartments", cds))):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(b, f, ensure_ascii=False)
    print(f"{out}: {len(sps)} SearchParameter, {len(cds)} CompartmentDefinition")


if __name__ == "__main__":
    main()
