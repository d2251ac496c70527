"""A dump's sha256, the same on the server and on the controller (after a download):
for a file, its own; for a directory-format dump, the sha256 of its sorted
"name sha256" lines, with each file's sha256 kept to name a damaged one."""
from __future__ import annotations

import hashlib
import os


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(path: str) -> tuple[str, dict[str, str]]:
    """(the dump's sha256, each file's sha256 for a directory dump, else {})."""
    if not os.path.isdir(path):
        return file_sha256(path), {}
    files = {name: file_sha256(os.path.join(path, name)) for name in sorted(os.listdir(path))}
    listing = "".join(f"{name} {digest}\n" for name, digest in files.items())
    return hashlib.sha256(listing.encode()).hexdigest(), files
