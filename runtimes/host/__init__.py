"""Host runtimes: load an artifact in its real runtime, run it, and train it.

One module per backend, found by format name. A ``Session`` speaks numpy so
verify, profile and simulate treat every backend alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from dcx.backends import import_backend
from dcx.manifest import ManifestEntry


class Session(Protocol):
    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Inference (a training artifact runs its inference signature / forward)."""

    def train_step(self, *inputs_and_targets: np.ndarray) -> float:
        """One on-device SGD step on a batch; returns the loss before the update.

        Raises NotImplementedError where the host cannot drive the runtime's training (verify reports 'skipped').
        """

    def get_weights(self) -> dict[str, np.ndarray]:
        """Trainable weights keyed by the PyTorch parameter names."""

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Replace trainable weights (keyed by PyTorch names), e.g. with the cloud's fused model."""


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


def get_runtime(fmt: str) -> Runtime:
    """The module ``dcx.runtimes.<fmt>`` defines ``RUNTIME``."""
    return import_backend("dcx.runtimes", fmt).RUNTIME
