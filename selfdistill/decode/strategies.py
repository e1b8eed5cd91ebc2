"""The built-in strategies, one class each (METHOD.md section 5): ``generate`` (the ``model.generate`` baseline),
``generate_cb`` (transformers' own continuous batching, a benchmark baseline), ``static``, ``conf_adapt``,
``verify`` and ``quadratic``. See :mod:`selfdistill.decode.registry` for what a class declares.

An engine strategy turns one pass's logits into an :class:`Outcome` per row: the tokens it emits, the real tokens
it feeds next pass (``pending``, the last ``drafts`` of which are provisional), and how many of the tokens fed this
pass stay in the cache (``kept``; lossless strategies drop rejected drafts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfdistill.decode.acceptance import conf_adapt_accept, draft_lengths, static_accept, verify_accept
from selfdistill.decode.blocks import Layout
from selfdistill.decode.registry import (Option, Strategy, optional_bool, optional_margin, parse_bool, positive_int,
                                         register, threshold_value)

K_MAX = Option("k_max", 16, positive_int, "prediction positions per pass (k_max - 1 masks)")
MARGIN = Option("mask_margin", None, optional_margin,
                "adaptive mask count: masks used last pass + this, at most k_max - 1 (None: always k_max - 1)")


def _margin(unit) -> str:
    """The ``_margin<m>`` suffix of a setting name (empty without ``mask_margin``)."""
    return "" if unit.mask_margin is None else f"_margin{unit.mask_margin}"


def _draft_threshold(unit) -> str:
    """A lossless setting name's ``_t<threshold>`` suffix: empty at the default 0 (every mask prediction drafted)."""
    return "" if unit.threshold == 0 else f"_t{unit.threshold:g}"


@dataclass
class Fed:
    """What a pass fed, for the acceptance rule: the layout, per row its pending tokens and draft count (host),
    and on the device ``draft_tokens`` ``long[B, M]`` (-1 past a row's drafts), ``draft_len`` and ``reach``
    ``long[B]`` (masks the row may use)."""

    layout: Layout
    pending: list[list[int]]
    drafts: list[int]
    draft_tokens: torch.Tensor
    draft_len: torch.Tensor
    reach: torch.Tensor


@dataclass
class Outcome:
    """One row's result of one pass (before the EOS / stop-string / budget cut)."""

    chunk: list[int]
    pending: list[int]
    drafts: int
    kept: int


@register
class Generate(Strategy):
    """Plain greedy ``model.generate`` in static batches: the baseline every ratio is taken against."""

    name, baseline = "generate", True


@register
class GenerateContinuous(Strategy):
    """Greedy decoding by transformers' own continuous batching (``model.generate_batch``), for benchmarks."""

    name, baseline = "generate_cb", True


class _EngineStrategy(Strategy):
    """Defaults of the strategies the engine decodes: ``k_max - 1`` masks in one group, non-lossless bookkeeping."""

    @property
    def num_masks(self) -> int:
        return self.k_max - 1

    def group_anchors(self, max_drafts: int) -> tuple[int | None, ...]:
        """Where the mask groups of a pass whose rows carry up to ``max_drafts`` drafts sit
        (:func:`selfdistill.decode.blocks.block_layout`): one group after the last real token."""
        return (None,)

    def room(self, remaining: int, drafts: int) -> int:
        """Masks that can still matter for a row with ``remaining`` tokens of budget and ``drafts`` drafts."""
        return remaining - 1 - drafts

    def used_masks(self, outcome: Outcome) -> int:
        """Masks the row used this pass (its next reach is this + ``mask_margin``)."""
        return len(outcome.chunk) - 1

    def accept(self, logits: torch.Tensor, fed: Fed) -> list[Outcome]:
        """``logits``: ``[B, M + 1 + G * g, V]`` at each row's prediction columns (:attr:`Layout.sel`)."""
        raise NotImplementedError


