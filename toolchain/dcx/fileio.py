"""Writing what dcx produces without ever leaving it half-written, and OS errors as one-line user errors.

Every file is written under a temporary name in the same folder and renamed
(``write_atomic``); every output folder is built under a temporary sibling
name and renamed into place (``replace_folder_atomically``). An OS error
(permission denied, read-only file system, disk full, a file where a folder
should be) becomes a ``DcxError`` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from dcx.errors import DcxError, StorageError

T = TypeVar("T")

_FIXES = {
    errno.ENOSPC: "free some space or choose another folder",
    errno.EDQUOT: "free some space or choose another folder",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
    errno.EEXIST: "a file stands where a folder is needed: choose another path",
    errno.ENOENT: "the path does not exist: check it",
}


def os_error(e: OSError, path: Path | str, flag: str = "") -> StorageError:
    """A one-line ``StorageError`` for an OS error on ``path`` (``flag``: the option that named it, if any)."""
    where = f"{flag} {path}" if flag else str(path)
    reason = e.strerror or type(e).__name__
    return StorageError(f"{where}: {reason}; {_FIXES.get(e.errno, 'check the path and try again')}")


@contextlib.contextmanager
def os_errors(path: Path | str, flag: str = "") -> Iterator[None]:
    """Turn OS errors raised inside the block into one-line ``DcxError``s naming ``path``."""
    try:
        yield
    except OSError as e:
        raise os_error(e, getattr(e, "filename", None) or path, flag) from None


def remove(path: Path) -> None:
    """Remove a file, link or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def check_replaceable(out: Path, *, force: bool, marker: str, what: str, flag: str = "--out") -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder without ``force`` or without ``marker`` in it."""
    if out.exists() and not out.is_dir():
        raise DcxError(f"{flag} {out} is a file: choose a folder path")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and not force:
        raise DcxError(f"{flag} {out} exists and is not empty: pass --force to replace the {what} there, "
                       "or choose a new folder")
    if occupied and not (out / marker).exists():
        raise DcxError(f"{flag} {out} is not a dcx {what} (no {marker}) and dcx never deletes what it did not "
                       "write: choose a new folder")


def check_writable_folder(folder: Path, flag: str = "--out") -> None:
    """Create ``folder`` if needed and prove it takes a file, before any long work that will write there."""
    with os_errors(folder, flag):
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(folder / "probe")
        probe.write_text("")
        probe.unlink()


def replace_folder_atomically(out: Path, fill: Callable[[Path], T], *, force: bool, marker: str, what: str,
                              flag: str = "--out") -> T:
    """Build a folder with ``fill(tmp)`` under a temporary sibling name, then put it at ``out``.

    An existing non-empty ``out`` is replaced only with ``force`` and only if it holds ``marker`` (a folder
    dcx wrote); the old folder is removed only after the new one is in place.
    """
    out = Path(out)
    check_replaceable(out, force=force, marker=marker, what=what, flag=flag)
    tmp, backup = temporary_sibling(out), out.with_name(f".{out.name}.old-{os.getpid()}")
    with os_errors(out, flag):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove(tmp)
        tmp.mkdir()
        try:
            result = fill(tmp)
            if out.exists():
                os.replace(out, backup)
            os.replace(tmp, out)
        except BaseException:
            remove(tmp)
            if backup.exists() and not out.exists():
                os.replace(backup, out)
            raise
        remove(backup)
    return result
