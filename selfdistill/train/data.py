"""Training windows for distillation: normalised rows -> token ids -> fixed raw-token windows.

A window holds ``num_source_tokens_needed(seq_len, k_min, num_regions)`` raw tokens: enough for every layout the
trainer may draw (the smallest ``k`` at offset 0 reads the most). Each row is rendered with
:func:`selfdistill.data.prompts.render_training_text` (optionally wrapped in the tokenizer's chat template) and ends
with EOS. Two ways to fill windows:

- ``packing=True``: rows are concatenated (EOS-separated) and cut into full windows; only the corpus tail is padded.
- ``packing=False`` (one row per window, as MetaMathQA rows mostly fit): truncate or pad with the pad id.

Every window carries ``valid`` (False on padding) so the step can prune regions past the data.

The rows come from :func:`selfdistill.data.sources.load_rows` (the dataset specs the trainer accepts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import datasets
import numpy as np

from selfdistill.data.prompts import SCHEMA, apply_chat_template, render_training_text

logger = logging.getLogger(__name__)


def row_tokens(row: dict, tokenizer, *, chat_template: bool = False) -> tuple[list[int], int]:
    """Token ids of ``prompt + target`` for one normalised row, ending with EOS, and the prompt's token count.

    Plain: the tokenizer's own special tokens (e.g. a BOS) are added as for any text; chat: the template already
    writes them, so none are added again, and the target loses its leading whitespace: the assistant turn starts
    right after the template's generation prompt, where the model writes ``"To"`` and not ``" To"`` (the plain
    zero-shot prompt ends with ``"A:"``, so there the space belongs to the target). The prompt/target boundary is
    read from the fast tokenizer's character offsets (a token that starts inside the prompt, special tokens
    included, is a prompt token); slow tokenizers count the prompt's own tokens.
    """
    prompt, target = render_training_text(row)
    if chat_template:
        prompt, target = apply_chat_template(prompt, tokenizer), target.lstrip()
    specials = not chat_template
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt + target, add_special_tokens=specials, return_offsets_mapping=True)
        n_prompt = sum(1 for start, _ in enc["offset_mapping"] if start < len(prompt))
    else:
        enc = tokenizer(prompt + target, add_special_tokens=specials)
        n_prompt = len(tokenizer(prompt, add_special_tokens=specials)["input_ids"])
    ids = list(enc["input_ids"])
    eos = _eos_id(tokenizer)
    return (ids if ids and ids[-1] == eos else ids + [eos]), n_prompt


def build_windows(sequences: Iterable[Sequence[int]], *, window: int, pad_id: int, packing: bool,
                  prompt_lengths: Sequence[int] | None = None) -> dict[str, np.ndarray | int]:
    """Cut token sequences into ``window``-long rows.

    Returns ``{"input_ids": int64[n, window], "valid": bool[n, window], "completion": bool[n, window],
    "truncated_rows": int}``: ``valid`` is False on padding; ``completion`` is ``valid`` minus each sequence's first
    ``prompt_lengths[i]`` tokens (all of ``valid`` without ``prompt_lengths``); ``truncated_rows`` counts rows cut
    at the window without packing.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    lengths = [0] * len(seqs) if prompt_lengths is None else list(prompt_lengths)
    if len(lengths) != len(seqs):
        raise ValueError(f"{len(lengths)} prompt lengths for {len(seqs)} sequences")
    comps = [np.arange(s.size) >= n for s, n in zip(seqs, lengths)]
    seqs, comps = [s for s in seqs if s.size], [c for s, c in zip(seqs, comps) if s.size]
    if not seqs:
        raise ValueError("no non-empty token sequences to build training windows from")
    if packing:
        flat, flat_comp = np.concatenate(seqs), np.concatenate(comps)
        n = -(-flat.size // window)
        ids = np.full(n * window, pad_id, dtype=np.int64)
        ids[: flat.size] = flat
        valid = np.zeros(n * window, dtype=bool)
        valid[: flat.size] = True
        completion = np.zeros(n * window, dtype=bool)
        completion[: flat.size] = flat_comp
        return {"input_ids": ids.reshape(n, window), "valid": valid.reshape(n, window),
                "completion": completion.reshape(n, window), "truncated_rows": 0}
    ids = np.full((len(seqs), window), pad_id, dtype=np.int64)
    valid = np.zeros((len(seqs), window), dtype=bool)
    completion = np.zeros((len(seqs), window), dtype=bool)
    for i, (s, c) in enumerate(zip(seqs, comps)):
        start = window_start(s.size, prompt_length=s.size - int(c.sum()), window=window)
        s, c = s[start:start + window], c[start:start + window]
        ids[i, : s.size] = s
        valid[i, : s.size] = True
        completion[i, : s.size] = c
    truncated = sum(s.size > window for s in seqs)
    return {"input_ids": ids, "valid": valid, "completion": completion, "truncated_rows": int(truncated)}


def window_start(length: int, *, prompt_length: int, window: int) -> int:
    """Where a row of ``length`` tokens longer than ``window`` is cut without packing: where its completion is.

    The window ends at the row's end when the completion fits (so a long chat prompt cannot push the whole answer
    out, which left completion-only training with no loss item), else it starts a quarter window before the
    completion. A row with no prompt, or one that fits, starts at 0. Pure: ``start`` in ``[0, length - window]``.
    """
    if length <= window:
        return 0
    return max(0, min(length - window, prompt_length - window // 4))


def training_windows(rows: datasets.Dataset, tokenizer, *, window: int, packing: bool, chat_template: bool = False
                     ) -> datasets.Dataset:
    """A torch-formatted dataset of ``input_ids`` long[window], ``valid`` and ``completion`` bool[window] built from
    ``rows`` (``completion``: the target side of each row, EOS included; see :func:`build_windows`)."""
    missing = [c for c in SCHEMA if c not in rows.column_names]
    if missing:
        raise ValueError(f"dataset lacks the normalised columns {missing}; expected {SCHEMA}")
    tokenized = [row_tokens(row, tokenizer, chat_template=chat_template) for row in rows]
    if not tokenized:
        raise ValueError("no rows to build training windows from")
    seqs, prompt_lengths = zip(*tokenized)
    arrays = build_windows(seqs, window=window, pad_id=_pad_id(tokenizer), packing=packing,
                           prompt_lengths=prompt_lengths)
    if arrays["truncated_rows"]:
        logger.warning("%d of %d rows are longer than the %d-token window and were cut (use packing or a longer "
                       "seq_len to keep their tails)", arrays["truncated_rows"], len(seqs), window)
    ds = datasets.Dataset.from_dict({name: arrays[name].tolist() for name in ("input_ids", "valid", "completion")})
    return ds.with_format("torch")


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; rows must end with one")
    return int(tokenizer.eos_token_id)


def _pad_id(tokenizer) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos_id(tokenizer))
