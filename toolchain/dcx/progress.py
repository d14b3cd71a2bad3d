"""How a long-running step reports what it is doing: one line at a time, to a callable the caller chooses (the CLI
echoes to stderr; tests and the API stay silent)."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str], None]


def silent(line: str) -> None:
    """The default ``Progress``: report nothing."""
