"""``dcx readme``: the README's measured sections, copied from the files the benchmark commands write.

A section is marked in README.md as ``<!-- dcx:NAME -->`` ... ``<!-- /dcx:NAME -->``; its body is
the body of ``SECTIONS[NAME]``, a Markdown file a command wrote (the command is named in the
file's first line). No number in those sections is typed by hand: rerun the command, then
``dcx readme``; ``dcx readme --check`` fails when the README and the files disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

from dcx.errors import DcxError
from dcx.fileio import os_errors, write_atomic

REPO = Path(__file__).resolve().parents[2]
SECTIONS = {
    "runtimes": "benchmarks/runtimes.md",
    "runtimes-mobile": "benchmarks/runtimes_mnv2.md",
    "native-runner": "benchmarks/native.md",
    "iciia-mnv2": "benchmarks/iciia_mnv2.md",
    "simulate": "benchmarks/simulate/README.md",
}


def _body(path: Path) -> str:
    """A generated file without its title line (the README section has its own heading)."""
    with os_errors(path):
        lines = path.read_text().splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()


def sync(readme: Path = REPO / "README.md", root: Path = REPO, check: bool = False) -> list[str]:
    """Copy every section's file into the README (or, with ``check``, only compare); returns the sections that
    differed. A section whose file does not exist yet is left as it is and reported."""
    with os_errors(readme):
        text = readme.read_text()
    changed = []
    for name, rel in SECTIONS.items():
        pattern = re.compile(rf"(<!-- dcx:{name} -->\n)(.*?)(<!-- /dcx:{name} -->)", re.S)
        match = pattern.search(text)
        if match is None:
            raise DcxError(f"{readme}: no section <!-- dcx:{name} --> ... <!-- /dcx:{name} -->: add the markers")
        if not (root / rel).is_file():
            changed.append(f"{name} ({rel} not written yet: run the command that writes it)")
            continue
        body = _body(root / rel)
        if match.group(2).strip() != body:
            changed.append(name)
            text = text[: match.start(2)] + body + "\n" + text[match.end(2):]
    if changed and not check:
        with os_errors(readme):
            write_atomic(readme, text)
    return changed
