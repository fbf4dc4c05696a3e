#!/usr/bin/env python3
"""DocumentReferences for `socle import` (NDJSON on stdout), shaped like the one an ITI-65 feed stored.

    dmp-bulk.py TEMPLATE COUNT PATIENTS [START]

TEMPLATE is a searchset Bundle whose first entry is a DocumentReference the server stored from a feed
(`GET /fhir/DocumentReference?patient=dmp-0&_count=1`); each line copies it with its own id
(`bulk-<n>`), unique id, document type (five LOINC codes in turn), date, attachment (url, SHA-1, size) and
patient: `dmp-1` … `dmp-<PATIENTS-1>` in turn — `dmp-0` keeps only what was fed to it. Same START, same
lines: a run can be continued where it stopped.
"""
import base64
import json
import random
import sys


def main() -> None:
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    tpl = json.load(open(sys.argv[1], encoding="utf-8"))["entry"][0]["resource"]
    count, patients = int(sys.argv[2]), int(sys.argv[3])
    start = int(sys.argv[4]) if len(sys.argv) == 5 else 0
    if patients < 2:
        sys.exit("PATIENTS: at least 2 (dmp-0 is not fed here)")
    tpl.pop("meta", None)
    attachment, fmt = tpl["content"][0]["attachment"], tpl["content"][0].get("format")
    types = [
        ("11488-4", "Compte rendu de consultation"),
        ("34133-9", "Synthèse"),
        ("18842-5", "Lettre de sortie"),
        ("11502-2", "CR d'examens biologiques"),
        ("18748-4", "CR d'imagerie médicale"),
    ]
    rnd = random.Random(start)
    out = sys.stdout
    for i in range(start, start + count):
        code, display = types[i % len(types)]
        doc = dict(tpl)
        doc["id"] = f"bulk-{i}"
        doc["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1^bulk.{i}"}
        doc["type"] = {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]}
        doc["subject"] = {"reference": f"Patient/dmp-{1 + i % (patients - 1)}"}
        doc["date"] = "20%02d-%02d-%02dT%02d:%02d:00+01:00" % (
            16 + (i // 7) % 10, 1 + i % 12, 1 + i % 28, i % 24, i % 60)
        att = dict(attachment)
        att.update(url=f"Binary/bulk-{i}", size=1000 + i % 100000, title=display,
                   hash=base64.b64encode(rnd.getrandbits(160).to_bytes(20, "big")).decode())
        doc["content"] = [{"attachment": att, **({"format": fmt} if fmt else {})}]
        out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")


if __name__ == "__main__":
    main()
