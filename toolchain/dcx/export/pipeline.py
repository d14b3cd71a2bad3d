"""``dcx export``: every device program of the chosen recipes, in every chosen format, plus manifest.json.

Safety rules: an existing output folder is refused unless ``force``; with
``force`` only files listed in its manifest (files dcx wrote) are replaced;
each artifact is written under a temporary name and renamed, so an
interrupted export leaves no half-written artifact; one format failing does
not stop the others.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from dcx.errors import DcxError
from dcx.export import ExportOptions, get_exporter, resolve_formats
from dcx.export.manifest import MANIFEST, SCHEMA, read_manifest, sha256_of, size_of, write_manifest
from dcx.recipes import resolve_recipes


@dataclass
class ExportSummary:
    out: Path
    written: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds_per_format: dict[str, float] = field(default_factory=dict)


def _prepare_out(out: Path, force: bool) -> list[dict]:
    """The manifest entries of a previous dcx export there: the only files we may replace."""
    if out.exists() and not out.is_dir():
        raise DcxError(f"--out {out} is a file: choose a folder path")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DcxError(f"--out {out} exists and is not empty: pass --force to replace what dcx wrote there, "
                           "or choose a new folder")
        try:
            return read_manifest(out)["artifacts"]
        except DcxError:
            return []
    out.mkdir(parents=True, exist_ok=True)
    return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def export(recipe: str, fmt: str, out: Path, *, force: bool = False, seed: int = 0,
           options: ExportOptions | None = None, progress: Callable[[str], None] = lambda s: None) -> ExportSummary:
    options = options or ExportOptions()
    recipes = resolve_recipes(recipe)
    formats = resolve_formats(fmt)
    exporters = {f: get_exporter(f) for f in formats}
    out = Path(out)
    previous = _prepare_out(out, force)
    ours = {e["file"] for e in previous} | {MANIFEST}
    summary = ExportSummary(out)
    jobs = [(f, r, p) for r in recipes for p in r.device_programs(seed) for f in formats]
    redone = {(p.name, f) for f, _, p in jobs}
    # Entries of an earlier export that this one does not redo stay listed (their files stay too).
    kept = [e for e in previous if (e["program"], e["format"]) not in redone and (out / e["file"]).exists()]
    manifest = {"schema": SCHEMA, "dcx": importlib.metadata.version("dcx"), "seed": seed,
                "options": asdict(options), "artifacts": kept, "failures": []}
    for i, (f, recipe_obj, program) in enumerate(jobs, 1):
        exporter = exporters[f]
        reason = exporter.supports(program)
        label = f"[{i}/{len(jobs)}] {f:<10} {program.name:<24}"
        if reason:
            summary.skipped.append({"program": program.name, "format": f, "reason": reason})
            progress(f"{label} skipped: {reason}")
            continue
        name = f"{program.name}{exporter.suffix_for(program)}"
        target = out / name
        if target.exists() and name not in ours:
            failure = {"program": program.name, "format": f,
                       "error": f"{target} exists and was not written by dcx: move it away (dcx never deletes it)"}
            summary.failed.append(failure)
            manifest["failures"].append(failure)
            progress(f"{label} FAILED: {failure['error']}")
            continue
        tmp = out / f".{name}.tmp"
        start = time.perf_counter()
        try:
            _remove(tmp)
            # a fresh program per artifact: exporters may rewrite modules (e.g. enable fused kernels)
            fresh = next(p for p in recipe_obj.device_programs(seed) if p.name == program.name)
            info = exporter.export(fresh, tmp, options)
            _remove(target)
            tmp.rename(target)
        except KeyboardInterrupt:
            _remove(tmp)
            raise
        except Exception as e:  # one format failing must not stop the others
            _remove(tmp)
            failure = {"program": program.name, "format": f, "error": f"{type(e).__name__}: {e}".splitlines()[0],
                       "trace": traceback.format_exc(limit=3)}
            summary.failed.append(failure)
            manifest["failures"].append({k: v for k, v in failure.items() if k != "trace"})
            progress(f"{label} FAILED: {failure['error']}")
            continue
        seconds = time.perf_counter() - start
        summary.seconds_per_format[f] = summary.seconds_per_format.get(f, 0.0) + seconds
        entry = _entry(program, f, target, info, exporter.versions(), seconds)
        manifest["artifacts"].append(entry)
        summary.written.append(entry)
        write_manifest(out, manifest)  # after every artifact: the folder is always consistent
        progress(f"{label} {entry['size_bytes']:>10,} B  {seconds:5.1f}s  {name}")
    write_manifest(out, manifest)
    return summary


def _notes(program, fmt: str, info) -> dict:
    """The program's and the exporter's notes, plus how ICIIA's partitioned projection runs in this format."""
    from dcx.kernels import lowering_note
    from dcx.models.partitioned_linear import PartitionedLinear

    notes = {**program.notes, **info.notes}
    if any(isinstance(m, PartitionedLinear) for m in program.module.modules()):
        fused = "fused_kernels" in notes
        notes.setdefault("partitioned_linear", lowering_note(fmt) if fmt != "executorch" or fused else
                         "ATen bmm + transpose/reshape; pass --fused-kernels for the fused dcx:: op")
    return notes


def _entry(program, fmt: str, path: Path, info, versions: dict, seconds: float) -> dict:
    return {
        "recipe": program.recipe,
        "program": program.name,
        "kind": program.kind,
        "format": fmt,
        "file": path.name,
        "sha256": sha256_of(path),
        "size_bytes": size_of(path),
        "inputs": [s.as_dict() for s in program.input_specs()],
        "outputs": next(iter(info.signatures.values()))["outputs"] if info.signatures else [],
        "signatures": info.signatures,
        "trainable": {n: list(p.shape) for n, p in program.trainable.items()},
        "frozen": {n: list(t.shape) for n, t in program.frozen.items()},
        "optimizer": {"type": "sgd", "lr": program.optimizer.lr} if program.optimizer else None,
        "flops": program.flops(),
        "versions": versions,
        "weights": info.weights,
        "deviations": info.deviations,
        "notes": _notes(program, fmt, info),
        "export_seconds": round(seconds, 3),
    }
