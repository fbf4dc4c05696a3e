#!/usr/bin/env python3
"""Builds crates/directory/data/ from the CI-SIS value set JDV_J01_XdsAuthorSpecialty_CISIS (ANS, via the
TestContenuCDA repository; see ../shared/README.md), used as data:

- professions.tsv: the health professions of the national nomenclature TRE_G15 (`G15_xx` codes of J01);
- specialties.tsv: the specialties of TRE_R38 (ordinal specialties: `SM..` for physicians, `SCD..` for dentists)
  with the profession they belong to.

Run: python3 scripts/gen-directory-data.py [path/to/cisis-value-sets]   (default ../shared/data/cisis-value-sets)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "data", "cisis-value-sets")
OUT = os.path.join(ROOT, "crates", "directory", "data")

text = open(os.path.join(SRC, "JDV_J01_XdsAuthorSpecialty_CISIS.xml"), encoding="utf-8").read()
concepts = re.findall(r'<Concept code="([^"]*)"\s+codeSystem="1\.2\.250\.1\.213\.1\.1\.4\.5"\s+displayName="([^"]*)"', text)
os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "professions.tsv"), "w", encoding="utf-8") as f:
    f.write("# TRE_G15 code\tlabel — from CI-SIS JDV_J01_XdsAuthorSpecialty_CISIS (ANS)\n")
    for code, label in concepts:
        m = re.fullmatch(r"G15_(\d+)", code)
        if m:
            f.write(f"{m.group(1)}\t{label}\n")
with open(os.path.join(OUT, "specialties.tsv"), "w", encoding="utf-8") as f:
    f.write("# TRE_G15 profession\tTRE_R38 specialty\tlabel — from CI-SIS JDV_J01_XdsAuthorSpecialty_CISIS (ANS)\n")
    for code, label in concepts:
        m = re.fullmatch(r"G15_(\d+)/((?:SM|SCD)\d+)", code)
        if m:
            label = re.sub(r"^[^-]+ - ", "", label)
            label = re.sub(r" \((SM|SCD)\)$", "", label)
            f.write(f"{m.group(1)}\t{m.group(2)}\t{label}\n")
print("written to", OUT)
