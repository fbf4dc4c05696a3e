#!/usr/bin/env bash
# Fetches the official FHIR R4 examples package (hl7.fhir.r4.examples@4.0.1) from the npm registry and
# unpacks it. Idempotent: does nothing if the package is already unpacked.
#
# Usage: scripts/fetch-fhir-package.sh [DEST]
#   DEST defaults to <repo>/.cache/fhir. The unpacked package ends up in DEST/package, whose path is
#   printed on stdout (and only that: diagnostics go to stderr).
set -euo pipefail

PKG="hl7.fhir.r4.examples@4.0.1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/.cache/fhir}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
pkg_dir="$dest/package"
marker="$dest/.unpacked-hl7.fhir.r4.examples-4.0.1"

if [[ -f "$marker" && -d "$pkg_dir" ]]; then
    echo "$pkg_dir"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "error: npm is required to fetch $PKG" >&2; exit 1; }

tmp="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "fetching $PKG into $dest ..." >&2
tarball="$(cd "$tmp" && npm pack --silent "$PKG" | tail -n 1)"
[[ -f "$tmp/$tarball" ]] || { echo "error: npm pack did not produce a tarball" >&2; exit 1; }
mkdir -p "$tmp/unpack"
tar -xzf "$tmp/$tarball" -C "$tmp/unpack"
[[ -d "$tmp/unpack/package" ]] || { echo "error: unexpected tarball layout (no package/)" >&2; exit 1; }

rm -rf "$pkg_dir"
mv "$tmp/unpack/package" "$pkg_dir"
touch "$marker"
echo "unpacked $(find "$pkg_dir" -maxdepth 1 -name '*.json' | wc -l) JSON files" >&2
echo "$pkg_dir"
