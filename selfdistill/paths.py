"""Where the offline benchmark copies live by default (``../shared/data`` beside the checkout).

Override with the ``SELFDISTILL_DATA_DIR`` environment variable or pass explicit paths to the loaders.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Within: a temporary file beside ``path`` to write; it becomes ``path`` by one rename when the block ends, so a
    reader (or a run killed half-way) sees the old file or the new one, never a half-written one. An error in the
    block leaves ``path`` as it was. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def default_data_dir() -> Path:
    """``$SELFDISTILL_DATA_DIR`` if set, else ``<checkout>/../shared/data``."""
    env = os.environ.get("SELFDISTILL_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def default_gsm8k_dir() -> Path:
    return default_data_dir() / "gsm8k"


def default_bbh_dir() -> Path:
    return default_data_dir() / "bbh"
