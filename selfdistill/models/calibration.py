"""A model's confidence calibration: what a mask prediction's top-1 probability means, per slot depth.

ConfAdapt emits the leading run of predictions whose confidence is at least ``threshold``. A trained mask slot's
raw top-1 probability over-states how often greedy decoding would choose the same token (more so at deeper slots;
``../shared/notes/calibration-probe.md``), so the same threshold means a different precision at each slot and for
each model. A :class:`ConfidenceMap` turns the raw probability at slot ``d`` (``d = 2`` is the first mask; slot 1
is the model's own next token, which greedy decoding always chooses) into the measured share of greedy's choices:
one monotone piecewise-linear curve per slot, fitted by ``scripts/calibrate.py`` (:mod:`selfdistill.eval.calibrate`).

It travels with the weights it was fitted to, in :data:`FILE` beside them (an adapter folder or a checkpoint):

    {"format": "selfdistill-mtp-calibration", "format_version": 1, "method": "isotonic",
     "weights_sha256": "<sha256 of the weights file it was fitted to>", "weights_file": "gated_lora.safetensors",
     "slots": {"2": {"x": [0.0, ..., 1.0], "y": [...]}, "3": ...}, "record": {...how it was fitted...}}

:func:`read_calibration` validates every field and refuses a map whose weights changed (a retrained adapter needs
a new fit); :func:`selfdistill.models.loader.load_model` attaches it to the model (:func:`calibration_from`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from selfdistill.paths import write_text_atomic

FILE = "mtp_calibration.json"
FORMAT, FORMAT_VERSION = "selfdistill-mtp-calibration", 1
METHODS = ("isotonic", "platt")
WEIGHTS_FILES = ("gated_lora.safetensors", "model.safetensors")
_ATTR = "mtp_calibration"


@dataclass(frozen=True)
class ConfidenceMap:
    """Per slot depth ``2 .. max_slot``, knots ``(x, y)`` of a non-decreasing piecewise-linear map from a raw
    top-1 probability to a calibrated one: ``x`` strictly increasing from 0 to 1, ``y`` non-decreasing in [0, 1].

    ``curves[i]`` is slot ``i + 2``'s ``(x, y)`` (tuples, so the map is hashable and immutable)."""

    curves: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    method: str = "isotonic"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; known: {METHODS}")
        if not self.curves:
            raise ValueError("a confidence map needs a curve for at least slot 2")
        for i, (x, y) in enumerate(self.curves):
            if (err := _curve_error(x, y)) is not None:
                raise ValueError(f"slot {i + 2}: {err}")

    @property
    def max_slot(self) -> int:
        """The deepest slot the map covers (a strategy reading ``k_max`` positions needs ``k_max <= max_slot``)."""
        return len(self.curves) + 1

    def apply(self, top_probs: torch.Tensor) -> torch.Tensor:
        """Calibrated confidences of one pass's prediction positions.

        Args:
            top_probs: ``[B, n]`` raw top-1 probabilities; column 0 is the last real token's prediction (slot 1),
                column ``j`` the ``j``-th mask (slot ``j + 1``), ``n <= max_slot``.

        Returns:
            ``[B, n]`` float32: column 0 is 1 (greedy's own token), column ``j`` slot ``j + 1``'s curve at the raw
            probability.
        """
        n = top_probs.shape[-1]
        if n > self.max_slot:
            raise ValueError(f"{n} prediction positions, but the calibration covers slots up to {self.max_slot}")
        probs = top_probs.float()
        cols = [torch.ones_like(probs[..., 0])]
        for j in range(1, n):
            x, y = _knots(*self.curves[j - 1], probs.device)
            cols.append(interpolate(probs[..., j], x, y))
        return torch.stack(cols, dim=-1)

    def to_dict(self) -> dict:
        return {"method": self.method,
                "slots": {str(i + 2): {"x": list(x), "y": list(y)} for i, (x, y) in enumerate(self.curves)}}

    @classmethod
    def from_dict(cls, data: dict) -> ConfidenceMap:
        """The map of :meth:`to_dict`'s shape; a ``ValueError`` naming the first problem otherwise."""
        slots = data.get("slots")
        if not isinstance(slots, dict) or not slots:
            raise ValueError("'slots' must be a non-empty object {slot depth: {x, y}}")
        keys = sorted(slots, key=lambda s: int(s) if str(s).isdigit() else -1)
        if keys != [str(d) for d in range(2, len(slots) + 2)]:
            raise ValueError(f"'slots' must be the depths 2, 3, ... without gaps, got {list(slots)}")
        curves = []
        for key in keys:
            curve = slots[key]
            if not isinstance(curve, dict) or set(curve) != {"x", "y"}:
                raise ValueError(f"slot {key} must be {{'x': [...], 'y': [...]}}, got {curve!r}")
            curves.append((tuple(curve["x"]), tuple(curve["y"])))
        return cls(curves=tuple(curves), method=data.get("method", "isotonic"))


