"""Where a benchmark comes from (a local file/dir or a Hugging Face hub dataset id) and how its rows become a
normalised :class:`datasets.Dataset` with exactly the columns of :data:`selfdistill.data.prompts.SCHEMA`.

A loader's ``path`` argument follows :func:`datasets.load_dataset`'s convention: one string that is either a
local path or a hub id. Here a :class:`~pathlib.Path`, an existing path, an absolute or ``./``/``../``/``~``
path, or a name ending ``.json``/``.jsonl`` is local; any other ``owner/name`` string is a hub id. A local path
that does not exist raises :class:`FileNotFoundError` naming it and saying how to get the data.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import datasets

from selfdistill.data.prompts import SCHEMA

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_FEATURES = datasets.Features({col: datasets.Value("string") for col in SCHEMA})


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a local file/dir (see the module docstring) rather than a hub dataset id."""
    if isinstance(path, os.PathLike):
        return True
    s = str(path)
    if os.path.exists(s) or s.startswith(("/", "./", "../", "~")) or s.endswith((".json", ".jsonl")):
        return True
    return not _HUB_ID.fullmatch(s)


def require_file(path: str | os.PathLike, *, what: str, how_to_get: str) -> Path:
    """``path`` as a :class:`Path` if it is an existing file, else a :class:`FileNotFoundError` saying what to do."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found at {p}. {how_to_get}")
    return p


def read_records(path: Path) -> list[dict]:
    """Rows of a ``.jsonl`` file (one object per line) or a ``.json`` file (a list of objects).

    Raises ``ValueError`` naming the file and the line or row for text that is not UTF-8, a line or file that is
    not JSON, a row that is not an object, and a file with no rows at all.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not UTF-8 text (byte {err.start}: {err.reason}); save the file "
                         "as UTF-8") from None
    if path.suffix == ".jsonl":
        rows = [_json(line, where=f"{path}: line {i}") for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        rows = _json(text, where=str(path)) if text.strip() else []
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i} is a JSON {type(row).__name__}, expected an object")
    if not rows:
        raise ValueError(f"{path} holds no records (an empty file?)")
    return rows


def _json(text: str, *, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from None


def load_hub(name: str, *, config: str | None, split: str, what: str) -> datasets.Dataset:
    """``datasets.load_dataset(name, config, split=split)``, with an error that says what was being loaded."""
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # network, auth, missing config: re-raise with the context a user needs
        raise RuntimeError(
            f"could not load {what} from the Hugging Face hub as {name!r} (config {config!r}, split {split!r}): "
            f"{err}. If {name!r} was meant as a local path, it does not exist."
        ) from err


def check_columns(record: dict, needed: tuple[str, ...], *, where: str) -> None:
    """Raise a clear error if ``record`` lacks any of ``needed``."""
    missing = [c for c in needed if c not in record]
    if missing:
        raise ValueError(f"{where}: record lacks column(s) {missing}; has {sorted(record)}")


def to_dataset(rows: list[dict]) -> datasets.Dataset:
    """A :class:`datasets.Dataset` of normalised rows; every row must have exactly the SCHEMA keys, all strings."""
    for row in rows:
        if set(row) != set(SCHEMA) or not all(isinstance(row[c], str) for c in SCHEMA):
            raise ValueError(f"row {row.get('id')!r} does not match the schema {SCHEMA} (all str): {row!r}")
    return datasets.Dataset.from_dict({col: [row[col] for row in rows] for col in SCHEMA}, features=_FEATURES)
