"""The aarch64 bundle: the native runner, every shared library it needs, and glibc's loader, in one folder.

An Android phone's bionic libc cannot start a glibc program, but glibc's own
loader can, given the folder that holds the libraries:
``./ld-linux-aarch64.so.1 --library-path . ./dcx_runner ...``. The same folder
runs under ``qemu-aarch64`` on the host with no ``-L``. ``dcx build aarch64``
(``build.py`` beside this file) assembles it into ``native_build_dir()/bundle``, and so does
``runtimes/native/build.sh`` by running this file; targets push it.
Kernel libraries are not part of it: they travel with the artifacts that need
them (``requires.kernel_libraries`` in the manifest), and need nothing the
runner does not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LOADER = "ld-linux-aarch64.so.1"
RUNNER = "dcx_runner"
MANIFEST = "bundle.json"
READELF = "aarch64-linux-gnu-readelf"


def launch_command(program: str = RUNNER) -> list[str]:
    """argv prefix that starts ``program`` of a bundle from inside the bundle's folder."""
    return [f"./{LOADER}", "--library-path", ".", f"./{program}"]


def needed_libraries(elf: Path) -> list[str]:
    """The DT_NEEDED sonames of an aarch64 ELF file."""
    out = subprocess.run([READELF, "-d", str(elf)], check=True, capture_output=True, text=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


def resolve_closure(roots: list[Path], search: list[Path]) -> dict[str, Path]:
    """Every library the roots need, transitively: soname -> file found first along ``search``."""
    found: dict[str, Path] = {}
    pending = list(roots)
    while pending:
        for soname in needed_libraries(pending.pop()):
            if soname in found:
                continue
            hit = next((d / soname for d in search if (d / soname).exists()), None)
            if hit is None:
                raise FileNotFoundError(f"{soname} (needed by the runner) is in none of {[str(d) for d in search]}")
            found[soname] = hit
            pending.append(hit)
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(out: Path, files: dict[str, Path]) -> dict | None:
    """The bundle's manifest when it already holds exactly these files, byte for byte."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    same = set(manifest.get("files", {})) == set(files) and all(
        manifest["files"][n]["sha256"] == _sha256(src) for n, src in files.items())
    return manifest if same else None


def assemble(runner: Path, out: Path, search: list[Path]) -> dict:
    """Build the bundle in a temporary sibling folder, then swap it in; returns its manifest.

    A bundle that already holds the same files is left alone, so a no-op build never swaps the
    folder under a target that is copying it."""
    loader = next((d / LOADER for d in search if (d / LOADER).exists()), None)
    if loader is None:
        raise FileNotFoundError(f"{LOADER} is in none of {[str(d) for d in search]}: install libc6-arm64-cross")
    files = {RUNNER: runner, LOADER: loader, **resolve_closure([runner], search)}
    existing = _unchanged(out, files)
    if existing is not None:
        return existing
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src.resolve(), tmp / name)  # the file itself, under the name the loader asks for
        (tmp / name).chmod(0o755)
    manifest = {"runner": RUNNER, "loader": LOADER,
                "files": {n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in sorted(files)}}
    manifest["bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def read_manifest(bundle: Path) -> dict:
    """The manifest of a built bundle; raises DcxError naming the folder and the fix if there is none."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        from dcx.errors import DcxError
        from dcx.kernels.library import CHECKOUT

        fix = "bash runtimes/native/build.sh` (or `dcx build aarch64" if CHECKOUT else "dcx build aarch64"
        raise DcxError(f"{bundle}: no aarch64 runner bundle there: run `{fix}`")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python android_harness/bundle.py --runner R --out DIR --search D...``: what runtimes/native/build.sh runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", type=Path, required=True, help="the aarch64 dcx_runner")
    parser.add_argument("--out", type=Path, required=True, help="the bundle folder (replaced)")
    parser.add_argument("--search", type=Path, action="append", required=True,
                        help="folders to find libraries and the loader in, in order")
    args = parser.parse_args(argv)
    try:
        manifest = assemble(args.runner, args.out, args.search)
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        print(f"bundle.py: {e}", file=sys.stderr)
        return 1
    print(f"bundle.py: {len(manifest['files'])} files, {manifest['bytes'] / 2**20:.1f} MiB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
