"""How each decoding strategy looks in reports: its legend label, matplotlib style, the option that orders its
points into a curve, and the annotation of a point. Presentation lives here, with the reports, not in the
strategy classes (:mod:`selfdistill.decode.strategies`): a strategy without an entry plots with a plain default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Look:
    """``label`` (legends), ``style`` (matplotlib keywords), ``curve`` (the option its points are ordered by and
    joined along, if any) and ``point`` (a point's annotation from its options, ``None`` for none)."""

    label: str
    style: dict = field(default_factory=dict)
    curve: str | None = None
    point: Callable[[dict], str | None] = lambda options: None


LOOKS = {
    "generate": Look("model.generate", dict(color="black", marker="*", ls="none", ms=12)),
    "generate_cb": Look("transformers continuous batching", dict(color="gray", marker="*", ls="none", ms=12)),
    "static": Look("static k", dict(color="tab:orange", marker="s", ls="none"), point=lambda o: f"k={o['k']}"),
    "conf_adapt": Look("ConfAdapt (threshold)", dict(color="tab:blue", marker="o", ls="-"), curve="threshold",
                       point=lambda o: f"{o['threshold']:g}"),
    "verify": Look("verify (lossless)", dict(color="tab:green", marker="D", ls="none")),
    "quadratic": Look("quadratic (lossless)", dict(color="tab:purple", marker="P", ls="none")),
    "hedged": Look("hedged verify (lossless)", dict(color="tab:olive", marker="X", ls="none")),
}


def look(strategy: str) -> Look:
    """The look of ``strategy`` (a registered name); an unlisted one gets its name as label and matplotlib's style."""
    return LOOKS.get(strategy) or Look(strategy, dict(marker="o", ls="none"))