@register
class Static(_EngineStrategy):
    """Static k: ``k - 1`` masks, emit the argmax at the first ``k`` positions."""

    name = "static"
    options = (Option("k", 1, positive_int, "tokens per pass"),)

    @property
    def num_masks(self) -> int:
        return self.k - 1

    @property
    def setting_name(self) -> str:
        return f"static_k{self.k}"

    def accept(self, logits, fed):
        count = static_accept(fed.layout.n_masks + 1, k=min(self.k, fed.layout.n_masks + 1))
        rows = logits[:, :count].argmax(dim=-1).tolist()
        return [Outcome(row, row, 0, len(p)) for row, p in zip(rows, fed.pending)]


@register
class ConfAdapt(_EngineStrategy):
    """ConfAdapt(tau): ``k_max - 1`` masks; emit the longest leading run with top-1 probability >= tau, at least 1."""

    name = "conf_adapt"
    options = (Option("threshold", 0.9, threshold_value, "tau, a probability in [0, 1]", float), K_MAX, MARGIN,
               Option("calibrated", None, optional_bool, "compare the model's calibrated confidences with tau "
                      "(mtp_calibration.json; None: when the model has one, false: raw softmax)", parse_bool))

    @property
    def setting_name(self) -> str:
        cal = "_cal" if self.calibrated else ""
        return f"conf_adapt_{self.threshold:g}_kmax{self.k_max}{_margin(self)}{cal}"

    def resolve(self, *, calibration=None):
        """Calibrated when the model has a map and ``calibrated`` is not false; ``calibrated=True`` without a map,
        or a map that stops short of ``k_max``, is a ``ValueError``."""
        if self.calibrated is False or self.calibration is not None:
            return self
        if calibration is None:
            if self.calibrated:
                raise ValueError("conf_adapt calibrated=True, but the model has no confidence calibration "
                                 "(mtp_calibration.json): fit one with scripts/calibrate.py or pass calibrated=false")
            return type(self)(**(self.values() | {"calibrated": False}))
        if self.k_max > calibration.max_slot:
            raise ValueError(f"conf_adapt k_max {self.k_max} reads slot {self.k_max}, but the model's calibration "
                             f"covers slots up to {calibration.max_slot}: pass k_max <= {calibration.max_slot}, "
                             "recalibrate, or calibrated=false")
        unit = type(self)(**(self.values() | {"calibrated": True}))
        object.__setattr__(unit, "calibration", calibration)
        return unit

    def confidences(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, n]``: the confidence of each prediction position compared with tau. Calibrated (when resolved so)
        at the masks only: column 0, the last real token's prediction, is always emitted and keeps its raw top-1
        probability, the gate of METHOD.md's rule (a hesitant next token ends the chunk there)."""
        top = logits.float().softmax(dim=-1).amax(dim=-1)
        if not self.calibrated:
            return top
        if self.calibration is None:
            raise RuntimeError(f"{self!r} was not resolved against a model's calibration (Strategy.resolve)")
        return torch.cat([top[:, :1], self.calibration.apply(top)[:, 1:]], dim=1)

    def accept(self, logits, fed):
        pred = logits.argmax(dim=-1)
        counts = conf_adapt_accept(self.confidences(logits), threshold=self.threshold)
        if self.mask_margin is not None:
            counts = torch.minimum(counts, fed.reach + 1)
        host = torch.cat([pred, counts[:, None]], dim=1).tolist()
        return [Outcome(row[:row[-1]], row[:row[-1]], 0, len(p)) for row, p in zip(host, fed.pending)]