def _curve_error(x, y) -> str | None:
    if len(x) != len(y) or len(x) < 2:
        return f"x and y need the same length >= 2, got {len(x)} and {len(y)}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (*x, *y)):
        return "x and y must be finite numbers"
    if x[0] != 0 or x[-1] != 1 or any(b <= a for a, b in zip(x, x[1:])):
        return f"x must rise strictly from 0 to 1, got {list(x)}"
    if any(not 0 <= v <= 1 for v in y) or any(b < a for a, b in zip(y, y[1:])):
        return f"y must be non-decreasing within [0, 1], got {list(y)}"
    return None


@functools.lru_cache(maxsize=256)
def _knots(x: tuple, y: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A curve's knots as float32 tensors on ``device``, made once (a pass copies nothing to the device)."""
    return (torch.tensor(x, dtype=torch.float32, device=device), torch.tensor(y, dtype=torch.float32, device=device))


def interpolate(values: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``y(values)`` through the knots ``(x, y)`` (``x`` increasing, covering [0, 1]); values are
    clamped to ``[x[0], x[-1]]``. Same shape as ``values``. No value is read back to the host."""
    x, y = x.to(values.device, torch.float32), y.to(values.device, torch.float32)
    v = values.float().clamp(x[:1], x[-1:])
    hi = torch.searchsorted(x, v.contiguous(), right=False).clamp(1, len(x) - 1)
    x0, x1, y0, y1 = x[hi - 1], x[hi], y[hi - 1], y[hi]
    return y0 + (y1 - y0) * (v - x0) / (x1 - x0)


def weights_digest(directory: str | os.PathLike) -> tuple[str, str]:
    """``(file name, sha256)`` of the weights file in ``directory`` a map is tied to."""
    for name in WEIGHTS_FILES:
        path = Path(directory) / name
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return name, digest.hexdigest()
    raise ValueError(f"{directory} holds none of {WEIGHTS_FILES}: a calibration belongs beside the weights it was "
                     "fitted to")


def save_calibration(directory: str | os.PathLike, cmap: ConfidenceMap, *, record: dict) -> Path:
    """Write :data:`FILE` into the weights folder ``directory`` (atomically), tied to its weights file."""
    name, digest = weights_digest(directory)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "weights_file": name, "weights_sha256": digest,
            **cmap.to_dict(), "record": record}
    return write_text_atomic(Path(directory) / FILE, json.dumps(data, indent=1) + "\n")


def read_calibration(directory: str | os.PathLike) -> ConfidenceMap | None:
    """The validated map in ``directory`` (``None`` when it has no :data:`FILE`); a ``ValueError`` naming the file
    and the problem when it is malformed, of another format version, or fitted to other weights."""
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')!r}; this version reads {FORMAT_VERSION}")
        name, digest = weights_digest(directory)
        if data.get("weights_file") != name or data.get("weights_sha256") != digest:
            raise ValueError(f"it was fitted to other weights (sha256 {str(data.get('weights_sha256'))[:12]}..., "
                             f"{name} is {digest[:12]}...): recalibrate with scripts/calibrate.py or delete it")
        return ConfidenceMap.from_dict(data)
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {err}") from None


def set_calibration(model, cmap: ConfidenceMap | None) -> None:
    """Attach ``cmap`` to ``model`` (``None`` removes it)."""
    if cmap is not None and not isinstance(cmap, ConfidenceMap):
        raise TypeError(f"expected a ConfidenceMap, got {type(cmap).__name__}")
    object.__setattr__(model, _ATTR, cmap)


def calibration_from(model) -> ConfidenceMap | None:
    """The map attached to ``model`` (by :func:`load_model` from its folder, or :func:`set_calibration`)."""
    return getattr(model, _ATTR, None)
