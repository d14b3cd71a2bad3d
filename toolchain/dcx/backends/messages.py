"""Reading a tool's error text: each backend's ``messages.py`` lists the patterns of its tool's version, and this
is how they are read, so the rest of dcx decides on what a pattern captured, never on prose."""

from __future__ import annotations

import re


def first_capture(patterns: tuple[str, ...], error: Exception) -> str | None:
    """The first group of the first pattern found in ``error``'s text, or None when none is."""
    for pattern in patterns:
        m = re.search(pattern, str(error))
        if m:
            return m.group(1)
    return None
