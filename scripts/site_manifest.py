#!/usr/bin/env python3
"""Writes site-manifest.json into the built site: every file the service worker (www/sw.js) keeps for
offline visits, with its sha256, and a version named by them all.

The site's files are everything but the models' own directories (weights.js verifies and caches
those itself; models/index.json, which names them, is a site file) and the host's _headers. The
service worker caches a version only when every file matches, so a visit during a deploy never
caches a mix of two. Usage: site_manifest.py [DIR] (default: trunk's staging directory,
$TRUNK_STAGING_DIR; a trunk post_build hook runs it after strip_wasm_names.py).
"""
import hashlib
import json
import os
import pathlib
import sys

site = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["TRUNK_STAGING_DIR"])
SKIPPED = {"_headers", "sw.js", "site-manifest.json"}


def is_site_file(path):
    relative = path.relative_to(site).as_posix()
    in_a_model = relative.startswith("models/") and relative.count("/") > 1
    return path.is_file() and relative not in SKIPPED and not in_a_model


files = {
    path.relative_to(site).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(site.rglob("*"))
    if is_site_file(path)
}
version = hashlib.sha256("".join(f"{p} {h}\n" for p, h in files.items()).encode()).hexdigest()[:16]
(site / "site-manifest.json").write_text(json.dumps({"version": version, "files": files}, indent=1) + "\n")
print(f"site-manifest.json: {len(files)} files, version {version}")
