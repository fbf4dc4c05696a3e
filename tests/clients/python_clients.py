"""Real FHIR clients against a running Socle: Python `requests` and `fhirpy` (SyncFHIRClient).

Usage: python3 python_clients.py BASE_URL   (exit code 0 when every check passes)
Run by crates/server/tests/python_clients.rs, which starts the server.
"""
import sys
import uuid

import requests
from fhirpy import SyncFHIRClient

BASE = sys.argv[1].rstrip("/")
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print(f"ÉCHEC : {what}", file=sys.stderr)
        sys.exit(1)


# --- requests: create, conditional create, read with ETag, transaction, paging by next links
family = "Client" + uuid.uuid4().hex[:8]
r = requests.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": family, "given": ["Anaïs"]}],
                                          "birthDate": "1984-07-14"}, headers=JSON, timeout=30)
check(r.status_code == 201, f"création : {r.status_code} {r.text}")
pid = r.json()["id"]
check(r.headers["ETag"] == 'W/"1"', "ETag")
check(r.headers["Location"].startswith(f"{BASE}/Patient/{pid}/_history/1"), "Location")

r = requests.get(f"{BASE}/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}, timeout=30)
check(r.status_code == 304, f"If-None-Match : {r.status_code}")

bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
    {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Observation"},
     "resource": {"resourceType": "Observation", "status": "final",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                  "subject": {"reference": f"Patient/{pid}"},
                  "valueQuantity": {"value": 60 + i, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
                  "effectiveDateTime": f"2024-01-{i + 1:02d}"}} for i in range(25)]}
r = requests.post(BASE, json=bundle, headers=JSON, timeout=30)
check(r.status_code == 200 and r.json()["type"] == "transaction-response", f"transaction : {r.status_code}")

seen, url = [], f"{BASE}/Observation?subject=Patient/{pid}&_count=10"
while url:
    page = requests.get(url, timeout=30).json()
    seen += [e["resource"]["id"] for e in page.get("entry", []) if e["search"]["mode"] == "match"]
    url = next((l["url"] for l in page["link"] if l["relation"] == "next"), None)
check(len(seen) == 25 and len(set(seen)) == 25, f"pagination : {len(seen)} vus")

r = requests.get(f"{BASE}/Observation", params={"value-quantity": "gt80|http://unitsofmeasure.org|kg",
                                                   "subject": f"Patient/{pid}"}, timeout=30)
check(len(r.json().get("entry", [])) == 4, "recherche par quantité")

r = requests.post(f"{BASE}/Patient", data="{pas du json", headers=JSON, timeout=30)
check(r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome", "JSON invalide → 400")

# --- fhirpy: search, chaining, fetch, save
client = SyncFHIRClient(BASE, extra_headers={"Accept": "application/fhir+json"})
patients = client.resources("Patient").search(family=family).fetch()
check(len(patients) == 1 and patients[0]["id"] == pid, "fhirpy : recherche par nom")
obs = client.resources("Observation").search(**{"subject:Patient.family": family}).sort("-date").limit(5).fetch()
check(len(obs) == 5 and obs[0]["effectiveDateTime"] == "2024-01-25", "fhirpy : chaînage + tri")
total = client.resources("Observation").search(subject=f"Patient/{pid}").count()
check(total == 25, f"fhirpy : count = {total}")
p = client.resource("Patient", name=[{"family": family + "bis"}], gender="female")
p.save()
check(p["id"] and p["meta"]["versionId"] == "1", "fhirpy : save")
p["gender"] = "other"
p.save()
check(client.reference("Patient", p["id"]).to_resource()["gender"] == "other", "fhirpy : mise à jour")

print(f"clients Python : {checks} vérifications réussies")
