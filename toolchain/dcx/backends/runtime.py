"""What a backend's host runtime provides: load an artifact in its real runtime, run it, and train it.

Each backend's ``runtime.py`` implements ``Runtime``; a ``Session`` speaks numpy so verify, profile and
simulate treat every backend alike.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from dcx.errors import DcxError
from dcx.manifest import ManifestEntry
from dcx.reference import ProgramReference


class Session(Protocol):
    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Inference (a training artifact runs its inference signature / forward)."""

    def train_step(self, *inputs_and_targets: np.ndarray) -> float:
        """One on-device step of the program's optimizer on a batch; returns the loss before the update.

        Raises NotImplementedError where the host cannot drive the runtime's training (verify reports 'not run').
        """

    def get_weights(self) -> dict[str, np.ndarray]:
        """Trainable weights keyed by the PyTorch parameter names."""

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Replace trainable weights (keyed by PyTorch names), e.g. with the cloud's fused model."""

    def get_state(self) -> dict[str, np.ndarray]:
        """The program's state after the last step (``ManifestEntry.state``: batch-norm running statistics)."""

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's slots after the last step, keyed ``"<param>/<slot>"`` (empty for plain SGD)."""


class Check(NamedTuple):
    """One row of a verification report."""

    check: str
    ok: bool
    error: float | None  # the measured error, where the check measures one
    detail: str = ""


class Runtime(Protocol):
    format: str

    def static_checks(self, path: Path, entry: ManifestEntry) -> list[Check]:
        """Checks that need no execution (e.g. builtin-ops-only, Core ML's updatable-model rules)."""

    def available(self) -> str | None:
        """None when this host can run artifacts; otherwise why not (e.g. Core ML needs macOS)."""

    def load(self, path: Path, entry: ManifestEntry) -> Session:
        """Load the artifact at ``path`` described by its manifest ``entry``."""

    def version(self) -> str: ...


class InstalledPackageRuntime:
    """The defaults of a runtime that runs wherever its Python ``package`` is installed (a backend's extra)."""

    package: str

    def available(self) -> str | None:
        return None

    def version(self) -> str:
        return importlib.metadata.version(self.package)


def relative_error(a: float, b: float) -> float:
    """|a - b| relative to max(1, |b|): how verify compares losses."""
    return abs(a - b) / max(1.0, abs(b))


@dataclass
class TrainingRun:
    """An artifact trained on the reference batches, against eager PyTorch."""

    losses: list[float]
    loss_error: float  # max per-step loss error, relative to max(1, |loss|)
    weights: dict[str, np.ndarray]  # the artifact's trainable weights after the steps
    weight_errors: dict[str, float]  # per parameter: max |artifact - PyTorch| after the steps
    state_errors: dict[str, float]  # per state tensor: max |artifact - PyTorch| after the steps, relative
    optimizer_errors: dict[str, float]  # "step 1 <param>/<slot>" and "final ...": max |artifact - torch.optim|

    @property
    def weight_error(self) -> float:
        return max(self.weight_errors.values(), default=0.0)


def train_on_reference(session, reference: ProgramReference, not_exposed: set[str] = frozenset()) -> TrainingRun:
    """Every reference batch as one training step of ``session``.

    ``not_exposed``: trainable weights the artifact documents it cannot hold (compared when it does expose them)."""
    losses, optimizer_errors = [], {}
    for s in range(reference.steps):
        losses.append(session.train_step(*reference.batch_arrays(s)))
        if s == 0 and reference.optimizer_first:
            optimizer_errors.update(_errors(session.get_optimizer_state(), reference.optimizer_first, "step 1 "))
    weights = session.get_weights()
    missing = set(reference.final) - set(weights) - set(not_exposed)
    if missing:
        raise DcxError(f"{reference.program}: artifact exposes no weights for {sorted(missing)}")
    errors = {n: float(np.max(np.abs(weights[n] - w))) for n, w in reference.final.items() if n in weights}
    state_errors = _errors(session.get_state(), reference.state_final, "") if reference.state_final else {}
    if reference.optimizer_final:
        optimizer_errors.update(_errors(session.get_optimizer_state(), reference.optimizer_final, "final "))
    return TrainingRun(losses, max(relative_error(a, float(b)) for a, b in zip(losses, reference.losses)), weights,
                       errors, state_errors, optimizer_errors)


def _errors(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> dict[str, float]:
    """Per tensor, max |got - expected| relative to max(1, max |expected|); a tensor the artifact does not
    expose is infinitely wrong."""
    return {f"{label}{n}": float(np.max(np.abs(got[n] - e))) / max(1.0, float(np.max(np.abs(e)))) if n in got
            else float("inf") for n, e in expected.items()}