class _Lossless(_EngineStrategy):
    """Shared rule of the lossless strategies: re-fed drafts are verified against the model's own next-token
    argmax; the accepted prefix plus the correction token is emitted; new drafts are the confident leading run of
    one mask group's predictions (:meth:`draft_group`)."""

    lossless = True
    options = (Option("threshold", 0.0, threshold_value, "confidence a mask prediction needs to become a draft "
                      "(0: every one)", float), K_MAX, MARGIN)
    def used_masks(self, outcome):
        return outcome.drafts

    def draft_group(self, accepted: torch.Tensor, fed: Fed) -> torch.Tensor:
        """``long[B]``: the mask group whose predictions become the next drafts, -1 for none."""
        raise NotImplementedError

    def accept(self, logits, fed):
        layout = fed.layout
        m, g = layout.max_drafts, layout.n_masks
        pred = logits.argmax(dim=-1)
        target = pred[:, :m + 1]
        accepted = verify_accept(fed.draft_tokens, target, fed.draft_len)
        correction = target.gather(1, accepted[:, None])
        group = self.draft_group(accepted, fed)
        masks = logits[:, m + 1:].reshape(logits.shape[0], layout.groups, g, logits.shape[-1])
        chosen = masks.gather(1, group.clamp(min=0)[:, None, None, None].expand(-1, 1, g, masks.shape[-1]))[:, 0]
        n_new = draft_lengths(chosen.float().softmax(dim=-1).amax(dim=-1), threshold=self.threshold) * (group >= 0)
        if self.mask_margin is not None:
            n_new = torch.minimum(n_new, fed.reach)
        host = torch.cat([accepted[:, None], n_new[:, None], correction, chosen.argmax(dim=-1)], dim=1).tolist()
        out = []
        for p, d, (a, new, corr, *drafts) in zip(fed.pending, fed.drafts, host):
            verified = len(p) - d
            out.append(Outcome(p[verified:verified + a] + [corr], [corr] + drafts[:new], new, verified + a))
        return out


@register
class Verify(_Lossless):
    """Lossless linear verify: new drafts come from the masks after the last draft, so only when every draft was
    accepted (otherwise they were conditioned on a wrong token). Output = greedy ``generate``."""

    name = "verify"

    @property
    def setting_name(self) -> str:
        return f"verify_kmax{self.k_max}{_margin(self)}{_draft_threshold(self)}"

    def draft_group(self, accepted, fed):
        return torch.where(accepted == fed.draft_len, 0, -1)


@register
class Quadratic(_Lossless):
    """Lossless quadratic decoding (Apple, arXiv 2507.11851): every provisional token is followed by its own mask
    group, so whatever prefix is accepted, the group after it holds fresh drafts. A pass feeds about ``k * k``
    positions instead of ``2k - 1``. Output = greedy ``generate``."""

    name = "quadratic"

    @property
    def setting_name(self) -> str:
        return f"quadratic_kmax{self.k_max}{_margin(self)}{_draft_threshold(self)}"

    def group_anchors(self, max_drafts):
        return tuple(range(max_drafts + 1))

    def room(self, remaining, drafts):
        return remaining - 1

    def draft_group(self, accepted, fed):
        return accepted


@register
class Hedged(Quadratic):
    """Lossless hedged verify: quadratic's mask groups after the first ``lead_groups`` provisional tokens only (the
    last verified token, then the first drafts), plus verify's group after the last draft. Most partial rejections
    happen at the first drafts; after those the group at the accepted prefix still drafts, as in quadratic, while
    a pass feeds about ``(lead_groups + 1) * k`` positions instead of ``k * k``. ``lead_groups >= k_max - 1`` is
    quadratic decoding. Output = greedy ``generate``."""

    name = "hedged"
    options = _Lossless.options + (Option("lead_groups", 1, positive_int,
                                          "mask groups after the first provisional tokens (1: after the last "
                                          "verified token only)"),)

    @property
    def setting_name(self) -> str:
        return f"hedged{self.lead_groups}_kmax{self.k_max}{_margin(self)}{_draft_threshold(self)}"

    def group_anchors(self, max_drafts):
        return tuple(range(min(self.lead_groups, max_drafts))) + (None,)

    def draft_group(self, accepted, fed):
        last = len(self.group_anchors(fed.layout.max_drafts)) - 1
        return torch.where(accepted == fed.draft_len, last, torch.where(accepted < last, accepted, -1))
