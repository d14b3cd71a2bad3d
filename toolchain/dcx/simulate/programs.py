"""Device programs as they travel and run in a simulation.

The cloud exports a method's device programs once per simulation (``export_programs``
into ExecuTorch or TFLite artifacts; for the eager reference, the PyTorch program
itself, pickled). A ``ProgramPackage`` is what goes down: the artifact's bytes
and its manifest entry. The device stores it (content-addressed, so identical
bytes sent to many simulated phones are stored once) and loads it in its
runtime. Frozen weights (the mimic M, CoDA's item table) are constants inside
the artifact; trainable weights travel in messages and go in and out through
the runtime's ``set_weights`` / ``get_weights``.

A loaded session is cached per process and shared by every simulated device
of that process: each device sets its own weights before it trains (the
recipes' plain SGD keeps no other state), as one phone would between two rounds. It counts the
steps it runs (``StepCount``): a device's work, which the virtual clock turns
into time with the step time measured on the artifact (``clock.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from dcx.errors import DcxError
from dcx.fileio import os_errors, write_atomic
from dcx.manifest import ManifestEntry, from_dict, read_manifest
from dcx.programs import DeviceProgram
from dcx.backends import formats, get_backend, get_runtime
from dcx.backends.runtime import Session
from dcx.simulate.messages import Message
from dcx.optim import Optimizer, Spec, Stepper

PREFIX = "program."
EAGER = "torch"  # the reference device runtime: the PyTorch program itself


def device_runtimes() -> list[str]:
    """What can run the device programs here: each backend that trains and whose runtime this host has, and eager
    PyTorch."""
    trains = [f for f in formats() if "train" in get_backend(f).kinds and not get_runtime(f).available()]
    return [*trains, EAGER]


def check_runtime(runtime: str) -> None:
    if runtime not in device_runtimes():
        raise DcxError(f"--device-runtime {runtime}: choose one of {', '.join(device_runtimes())}")


@dataclass
class ProgramPackage:
    """One device program as it goes down: the artifact and its manifest entry (JSON)."""

    name: str
    artifact: bytes
    entry: bytes

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"{PREFIX}{self.name}": np.frombuffer(self.artifact, np.uint8),
                f"{PREFIX}{self.name}.entry": np.frombuffer(self.entry, np.uint8)}


def package_programs(programs: Sequence[DeviceProgram], runtime: str, folder: Path,
                     progress=lambda s: None) -> dict[str, ProgramPackage]:
    """Export ``programs`` for ``runtime`` into ``folder`` (an export folder ``dcx verify`` can check) and
    package them; ``torch`` pickles the eager programs instead."""
    check_runtime(runtime)
    if runtime == EAGER:
        packages = {}
        for p in programs:
            buffer = io.BytesIO()
            torch.save(p.module, buffer)
            entry = {"kind": p.kind, "optimizer": dataclasses.asdict(Spec.of(p.optimizer)) if p.optimizer else None}
            packages[p.name] = ProgramPackage(p.name, buffer.getvalue(), json.dumps(entry).encode())
        return packages
    from dcx.export.pipeline import export_programs

    summary = export_programs(programs, folder, runtime, force=True, reference_steps=1, progress=progress)
    if summary.failed:
        raise DcxError(f"--device-runtime {runtime}: exporting {summary.failed[0].program} failed "
                       f"({summary.failed[0].error}); choose another runtime")
    manifest = read_manifest(folder)
    packages = {}
    for p in programs:
        entry = manifest.entry(p.name, runtime)
        with os_errors(folder / entry.file):
            artifact = (folder / entry.file).read_bytes()
        packages[p.name] = ProgramPackage(p.name, artifact, json.dumps(dataclasses.asdict(entry)).encode())
    return packages


# ---------------------------------------------------------------- device side

class EagerSession:
    """The reference runtime: the PyTorch program itself, stepped by its optimizer's ``update``."""

    def __init__(self, module: nn.Module, optimizer: Optimizer | None):
        self.module = module
        self.params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self.stepper = Stepper(optimizer, self.params) if optimizer else None

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.module(*(torch.from_numpy(np.asarray(a)) for a in inputs))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    def train_step(self, *batch: np.ndarray) -> float:
        loss = self.module(*(torch.from_numpy(np.asarray(a)) for a in batch))
        self.stepper.step(self.params, torch.autograd.grad(loss, list(self.params.values())))
        return float(loss.detach())

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: p.detach().numpy().copy() for n, p in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(torch.from_numpy(np.asarray(weights[n])))


