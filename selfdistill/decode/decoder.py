"""Multi-token decoding with the ``<mtp>`` mask token (METHOD.md section 5): :func:`mtp_generate`.

Every forward pass feeds, per row, the tokens emitted by the previous pass as real tokens followed by masks; the
last real position and the masks give one next-token distribution each; the strategy's acceptance rule decides
how many tokens the row emits; the mask entries are cropped from the KV cache so mask KV is never kept.

The strategies are the classes of :mod:`selfdistill.decode.strategies` (``static``, ``conf_adapt``, ``verify``,
``quadratic``), looked up in :mod:`selfdistill.decode.registry`; the per-pass skeleton and continuous batching live
in :mod:`selfdistill.decode.engine`, the block layout and attention pattern in :mod:`selfdistill.decode.blocks`,
the shared KV cache in :mod:`selfdistill.decode.batch`. :func:`mtp_generate` is the engine with every row in
flight at once.

Adaptive mask count (``mask_margin=m``, ``conf_adapt``, ``verify``, ``quadratic``): each row appends the number of
masks it used in its previous pass (accepted mask predictions / new drafts) plus ``m``, at most ``k_max - 1`` (the
first pass appends ``k_max - 1``). A row's acceptance is capped at its own reach, so batched output still equals
each row alone. ``mask_margin=None`` (default) is METHOD.md's fixed ``k_max - 1``.

Tokens per forward ("effective k", METHOD.md section 5): tokens emitted by a row / forward passes the row
took part in, the prefill pass included.
"""

from __future__ import annotations

import torch

from selfdistill.decode.blocks import model_pass_mask, pass_attention_mask  # noqa: F401  (public, re-exported)
from selfdistill.decode.engine import generate_many, strategy_for
from selfdistill.decode.registry import Strategy, refuse_baseline, strategy_names
from selfdistill.decode.results import MTPOutput  # noqa: F401  (public, re-exported)
from selfdistill.decode.rows import default_eos_ids  # noqa: F401  (public, re-exported)

#: The strategies :func:`mtp_generate` decodes (the registry's engine strategies).
STRATEGIES = strategy_names(baselines=False)


def prompt_rows(input_ids, attention_mask=None) -> list[list[int]]:
    """The real prompt tokens of each row (padding removed, whichever side it is on).

    Args:
        input_ids: ``[B, T]`` tensor, or a list of token-id lists.
        attention_mask: ``[B, T]`` (1 = real token) or ``None`` (every token is real).
    """
    if isinstance(input_ids, torch.Tensor):
        if input_ids.ndim == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        ids = input_ids.tolist()
    else:
        ids = [list(map(int, row)) for row in input_ids]
    if attention_mask is None:
        return ids
    mask = attention_mask.tolist() if isinstance(attention_mask, torch.Tensor) else list(attention_mask)
    if len(mask) != len(ids) or any(len(m) != len(r) for m, r in zip(mask, ids)):
        raise ValueError("attention_mask must have the same shape as input_ids")
    for i, m in enumerate(mask):
        if any(v not in (0, 1) for v in m) or "".join(map(str, m)).strip("0").count("0"):
            raise ValueError(f"attention_mask row {i} is not one run of 1s between padding (left or right): "
                             f"{m[:16]}{'...' if len(m) > 16 else ''}; a hole would drop a token from the middle")
    return [[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]


def mtp_generate(model, input_ids, attention_mask=None, *, mask_token_id: int | None = None,
                 strategy: str | Strategy = "conf_adapt", max_new_tokens: int, eos_token_id=None,
                 stop_strings=None, tokenizer=None, pad_token_id: int | None = None, profile: bool = False,
                 **options) -> MTPOutput:
    """Greedy multi-token generation with the ``<mtp>`` mask token, every row in flight at once.

    Args:
        model: a Hugging Face causal LM (full attention layers; sliding-window caches are refused).
        input_ids: ``[B, T]`` prompt ids (any padding side) or a list of id lists.
        attention_mask: ``[B, T]``, 1 for real tokens; ``None`` = no padding.
        mask_token_id: defaults to the id recorded in the model config (:func:`mask_token_id_from`).
        strategy: ``"static"`` | ``"conf_adapt"`` | ``"verify"`` | ``"quadratic"`` | ``"hedged"`` (any registered
            engine strategy), or a :class:`~selfdistill.decode.registry.Strategy` built already.
        max_new_tokens: hard cap on generated tokens per row.
        eos_token_id: int or list; defaults to the model's generation config / config eos.
        stop_strings: str or list; the row stops once its decoded text contains one (needs ``tokenizer``).
        tokenizer: used for ``stop_strings`` and to fill ``MTPOutput.texts``.
        pad_token_id: filler id for pad slots (its value never matters: those slots are masked out).
        profile: synchronise the device around forwards and fill ``MTPOutput.timings``.
        options: the strategy's options, as its registry class declares them (one home: ``k`` of ``static``;
            ``k_max``, ``threshold``, ``mask_margin`` of the adaptive ones; ``lead_groups`` of ``hedged``; ...).
            An unset ``k_max`` is the model's trained one (``config.mtp_trained_k_max``) where it records one.

    An option the strategy does not take (e.g. ``k`` for ``conf_adapt``) is refused, as is every other bad input,
    with a ``ValueError`` before any forward pass.
    """
    unit = strategy_for(model, strategy, **options)
    refuse_baseline(unit, by="mtp_generate", instead=f"choose from {STRATEGIES}, or run it through generate_many")
    rows = prompt_rows(input_ids, attention_mask)
    return generate_many(model, rows, unit, batch_size=max(len(rows), 1), max_new_tokens=max_new_tokens,
                         eos_token_id=eos_token_id, stop_strings=stop_strings, tokenizer=tokenizer,
                         pad_token_id=pad_token_id, mask_token_id=mask_token_id, profile=profile)
