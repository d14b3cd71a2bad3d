"""Pretrained weights that come inside an installed Python package (they are never committed or downloaded here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dcx.errors import DcxError


def package_file(package: str, relative: str, what: str, install: str) -> Path:
    """The file ``relative`` inside the installed ``package``; a one-line error saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DcxError(f"{what} not found: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise DcxError(f"{path} is missing: {install} again")
    return path
