"""``dcx export``: device programs -> artifacts in every chosen format + references + ``manifest.json``.

``export_programs`` is the one path: the Python API calls it with a user's
programs, ``export_recipe`` with a recipe's (trained from a checkpoint, or
initialised from the seed).

Safety rules: an existing output folder is refused unless ``force``; with
``force`` only files listed in its manifest (files dcx wrote) are replaced;
every artifact and reference is written under a temporary name and renamed,
so an interrupted export leaves no half-written file and the manifest always
describes what is on disk; one format failing (an op it cannot take, say)
does not stop the others; an OS error (no space, no permission) stops the
export with one line naming the path, keeping what was finished.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dcx.backends import get_backend, resolve_formats
from dcx.errors import DcxError, StorageError
from dcx.export.weight_locations import WeightUse, weight_coverage, weight_use
from dcx.fileio import check_writable_folder, os_errors, remove, temporary_sibling
from dcx.manifest import (MANIFEST, MANIFEST_SCHEMA, ActivationBytes, ExportFailure, Flops, Manifest, ManifestEntry,
                          OptimizerSpec, ParameterCount, Provenance, ReferenceInfo, read_manifest, sha256_of, size_of,
                          write_manifest)
from dcx.programs import DeviceProgram
from dcx.reference import TRAIN_STEPS, ProgramReference, build_reference, reference_file
from dcx.progress import Progress, silent



@dataclass
class ExportSummary:
    out: Path
    written: list[ManifestEntry] = field(default_factory=list)
    failed: list[ExportFailure] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds_per_format: dict[str, float] = field(default_factory=dict)


def _previous_manifest(out: Path, force: bool) -> Manifest | None:
    """The manifest of an earlier dcx export in ``out`` (its files are the only ones dcx may replace)."""
    if out.exists() and not out.is_dir():
        raise DcxError(f"--out {out} is a file: choose a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DcxError(f"--out {out} exists and is not empty: pass --force to replace what dcx wrote there, "
                           "or choose a new folder")
        try:
            return read_manifest(out)
        except DcxError:
            return None
    check_writable_folder(out)  # fail now, with one line, if the folder cannot be written
    return None


def _write_file(out: Path, name: str, ours: set[str], write: Callable[[Path], Any]) -> Any:
    """Write ``out/name`` through a temporary name; a file there that dcx did not write is never replaced."""
    target = out / name
    if (target.exists() or target.is_symlink()) and name not in ours:
        raise DcxError(f"{target} exists and was not written by dcx: move it away (dcx never deletes it)")
    tmp = temporary_sibling(target)
    try:
        with os_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            remove(tmp)
            result = write(tmp)
            remove(target)
            tmp.rename(target)
    except BaseException:
        remove(tmp)
        raise
    return result


def export_programs(programs: Sequence[DeviceProgram], out: Path, formats: str | Sequence[str] = "all", *,
                    force: bool = False, options: Mapping[str, Any] | None = None,
                    provenance: Provenance | None = None, reference_seed: int = 0,
                    reference_steps: int = TRAIN_STEPS, progress: Progress = silent) -> ExportSummary:
    """Export ``programs`` to every format in ``formats`` ("all", a name, or a list) into the folder ``out``.

    Training programs' references hold ``reference_steps`` real-data batches (verify trains that many steps).
    ``options``: export options by format (each backend's own type, e.g. ``{"executorch": ExecuTorchOptions(...)}``);
    a format not named gets its backend's defaults; options of a format not exported are not used."""
    if reference_steps < 1:
        raise DcxError(f"--reference-steps {reference_steps}: verify needs at least one training step")
    provenance = provenance or Provenance("user")
    fmts = resolve_formats(formats) if isinstance(formats, str) else [f for x in formats for f in resolve_formats(x)]
    names = [p.name for p in programs]
    if len(set(names)) != len(names):
        raise DcxError(f"program names must be unique, got {names}")
    backends = {f: get_backend(f) for f in fmts}
    chosen = {f: (options or {}).get(f, b.default_options()) for f, b in backends.items()}
    out = Path(out)
    previous = _previous_manifest(out, force)
    ours = {MANIFEST} | ({n for e in previous.artifacts for n in (e.file, e.reference.file)} | set(previous.references)
                         if previous else set())
    redone = {(p.name, f) for p in programs for f in fmts}
    # Entries of an earlier export that this one does not redo stay listed (their files stay too).
    kept = [e for e in previous.artifacts if (e.program, e.format) not in redone and (out / e.file).exists()] \
        if previous else []
    manifest = Manifest(MANIFEST_SCHEMA, importlib.metadata.version("dcx"), kept,
                        references=sorted({e.reference.file for e in kept}))
    summary = ExportSummary(out)
    jobs = [(p, f) for p in programs for f in fmts]
    references: dict[str, tuple[ProgramReference, ReferenceInfo]] = {}
    uses: dict[str, WeightUse] = {}
    for i, (program, fmt) in enumerate(jobs, 1):
        exporter = backends[fmt].exporter
        label = f"[{i}/{len(jobs)}] {fmt:<10} {program.name:<26}"
        kinds = backends[fmt].kinds
        reason = exporter.supports(program) if program.kind in kinds else \
            f"{fmt} artifacts take {' and '.join(kinds)} programs only in dcx"
        if reason:
            summary.skipped.append({"program": program.name, "format": fmt, "reason": reason})
            progress(f"{label} skipped: {reason}")
            continue
        if program.name not in references:
            references[program.name] = _write_reference(out, program, ours, reference_seed, reference_steps)
            uses[program.name] = weight_use(program)
            manifest.artifacts = _rebind_kept(manifest.artifacts, references[program.name][1], progress)
            manifest.references = sorted({*manifest.references, references[program.name][1].file})
            with os_errors(out / MANIFEST):
                write_manifest(out, manifest)
        reference, ref_info = references[program.name]
        name = f"{program.name}{exporter.suffix_for(program)}"
        start = time.perf_counter()
        try:
            info = _write_file(out, name, ours, lambda tmp: exporter.export(program.copy(), tmp, chosen[fmt], reference))
        except (KeyboardInterrupt, DcxError) as e:
            if isinstance(e, (KeyboardInterrupt, StorageError)):
                write_manifest(out, manifest)
                raise
            _fail(summary, manifest, program, fmt, str(e), getattr(e, "op", None), progress, label)
            continue
        except Exception as e:  # one format failing must not stop the others
            _fail(summary, manifest, program, fmt, _first_line(e), None, progress, label,
                  traceback.format_exc(limit=3))
            continue
        seconds = time.perf_counter() - start
        summary.seconds_per_format[fmt] = summary.seconds_per_format.get(fmt, 0.0) + seconds
        entry = _entry(program, fmt, out / name, info, exporter.versions(), seconds, provenance, ref_info, reference,
                       uses[program.name])
        manifest.artifacts = [e for e in manifest.artifacts if (e.program, e.format) != (program.name, fmt)]
        manifest.artifacts.append(entry)
        summary.written.append(entry)
        with os_errors(out / MANIFEST):
            write_manifest(out, manifest)  # after every artifact: the folder is always consistent
        progress(f"{label} {entry.size_bytes:>12,} B  {seconds:5.1f}s  {name}")
    with os_errors(out / MANIFEST):
        write_manifest(out, manifest)
    return summary


def _rebind_kept(entries: list[ManifestEntry], info: ReferenceInfo, progress: Progress) -> list[ManifestEntry]:
    """Entries kept from an earlier export whose reference was just written again: the same program (every tensor
    and the metadata as they recorded) points at the new file; another program's artifacts no longer match it
    and leave the manifest."""
    kept = []
    for e in entries:
        if e.reference.file != info.file:
            kept.append(e)
        elif (e.reference.tensors, e.reference.metadata_sha256) == (info.tensors, info.metadata_sha256):
            kept.append(dataclasses.replace(e, reference=info))
        else:
            progress(f"{e.file}: exported from another version of {e.program}; no longer listed (re-export it)")
    return kept


def _fail(summary: ExportSummary, manifest: Manifest, program: DeviceProgram, fmt: str, error: str, op: str | None,
          progress: Progress, label: str, trace: str | None = None) -> None:
    failure = ExportFailure(program.name, fmt, error, op)
    summary.failed.append(failure)
    manifest.failures.append(failure)
    progress(f"{label} FAILED: {error}")
    if trace:
        progress(trace.rstrip())


def _write_reference(out: Path, program: DeviceProgram, ours: set[str], seed: int, steps: int
                     ) -> tuple[ProgramReference, ReferenceInfo]:
    reference = build_reference(program, steps=steps, seed=seed)
    rel = reference_file(program.name)
    _write_file(out, rel, ours, reference.save)
    ours.add(rel)
    return reference, ReferenceInfo(rel, sha256_of(out / rel), reference.steps, *reference.digests())


def _entry(program: DeviceProgram, fmt: str, path: Path, info, versions: dict, seconds: float,
           provenance: Provenance, ref_info: ReferenceInfo, reference: ProgramReference, use: WeightUse
           ) -> ManifestEntry:
    flops = program.flops()
    return ManifestEntry(
        program=program.name, recipe=program.recipe, kind=program.kind, format=fmt, file=path.name,
        sha256=sha256_of(path), size_bytes=size_of(path), inputs=program.input_specs(),
        outputs=next(iter(info.signatures.values())).outputs if info.signatures else [],
        signatures=info.signatures,
        trainable={n: list(p.shape) for n, p in program.trainable.items()},
        frozen={n: list(t.shape) for n, t in program.frozen.items()},
        state={n: list(t.shape) for n, t in program.state.items()}, norm_modes=program.norm_modes,
        optimizer=OptimizerSpec.of(program.optimizer) if program.optimizer else None,
        flops=Flops(flops["forward"], flops.get("backward")), parameters=ParameterCount(**program.parameter_count()),
        activation_bytes=ActivationBytes(**program.activation_bytes()), weights=info.weights,
        weight_coverage=weight_coverage(fmt, path, reference.weights(), use), provenance=provenance,
        requires=info.requires, passes=info.passes, deviations=info.deviations, reference=ref_info,
        versions=versions, export_seconds=round(seconds, 3), notes={**program.notes, **info.notes})


def _first_line(e: Exception) -> str:
    """``Type: message`` on one line: the message's first non-empty line (some start with a newline)."""
    line = next((line for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {line}" if line else type(e).__name__
