"""Where the checkout is: the one place the toolchain finds the repository root (benchmark files, the README, git
for stamps, the build folders of a development checkout). The kernel layer, which may import nothing above it,
finds it first (``dcx.kernels.library``); the toolchain takes it from there."""

from __future__ import annotations

from dcx.kernels.library import REPO_ROOT

__all__ = ["REPO_ROOT"]