class CountedSession:
    """A session that counts its steps (``run``, ``train_step``) by program, for the virtual clock."""

    def __init__(self, name: str, session: Session):
        self.name, self.session = name, session

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        _STEPS[self.name] += 1
        return self.session.run(*inputs)

    def train_step(self, *batch: np.ndarray) -> float:
        _STEPS[self.name] += 1
        return self.session.train_step(*batch)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.session.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.session.set_weights(weights)


_STEPS: Counter[str] = Counter()  # the steps this process's sessions ran, since the last StepCount began


class StepCount:
    """The program steps run inside a ``with`` block, by program name: one device's work in one exchange
    (an engine runs one device step at a time per process)."""

    def __enter__(self) -> "StepCount":
        _STEPS.clear()
        self.steps: dict[str, int] = {}
        return self

    def __exit__(self, *exc) -> None:
        self.steps = dict(_STEPS)


@contextmanager
def not_device_work() -> Iterator[None]:
    """Steps the simulator runs on a device only to measure a baseline there (a phone would not run them): they
    take no time on the virtual clock."""
    saved = Counter(_STEPS)
    try:
        yield
    finally:
        _STEPS.clear()
        _STEPS.update(saved)


@dataclass
class InstalledProgram:
    """A program loaded on a device: its runtime session, and the constants inside the artifact."""

    session: CountedSession
    frozen: dict[str, np.ndarray]  # frozen weights by PyTorch name, read from the artifact itself


_LOADED: dict[tuple[str, str], InstalledProgram] = {}


def install(down: Message, state: Message, store: Path) -> None:
    """Store every program ``down`` carries and note in the device's ``state`` which one it holds."""
    for key, artifact in down.arrays.items():
        if not key.startswith(PREFIX) or key.endswith(".entry"):
            continue
        data = artifact.tobytes()
        digest = hashlib.sha256(data).digest()
        path = store / digest.hex()
        if not path.exists():
            with os_errors(path):
                write_atomic(path.with_suffix(".entry"), down.arrays[f"{key}.entry"].tobytes())
                write_atomic(path, data)
        state.arrays[key] = np.frombuffer(digest, np.uint8)


def holds(state: Message, name: str) -> bool:
    return f"{PREFIX}{name}" in state.arrays


def load(name: str, state: Message, store: Path, runtime: str) -> InstalledProgram:
    """The device's copy of program ``name`` in ``runtime`` (loaded once per process)."""
    if not holds(state, name):
        raise DcxError(f"device has no program {name}: the cloud must send it first")
    sha = state.arrays[f"{PREFIX}{name}"].tobytes().hex()
    if (runtime, sha) not in _LOADED:
        path = store / sha
        _LOADED[(runtime, sha)] = open_program(name, path, json.loads(path.with_suffix(".entry").read_text()),
                                               runtime)
    return _LOADED[(runtime, sha)]


def open_program(name: str, path: Path, entry: dict, runtime: str) -> InstalledProgram:
    """The artifact at ``path`` (its manifest entry ``entry``) loaded in ``runtime``."""
    if runtime == EAGER:
        module = torch.load(path, weights_only=False)
        spec = from_dict(Spec, entry["optimizer"], f"program {name}.optimizer") if entry["optimizer"] else None
        session: Session = EagerSession(module, spec.optimizer() if spec else None)
        frozen = {n: p.detach().numpy() for n, p in module.named_parameters() if not p.requires_grad}
    else:
        manifest_entry = from_dict(ManifestEntry, entry, f"program {name}")
        session = get_runtime(runtime).load(path, manifest_entry)
        frozen = _constants(path, manifest_entry)
    return InstalledProgram(CountedSession(name, session), frozen)


def _constants(path: Path, entry: ManifestEntry) -> dict[str, np.ndarray]:
    """The frozen weights stored verbatim in the artifact, read from the regions its manifest entry names."""
    from dcx.backends.stored import read_region, stored_tensors

    regions = {t.region: t for t in stored_tensors(entry.format, path)}
    out = {}
    for loc in entry.weight_coverage.verbatim:
        if loc.name in entry.frozen and loc.layout == "identity":
            raw = np.frombuffer(read_region(path, regions[loc.region]), np.float32)
            out[loc.name] = raw.reshape(entry.frozen[loc.name])
    return out
