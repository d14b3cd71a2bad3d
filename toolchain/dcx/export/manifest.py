"""manifest.json: what ``dcx export`` wrote, and what ``dcx verify`` checks against."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dcx.errors import DcxError

MANIFEST = "manifest.json"
SCHEMA = 1


def sha256_of(path: Path) -> str:
    """Of a file, or of a bundle folder (relative names and contents, in sorted order)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_of(f).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(out: Path, manifest: dict) -> None:
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not out.is_dir():
        raise DcxError(f"{out} is not a directory: pass the folder that `dcx export --out` wrote")
    if not path.exists():
        raise DcxError(f"{path} is missing: run `dcx export --out {out}` first")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DcxError(f"{path} does not parse as JSON ({e}): re-run `dcx export --force`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise DcxError(f"{path}: field 'artifacts' is missing or not a list: re-run `dcx export --force`")
    if manifest.get("schema") != SCHEMA:
        raise DcxError(f"{path}: field 'schema' is {manifest.get('schema')!r}, expected {SCHEMA}: re-export")
    for i, entry in enumerate(manifest["artifacts"]):
        missing = [k for k in ("program", "format", "file", "sha256", "kind") if k not in entry]
        if missing:
            raise DcxError(f"{path}: artifacts[{i}] lacks field(s) {', '.join(missing)}: re-export")
    return manifest
