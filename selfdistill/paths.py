"""Where the offline benchmark copies live by default (``../shared/data`` beside the checkout).

Override with the ``SELFDISTILL_DATA_DIR`` environment variable or pass explicit paths to the loaders.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """``$SELFDISTILL_DATA_DIR`` if set, else ``<checkout>/../shared/data``."""
    env = os.environ.get("SELFDISTILL_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def default_gsm8k_dir() -> Path:
    return default_data_dir() / "gsm8k"


def default_bbh_dir() -> Path:
    return default_data_dir() / "bbh"
