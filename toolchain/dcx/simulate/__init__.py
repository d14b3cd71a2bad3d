"""``dcx simulate``: the device-cloud collaboration of each method as a system.

A cloud role and a device role per method (``dcccl.py``, ``iciia.py``,
``coda.py``) exchange typed messages (``messages.py``) whose serialized size
is counted per device, per direction and per round; devices run the exported
artifacts through the host runtimes (``programs.py``); an engine moves the
messages, in process or on Flower's simulation engine (``engines/``); a seeded
plan makes devices vanish or slow (``faults.py``), and a virtual clock of
measured step times holds each exchange to a deadline (``clock.py``);
``report.py`` writes tables, plots and the README section; ``command.py`` is
the CLI shell and ``bench.py`` the engines' benchmark.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``dcx.simulate.simulate``, imported on first use (it brings torch; the CLI's --help must stay fast)."""
    if name == "simulate":
        from dcx.simulate.run import simulate

        return simulate
    raise AttributeError(f"module 'dcx.simulate' has no attribute {name!r}")


__all__ = ["simulate"]
