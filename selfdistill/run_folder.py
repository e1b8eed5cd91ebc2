"""A run's output folder, in one place: which options it belongs to, what it refuses, how it writes, and the one shape
of the record that says where its numbers came from.

- :func:`refuse_changed`: the rule every resumable run applies (training resumed from a checkpoint, a sweep's
  finished pairs, an on-policy data folder): work done under other options is never mixed with new work nor silently
  redone; the error names each changed option with its stored and requested value.
- :class:`RunFolder`: ``claim`` a folder for one fingerprint (written to ``fingerprint.json``; a folder that holds
  something else is refused), and write its files atomically (a reader or a killed run never sees half a file).
- :func:`provenance_record`: ``{"provenance": {command, commit, hardware, ...}, **fields}``, the shape of every JSON
  record a run writes beside its results (benchmarks, sweeps, data, calibration, training records).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfdistill.paths import write_text_atomic
from selfdistill.provenance import differences

#: The file that holds the options a claimed folder belongs to.
FINGERPRINT_FILE = "fingerprint.json"


class ChangedOptionsError(FileExistsError, ValueError):
    """Work stored under other options than the requested ones: a ``ValueError`` (bad options) about a used folder."""


def refuse_changed(stored: dict, requested: dict, *, where: str, hint: str, may_change: Collection[str] = (),
                   error: type[ChangedOptionsError] = ChangedOptionsError) -> None:
    """Raise ``error`` when ``stored`` and ``requested`` differ outside ``may_change``, naming
    ``{option: (stored, requested)}``; ``where`` says what holds the stored work, ``hint`` what to do instead."""
    changed = {k: v for k, v in differences(stored, requested).items() if k not in may_change}
    if changed:
        raise error(f"{where} holds work done with other options (stored, requested): {changed}. {hint}")


def provenance_record(provenance: dict, **fields) -> dict:
    """The one record shape: ``{"provenance": provenance, **fields}`` (``provenance`` from
    :func:`selfdistill.provenance.provenance`, taken when the run started)."""
    return {"provenance": provenance, **fields}


def provenance_markdown(provenance: dict) -> str:
    """The head of a markdown report: command, commit and hardware of ``provenance``, one paragraph each."""
    return (f"Command: `{provenance['command']}`\n\nCommit: {provenance['commit']}\n\n"
            f"Hardware: {provenance['hardware']}\n\n")


def write_markdown_report(path: str | os.PathLike, provenance: dict, sources: dict[str, str], intro: str,
                          table: str) -> Path:
    """``path`` (atomically): :func:`provenance_markdown`, ``intro`` over a list of ``{label: source}``, then
    ``table`` (the shape of the comparison reports of runs and of sweeps)."""
    listed = "\n".join(f"- {label}: `{source}`" for label, source in sources.items())
    return write_text_atomic(path, f"{provenance_markdown(provenance)}{intro}:\n{listed}\n\n{table}\n")


def read_provenance(record: dict) -> dict:
    """The provenance of a record of either shape: nested (:func:`provenance_record`) or the flat one that records
    written before it (shipped adapters' run records among them) hold."""
    return record.get("provenance", record)


@dataclass(frozen=True)
class RunFolder:
    """One run's output folder (see the module docstring)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser())

    def claim(self, fingerprint: dict, *, what: str, hint: str) -> RunFolder:
        """Create the folder for ``fingerprint``, or accept it when it was claimed with the same one; refuse a folder
        claimed with another (:func:`refuse_changed`) or one that holds files but no fingerprint. ``what`` names the
        kind of run in the errors."""
        marker = self.root / FINGERPRINT_FILE
        if marker.is_file():
            refuse_changed(json.loads(marker.read_text()), fingerprint, where=f"{self.root} ({what})", hint=hint)
            return self
        if self.root.exists() and any(self.root.iterdir()):
            raise FileExistsError(f"{self.root} is not empty and holds no {what}. {hint}")
        self.write_json(FINGERPRINT_FILE, fingerprint)
        return self

    def path(self, name: str | os.PathLike) -> Path:
        return self.root / name

    def write_text(self, name: str | os.PathLike, text: str) -> Path:
        """``<root>/<name>`` written atomically (parent folders created); ``name`` is relative to the folder."""
        if Path(name).is_absolute() or Path(name).parts[:1] == ("..",):
            raise ValueError(f"{name}: a run folder's file name is relative to the folder ({self.root})")
        return write_text_atomic(self.root / name, text)

    def write_json(self, name: str | os.PathLike, obj, *, indent: int = 1, **dumps) -> Path:
        return self.write_text(name, json.dumps(obj, indent=indent, **dumps) + "\n")

    def write_csv(self, name: str | os.PathLike, rows: Sequence[dict], *,
                  columns: Sequence[str] | None = None) -> Path:
        """``<root>/<name>``: ``rows`` as CSV under ``columns`` (default: the first row's keys; a missing or ``None``
        value is empty), written atomically."""
        columns = list(rows[0]) if columns is None else list(columns)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows)
        return self.write_text(name, buf.getvalue())

    def write_record(self, name: str | os.PathLike, provenance: dict, **fields) -> Path:
        """``<root>/<name>``: :func:`provenance_record` of ``provenance`` and ``fields``, as JSON."""
        return self.write_json(name, provenance_record(provenance, **fields))
