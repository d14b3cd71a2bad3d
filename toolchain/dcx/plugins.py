"""Plugins: what registers itself with dcx's registries — methods, backends, targets — through a Python entry-point
group of that name (``dcx.methods``, ``dcx.backends``, ``dcx.targets``; dcx's own are declared in its
``pyproject.toml``). A registry loads its group the first time it is asked, so a package (dcx's, or another
installed beside it) adds a method, a backend or a target by one entry point, and nothing below it imports it."""

from __future__ import annotations

import importlib
import importlib.metadata

_LOADED: dict[str, dict[str, str]] = {}  # group -> entry name -> why it could not load (a missing package)


def load_plugins(group: str) -> dict[str, str]:
    """Import every module the entry points of ``group`` name (once per process); returns, by entry name, why those
    that could not be imported failed (an optional package that is not installed)."""
    if group not in _LOADED:
        failed = _LOADED[group] = {}
        for entry in importlib.metadata.entry_points(group=group):
            try:
                importlib.import_module(entry.module)
            except ModuleNotFoundError as e:
                if not e.name or e.name.split(".")[0] == entry.module.split(".")[0]:
                    raise  # a module of the plugin itself is missing: a bug, not an optional package
                failed[entry.name] = f"needs a package that is not installed ({e.name})"
    return _LOADED[group]
