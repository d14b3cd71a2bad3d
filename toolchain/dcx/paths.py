"""Where the checkout is: the one place the toolchain finds the repository root (benchmark files, the README, git
for stamps, the build folders of a development checkout)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # toolchain/dcx/paths.py -> the repository root
