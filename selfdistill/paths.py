"""Where the offline benchmark copies live by default (``../shared/data`` beside the checkout).

Override with the ``SELFDISTILL_DATA_DIR`` environment variable or pass explicit paths to the loaders.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it and one rename, so a reader (or a run killed
    half-way) sees the old file or the new one, never a half-written one. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def default_data_dir() -> Path:
    """``$SELFDISTILL_DATA_DIR`` if set, else ``<checkout>/../shared/data``."""
    env = os.environ.get("SELFDISTILL_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def default_gsm8k_dir() -> Path:
    return default_data_dir() / "gsm8k"


def default_bbh_dir() -> Path:
    return default_data_dir() / "bbh"
